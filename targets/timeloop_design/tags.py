"""A safe YAML loader for Timeloop v0.4 design files that knows timeloopfe's node tags.

`!Container`, `!Component`, `!Hierarchical`, `!Parallel` and `!Nothing` become `TaggedNode`s;
every other value is read exactly as `yaml.safe_load` reads it. Before anything is built the
node tree is walked once, so an unknown tag is reported with the file, the key path and the line
(`yaml.load` with a full loader is never used: a design file must not be able to run code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

import quantloop.files as files
from quantloop.errors import QuantloopError

KNOWN_TAGS = ("Container", "Component", "Hierarchical", "Parallel", "Nothing")
_STANDARD_PREFIX = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class TaggedNode:
    """A tagged node of a v0.4 architecture: `tag` is the tag without '!', `body` its mapping."""

    tag: str
    body: dict


class _Loader(files.UniqueKeyLoader):  # the project's safe loader (duplicate keys refused) plus the tags
    pass


def _construct(loader: _Loader, node: yaml.Node) -> TaggedNode:
    tag = node.tag[1:]
    if isinstance(node, yaml.MappingNode):
        body = files.construct_unique_mapping(loader, node, deep=True)
    elif isinstance(node, yaml.ScalarNode) and not loader.construct_scalar(node):
        body = {}
    else:
        raise yaml.constructor.ConstructorError(None, None, f"!{tag} must tag a mapping", node.start_mark)
    return TaggedNode(tag, dict(body))


for _tag in KNOWN_TAGS:
    _Loader.add_constructor(f"!{_tag}", _construct)


def _check_tags(node: yaml.Node, path: str, source: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: checked where it was defined (and no exponential walk of alias chains)
        return
    seen.add(id(node))
    tag = node.tag or ""
    if not tag.startswith(_STANDARD_PREFIX) and tag[1:] not in KNOWN_TAGS:
        raise QuantloopError(
            f"{source}: {path or '<root>'}: unknown tag {tag} (line {node.start_mark.line + 1}; "
            f"known: {', '.join('!' + t for t in KNOWN_TAGS)})"
        )
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            _check_tags(value, f"{path}.{name}" if path else str(name), source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_tags(item, f"{path}[{i}]", source, seen)


def load_yaml(path: Path) -> object:
    """The contents of a Timeloop YAML file; one-line QuantloopError naming the file otherwise.

    Read like every user file (`quantloop.files`: a regular file of bounded size, UTF-8, bounded
    nesting, unique keys)."""
    text = files.read_text(path, "Timeloop design file")
    if not files.yaml_depth_ok(text):
        raise QuantloopError(f"{path}: nested deeper than {files.MAX_DEPTH} levels")
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_tags(root, "", str(path), set())
        return loader.construct_document(root)
    except yaml.YAMLError as err:
        raise QuantloopError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise QuantloopError(f"{path}: not valid YAML (nested too deeply, or an alias refers to itself)") from None
    finally:
        loader.dispose()
