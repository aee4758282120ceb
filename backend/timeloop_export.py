"""``timeloop/<layer>/``: each layer as the inputs real ``timeloop-model`` loads, plus a README.

A folder holds ``arch.yaml`` (the target in the flattened form Timeloop reads), ``ERT.yaml`` (energy
per action, the MAC's at the layer's bits), ``ART.yaml`` (area), ``problem.yaml`` (with the
quantization fork's ``bitwidths``, which stock Timeloop ignores and ``quantloop cost`` reads),
``map.yaml`` and an empty ``constraints.yaml``; its README gives the one-line command. Where the
layer's bit packing can be shown to stock Timeloop (`costmodel.timeloop_arch`), Timeloop reproduces
quantloop's numbers; the README names any level where it cannot.

Folder names are the layer names with characters other than letters, digits, ``.``, ``_`` and ``-``
replaced by ``_`` (and a numeric suffix when two names collide); schedule.json records each layer's folder.
"""

from __future__ import annotations

import hashlib

import re
from collections.abc import Sequence
from pathlib import Path

from quantloop.backend.layers import LayerRecord
from quantloop.costmodel.timeloop_engine import command_line, layer_inputs, write_layer_inputs
from quantloop.targets.arch import Arch

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


#: Longest folder name made from a layer name (file systems allow 255 bytes; room is left for suffixes).
MAX_NAME = 100


def folder_names(names: Sequence[str]) -> dict[str, str]:
    """Safe, distinct (case-insensitively) folder names for layer names; long names are shortened
    deterministically to a prefix and a hash of the whole name."""
    taken: set[str] = set()
    out = {}
    for name in names:
        base = _UNSAFE.sub("_", name).strip("._") or "layer"
        if len(base.encode()) > MAX_NAME:
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            base = base.encode()[: MAX_NAME - 13].decode(errors="ignore") + "_" + digest
        candidate, k = base, 2
        while candidate.lower() in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate.lower())
        out[name] = candidate
    return out


def _readme(record: LayerRecord, target: Arch, mixed: Sequence[str]) -> str:
    lines = [
        f"# {record.name} on {target.name} (bits {record.bits})",
        "",
        "Evaluate in real Timeloop (run in this folder):",
        "",
        f"    {command_line()}",
        "",
        f"quantloop's own numbers: energy {record.cost.total_energy_pj!r} pJ, cycles {record.cost.cycles}.",
        "",
    ]
    if mixed:
        lines.append(
            "Stock Timeloop stores one value per word; at these bits level(s) " + ", ".join(mixed)
            + " keep data spaces that pack differently, which it cannot express: its counts there are in values "
            "and its energy differs from quantloop's."
        )
    else:
        lines.append("Bit packing is written into the word widths of arch.yaml, so Timeloop reproduces these numbers "
                     "(its counts are in values).")
    return "\n".join(lines) + "\n"


def write_timeloop(out_dir: Path, records: Sequence[LayerRecord], target: Arch, folders: dict[str, str]) -> list[Path]:
    written = []
    texts: dict[str, str] = {}
    for r in records:
        folder = Path(out_dir) / "timeloop" / folders[r.name]
        folder.mkdir(parents=True)
        inputs = layer_inputs(target, r.problem, r.mapping, r.bits)
        written += write_layer_inputs(folder, inputs, texts)
        (folder / "README.md").write_text(_readme(r, target, inputs.emulation.mixed))
        written.append(folder / "README.md")
    return written
