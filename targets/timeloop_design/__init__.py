"""Timeloop designs (v0.4 arch.yaml + components/ + ERT.yaml + ART.yaml, or a v0.3 / flattened
architecture) read as quantloop targets."""

from __future__ import annotations

from pathlib import Path

from quantloop.targets.schema import TargetSpec, parse_spec
from quantloop.targets.timeloop_design.design import design_files, is_timeloop_architecture, load_design


def design_spec(path: str | Path) -> TargetSpec:
    """The validated quantloop spec of a Timeloop design folder or architecture file."""
    data, files = load_design(Path(path))
    return parse_spec(data, str(files.arch))


def design_stamp(path: str | Path) -> float:
    """Latest modification time of the files a design is read from (for caches)."""
    files = design_files(Path(path))
    paths = (files.arch, files.ert, files.art, files.constraints, *files.components)
    return max(p.stat().st_mtime for p in paths if p is not None)


__all__ = ["design_spec", "design_stamp", "design_files", "is_timeloop_architecture"]
