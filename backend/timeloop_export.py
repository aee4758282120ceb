"""``timeloop/<layer>/problem.yaml`` + ``map.yaml``: each layer in Timeloop v0.4 format.

The problem carries the quantization fork's ``instance.bitwidths``, so ``quantloop cost --target T
--problem .../problem.yaml --mapping .../map.yaml`` (or the fork itself) re-evaluates the layer with its
bits. Folder names are the layer names with characters other than letters, digits, ``.``, ``_`` and ``-``
replaced by ``_`` (and a numeric suffix when two names collide); schedule.json records each layer's folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from quantloop.backend.layers import LayerRecord
from quantloop.costmodel.timeloop_yaml import write_mapping, write_problem
from quantloop.targets.arch import Arch

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def folder_names(names: Sequence[str]) -> dict[str, str]:
    taken: set[str] = set()
    out = {}
    for name in names:
        base = _UNSAFE.sub("_", name).strip("._") or "layer"
        candidate, k = base, 2
        while candidate.lower() in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate.lower())
        out[name] = candidate
    return out


def write_timeloop(out_dir: Path, records: Sequence[LayerRecord], target: Arch, folders: dict[str, str]) -> list[Path]:
    written = []
    for r in records:
        folder = Path(out_dir) / "timeloop" / folders[r.name]
        folder.mkdir(parents=True)
        write_problem(folder / "problem.yaml", r.problem, r.bits)
        write_mapping(folder / "map.yaml", target, r.mapping)
        written += [folder / "problem.yaml", folder / "map.yaml"]
    return written
