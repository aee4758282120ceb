"""Finding targets: built-in YAML files, a path (a target YAML, or a Timeloop design folder or
architecture file), folders on QUANTLOOP_TARGET_PATH, and
`quantloop.targets` entry points (value: a YAML path, or a callable returning one)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch
from quantloop.targets.schema import load_arch_file, to_arch
from quantloop.targets.template import PE_TYPE_PARAMETER, canonical_query, split_spec

BUILTIN_DIR = Path(__file__).resolve().parent
ENV_VAR = "QUANTLOOP_TARGET_PATH"
ENTRY_POINT_GROUP = "quantloop.targets"


@dataclass(frozen=True)
class TargetEntry:
    name: str
    path: Path
    source: str  # "built-in", "$QUANTLOOP_TARGET_PATH", "entry point <dist>"
    parameters: tuple[tuple[str, str], ...] = ()  # a built-in variant: the file with these parameters

    @property
    def spec(self) -> str:
        """What `load_target` takes for this entry."""
        return str(self.path) + (f"?{canonical_query(dict(self.parameters))}" if self.parameters else "")


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def _entry_point_paths() -> list[TargetEntry]:
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            value = ep.load()
        except Exception as err:  # a broken plug-in is the user's to fix; say which one
            raise QuantloopError(f"entry point {ep.name} ({ep.value}): cannot load ({err})") from None
        path = Path(value() if callable(value) else value)
        if not path.is_file():
            raise QuantloopError(f"entry point {ep.name} ({ep.value}): target file {path} not found")
        found.append(TargetEntry(ep.name, path, f"entry point {ep.value}"))
    return found


def _pe_variants(path: Path) -> list[TargetEntry]:
    """`<stem>_<pe type>` for each PE type a built-in declares beyond its default (`eyeriss_lightpe1`)."""
    from quantloop.files import load_yaml

    data = load_yaml(path, "target file")
    param = (data.get("parameters") or {}).get(PE_TYPE_PARAMETER) if isinstance(data, dict) else None
    if not isinstance(param, dict):
        return []
    return [TargetEntry(f"{path.stem}_{pe}", path, "built-in", ((PE_TYPE_PARAMETER, str(pe)),))
            for pe in param.get("choices", ()) if str(pe) != str(param.get("default"))]


def discover() -> list[TargetEntry]:
    """Every target found, in priority order (built-in and its PE-type variants, QUANTLOOP_TARGET_PATH,
    entry points)."""
    entries = [TargetEntry(p.stem, p, "built-in") for p in _yaml_files(BUILTIN_DIR)]
    entries += [v for p in _yaml_files(BUILTIN_DIR) for v in _pe_variants(p)]
    for folder in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        folder_path = Path(folder)
        if not folder_path.is_dir():
            raise QuantloopError(f"{ENV_VAR}: {folder} is not a folder")
        entries += [TargetEntry(p.stem, p, f"${ENV_VAR} ({folder})") for p in _yaml_files(folder_path)]
        entries += [TargetEntry(p.parent.name, p.parent, f"${ENV_VAR} ({folder}), Timeloop design")
                    for p in sorted(folder_path.glob("*/arch.yaml"))]
    entries += _entry_point_paths()
    seen, unique = set(), []
    for e in entries:
        if e.name not in seen:
            seen.add(e.name)
            unique.append(e)
    return unique


def list_targets() -> list[str]:
    return [e.name for e in discover()]


@lru_cache(maxsize=256)
def _load_cached(path: str, mtime: float, source: str, parameters: tuple[tuple[str, str], ...] = ()) -> Arch:
    from quantloop.targets.timeloop_design import design_spec, is_timeloop_architecture

    if Path(path).is_dir() or is_timeloop_architecture(Path(path)):
        if parameters:
            raise QuantloopError(f"{path}: a Timeloop design takes no parameters")
        return to_arch(design_spec(path), source)
    return load_arch_file(path, source, dict(parameters))


def _is_design_folder(path: Path) -> bool:
    from quantloop.targets.timeloop_design.design import ARCH_FILES

    return path.is_dir() and any((path / f).is_file() for f in ARCH_FILES)


def _load_path(path: Path, source: str, parameters: tuple[tuple[str, str], ...] = ()) -> Arch:
    """A quantloop target YAML, a Timeloop design folder, or a Timeloop architecture file."""
    from quantloop.targets.timeloop_design import design_stamp, is_timeloop_architecture

    # a design is read from several files (ERT, ART, components, ...): any of them changing reloads it
    stamp = design_stamp(path) if path.is_dir() or is_timeloop_architecture(path) else path.stat().st_mtime
    return _load_cached(str(path.resolve()), stamp, source, parameters)


def load_target(name_or_path: str | os.PathLike | Arch) -> Arch:
    """A target by built-in / plugged-in name, or by path to a YAML file or a Timeloop design folder;
    `NAME?key=value&...` sets a parameterised target's parameters (`targets/template.py`)."""
    if isinstance(name_or_path, Arch):
        return name_or_path
    text, given = split_spec(str(name_or_path))
    parameters = tuple(sorted(given.items()))
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text or _is_design_folder(path):
        if not path.is_file() and not path.is_dir():
            raise QuantloopError(f"{text}: target file not found")
        return _load_path(path, str(path), parameters)
    builtin = BUILTIN_DIR / f"{text}.yaml"
    if builtin.is_file():  # built-ins win over plug-ins of the same name; no need to scan
        return _load_cached(str(builtin), builtin.stat().st_mtime, "built-in", parameters)
    for entry in discover():
        if entry.name == text:
            merged = dict(entry.parameters)
            merged.update(given)
            return _load_path(entry.path, entry.source, tuple(sorted(merged.items())))
    raise QuantloopError(f"target {text!r}: unknown (known targets: {', '.join(list_targets())})")
