"""Reading the small text files a user hands quantloop (YAML, JSON) without hanging, exhausting memory or
raising a traceback: only regular files of bounded size, UTF-8, bounded nesting, no duplicate keys, no
NaN/Infinity, no integers beyond what any field can mean. Every failure is a `QuantloopError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import yaml

from quantloop.errors import QuantloopError

#: The largest YAML/JSON input quantloop reads (targets, problems, mappings, bits, reports, cache entries).
MAX_TEXT_BYTES = 64 << 20
#: The deepest nesting of lists/objects accepted (real files nest a handful of levels).
MAX_DEPTH = 64
#: Integers with more digits are refused while parsing (no field means anything near 10^40).
MAX_INT_DIGITS = 40


def read_bytes(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (a FIFO, device or folder is refused, never read)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise QuantloopError(f"{path}: cannot read: {what} not found") from None
    except IsADirectoryError:
        raise QuantloopError(f"{path}: is a folder, not a {what}") from None
    except OSError as err:
        raise QuantloopError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise QuantloopError(f"{path}: is a folder, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise QuantloopError(f"{path}: not a regular file (a pipe or device cannot be a {what})")
        if info.st_size > max_bytes:
            raise QuantloopError(f"{path}: {info.st_size} bytes is larger than a {what} may be ({max_bytes})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise QuantloopError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise QuantloopError(f"{path}: larger than a {what} may be ({max_bytes} bytes)")
    return data


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """`read_bytes` decoded as UTF-8 (other bytes are an error naming the offset)."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise QuantloopError(f"{path}: not UTF-8 text (byte {err.start} is {data[err.start]:#04x})") from None


def _check_tree(value: object, where: str, depth: int = 0) -> None:
    """Refuse nesting deeper than MAX_DEPTH and non-finite floats (iteratively bounded by MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        raise QuantloopError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantloopError(f"{where}: {value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_INT_DIGITS:
        raise QuantloopError(f"{where}: an integer of more than {MAX_INT_DIGITS} digits")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise QuantloopError(f"{where}: a mapping key must be a scalar, got {type(key).__name__}")
            _check_tree(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, where, depth + 1)


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _scalar_key(loader: yaml.SafeLoader, key_node: yaml.Node, deep: bool) -> object:
    """A mapping key, refused unless hashable (a list or mapping as a key would raise TypeError later)."""
    key = loader.construct_object(key_node, deep=deep)
    try:
        hash(key)
    except TypeError:
        raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                key_node.start_mark) from None
    return key


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Duplicates are checked among the keys written in this mapping; keys merged in with `<<: *anchor`
    # may be overridden by them, as YAML defines (the Timeloop exercises' components rely on it).
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _scalar_key(loader, key_node, deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:  # merged keys first, then this mapping's own: the latter win
        key = _scalar_key(loader, key_node, deep)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_depth_ok(text: str) -> bool:
    """Cheap pre-check: flow collections nested deeper than MAX_DEPTH would recurse in the YAML parser."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest <= MAX_DEPTH


def parse_yaml(text: str, where: str) -> object:
    """YAML text → data (safe loader, unique keys, bounded depth, finite numbers); errors name `where`."""
    if not _yaml_depth_ok(text):
        raise QuantloopError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise QuantloopError(f"{where}: not valid YAML ({problem}{line})") from None
    except (RecursionError, ValueError, OverflowError) as err:
        raise QuantloopError(f"{where}: not valid YAML ({type(err).__name__}: {str(err)[:80]})") from None
    _check_tree(data, where)
    return data


def load_yaml(path: str | os.PathLike, what: str = "YAML file", max_bytes: int = MAX_TEXT_BYTES) -> object:
    return parse_yaml(read_text(path, what, max_bytes), str(path))


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str, where: str) -> object:
    """JSON text → data (no NaN/Infinity, no duplicate keys, bounded ints and depth); errors name `where`."""
    if not _yaml_depth_ok(text):
        raise QuantloopError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                          object_pairs_hook=_unique_object)
    except json.JSONDecodeError as err:
        raise QuantloopError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:
        raise QuantloopError(f"{where}: not valid JSON ({str(err)[:80] or type(err).__name__})") from None
    _check_tree(data, where)
    return data


def load_json(path: str | os.PathLike, what: str = "JSON file", max_bytes: int = MAX_TEXT_BYTES) -> object:
    return parse_json(read_text(path, what, max_bytes), str(path))


# For readers that need their own YAML tags (Timeloop designs) but the same limits and unique keys.
UniqueKeyLoader = _UniqueKeyLoader
construct_unique_mapping = _construct_mapping
yaml_depth_ok = _yaml_depth_ok
