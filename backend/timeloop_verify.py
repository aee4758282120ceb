"""`compile --verify-timeloop`: every mapped layer re-evaluated in real Timeloop, compared with
quantloop's own numbers.

With an output folder the emitted `timeloop/<layer>/` files are evaluated as written (the check
that they load); without one the same files are generated in a temporary folder. A layer is
flagged when its energy or cycles differ by more than `TOLERANCE` (relative). Where stock
Timeloop cannot be shown a layer's bit packing (`Emulation.mixed`), the difference is expected
and the row says so.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from quantloop.costmodel.model import evaluate
from quantloop.costmodel.timeloop_engine import (
    TimeloopTool,
    evaluate_folder,
    evaluate_timeloop,
    layer_inputs,
)
from quantloop.ir import accel
from quantloop.targets.arch import Arch

TOLERANCE = 0.01


@dataclass(frozen=True)
class LayerCheck:
    """One layer: quantloop's and Timeloop's energy (pJ) and cycles, relative differences."""

    name: str
    energy_pj: float
    timeloop_energy_pj: float
    cycles: int
    timeloop_cycles: int
    mixed_levels: tuple[str, ...]

    @property
    def energy_diff(self) -> float:
        return (self.timeloop_energy_pj - self.energy_pj) / self.energy_pj

    @property
    def cycles_diff(self) -> float:
        return (self.timeloop_cycles - self.cycles) / self.cycles

    @property
    def flagged(self) -> bool:
        return max(abs(self.energy_diff), abs(self.cycles_diff)) > TOLERANCE

    def to_json(self) -> dict:
        return {"name": self.name, "energy_pj": self.energy_pj, "timeloop_energy_pj": self.timeloop_energy_pj,
                "energy_diff": self.energy_diff, "cycles": self.cycles, "timeloop_cycles": self.timeloop_cycles,
                "cycles_diff": self.cycles_diff, "flagged": self.flagged, "mixed_levels": list(self.mixed_levels)}


def verify_module(module: ModuleOp, target: Arch, tool: TimeloopTool, timeloop_dir: Path | None = None,
                  folders: dict[str, str] | None = None, workers: int | None = None) -> list[LayerCheck]:
    """Check every `accel.layer` of a mapped module; `timeloop_dir` + `folders` (layer name → folder)
    point to emitted files to evaluate as written."""

    def check(op) -> LayerCheck:
        name = op.label
        problem, bits, mapping = op.problem.to_costmodel(name), op.bits.to_costmodel(), op.mapping.to_costmodel()
        ours = evaluate(target, problem, mapping, bits, check=False)
        emulation = layer_inputs(target, problem, mapping, bits).emulation
        if timeloop_dir is not None and folders is not None and name in folders:
            theirs = evaluate_folder(Path(timeloop_dir) / folders[name], target, emulation, tool=tool)
        else:
            theirs, _ = evaluate_timeloop(target, problem, mapping, bits, tool=tool)
        return LayerCheck(name, ours.total_energy_pj, theirs.total_energy_pj, ours.cycles, theirs.cycles,
                          emulation.mixed)

    ops = list(accel.layers(module))
    with ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(check, ops))
