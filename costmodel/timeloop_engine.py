"""Real Timeloop as an optional cost engine: write one layer's inputs, run `timeloop-model`, read
its statistics back as a `CostResult`.

Nothing in quantloop needs it; `quantloop cost --engine timeloop`, `compile --verify-timeloop`
and the oracle tests use it. The tool is found through `QUANTLOOP_TIMELOOP` (a `timeloop-model`
executable, the prebuilt bundle's `run` wrapper, or the bundle's folder) or on PATH.
`timeloop-model` evaluates one mapping per call (≈0.3 s), so `evaluate_many` runs several calls
side by side.

Statistics come from `timeloop-model.stats.txt` (energies rounded to 0.01 pJ, counts exact).
Timeloop's counts are values; with bit packing emulated (`timeloop_arch.emulated_words`) they
are turned back into words (ceil(values / values per word)) so they read like quantloop's.
"""

from __future__ import annotations

import json

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


from quantloop.mapping import Mapping
from quantloop.costmodel.model import CostResult, LevelStats, evaluate_batch
from quantloop.problem import DATASPACES, Bits, Problem
from quantloop.costmodel.timeloop_arch import (
    EMPTY_CONSTRAINTS,
    Emulation,
    architecture,
    area_reference_table,
    emulated_words,
    energy_reference_table,
)
from quantloop.costmodel.timeloop_yaml import dump_yaml, mapping_to_list, problem_to_dict
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch

ENV_VAR = "QUANTLOOP_TIMELOOP"
INPUT_FILES = ("arch.yaml", "ERT.yaml", "ART.yaml", "problem.yaml", "map.yaml", "constraints.yaml")
_NOT_FOUND = (
    "real Timeloop not found: set QUANTLOOP_TIMELOOP to a timeloop-model executable (or to the prebuilt "
    "bundle's `run` wrapper), or put timeloop-model on PATH"
)


@dataclass(frozen=True)
class TimeloopTool:
    """How to start timeloop-model: `command + [input files]`.

    `extrapolate=False` turns off Timeloop's temporal extrapolation (it computes the data moved
    in the first iterations of a loop and extrapolates the rest, which is exact for the mappings
    a search keeps but can be off by a few per cent when two sliding-window loops of one axis,
    e.g. R outside P, sit above a level); then Timeloop visits every iteration, as quantloop counts."""

    command: tuple[str, ...]
    extrapolate: bool = True

    def __str__(self) -> str:
        return " ".join(self.command)


def find_timeloop() -> TimeloopTool:
    """The timeloop-model to use, or a QuantloopError saying how to point to one."""
    given = os.environ.get(ENV_VAR, "").strip()
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / "run" if (path / "run").is_file() else path / "bin" / "timeloop-model"
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise QuantloopError(f"{ENV_VAR}={given}: no executable timeloop-model there. {_NOT_FOUND}")
        if path.name == "timeloop-model":
            return TimeloopTool((str(path),))
        return TimeloopTool((str(path), "timeloop-model"))  # a wrapper: `run TOOL ARGS...`
    found = shutil.which("timeloop-model")
    if found:
        return TimeloopTool((found,))
    raise QuantloopError(_NOT_FOUND)


# ------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class LayerInputs:
    """The documents of one layer's timeloop-model run, and how bit packing was emulated."""

    documents: dict[str, dict]
    emulation: Emulation


def layer_inputs(arch: Arch, problem: Problem, mapping: Mapping, bits: Bits = Bits()) -> LayerInputs:
    """Everything timeloop-model needs to evaluate `mapping`, with quantloop's bit packing and MAC
    energy at `bits` made visible to stock Timeloop where it can be (see `timeloop_arch`)."""
    arrays = mapping.to_arrays()
    r = evaluate_batch(arch, problem, arrays, bits)
    emulation = emulated_words(arch, r.values_per_word[0], arrays.keep[0])
    docs = {
        "arch.yaml": architecture(arch, emulation),
        "ERT.yaml": energy_reference_table(arch, r.mac_energy / r.macs),
        "ART.yaml": area_reference_table(arch),
        "problem.yaml": problem_to_dict(problem, bits),  # stock Timeloop ignores the fork's `bitwidths`
        "map.yaml": {"mapping": mapping_to_list(arch, mapping)},
        "constraints.yaml": EMPTY_CONSTRAINTS,
    }
    return LayerInputs(docs, emulation)


def write_layer_inputs(folder: Path, inputs: LayerInputs, texts: dict[str, str] | None = None) -> list[Path]:
    """Write the layer's input files into `folder`. `texts` (shared across the layers of a network)
    remembers the YAML of documents seen before: arch, ERT and ART repeat from layer to layer."""
    folder = Path(folder)
    written = []
    for name, doc in inputs.documents.items():
        path = folder / name
        if texts is None:
            path.write_text(dump_yaml(doc))
        else:
            key = json.dumps(doc, separators=(",", ":"), default=repr)
            if key not in texts:
                texts[key] = dump_yaml(doc)
            path.write_text(texts[key])
        written.append(path)
    return written


def command_line() -> str:
    """The one-line command (run inside the layer folder) that evaluates it."""
    return "timeloop-model " + " ".join(INPUT_FILES)


# ------------------------------------------------------------------------------------ running


def run_model(tool: TimeloopTool, folder: Path, timeout: float = 600.0) -> str:
    """Run timeloop-model on the inputs in `folder` (outputs land there); the stats text."""
    env = None if tool.extrapolate else {**os.environ, "TIMELOOP_DISABLE_TEMPORAL_EXTRAPOLATION": "1"}
    try:
        proc = subprocess.run([*tool.command, *INPUT_FILES], cwd=folder, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except OSError as err:
        raise QuantloopError(f"{tool}: cannot start ({err.strerror})") from None
    except subprocess.TimeoutExpired:
        raise QuantloopError(f"{tool}: no answer within {timeout:.0f} s for {folder}") from None
    stats = folder / "timeloop-model.stats.txt"
    if proc.returncode != 0 or not stats.is_file():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "rror" in ln or "what()" in ln or "ERROR" in ln),
                      lines[-1] if lines else f"exit status {proc.returncode}")
        raise QuantloopError(f"{folder}: timeloop-model rejected the inputs: {reason.strip()}")
    return stats.read_text()


_LEVEL = re.compile(r"^=== (\S+) ===$", re.M)
_NUM = r"([-+0-9.eE]+)"


def _field(block: str, label: str) -> float:
    m = re.search(rf"^\s*{re.escape(label)}\s*:\s*{_NUM}", block, re.M)
    if not m:
        raise QuantloopError(f"timeloop-model.stats.txt: no '{label}' where expected")
    return float(m.group(1))


def parse_stats(text: str, arch: Arch, emulation: Emulation | None = None) -> CostResult:
    """The statistics of a timeloop-model run as a `CostResult` (levels of `arch` only; dummy
    spatial levels carry nothing). Counts are turned into words with the emulated values per word."""
    opw = dict(zip((lvl.name for lvl in arch.levels), emulation.values_per_word)) if emulation else {}
    heads = list(_LEVEL.finditer(text))
    summary_at = text.find("Summary Stats")
    if summary_at < 0:
        raise QuantloopError("timeloop-model.stats.txt: no 'Summary Stats' section")
    blocks = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else summary_at
        blocks.setdefault(m.group(1), text[m.end():end])  # the first block; a later section repeats names
    mac = blocks.get(arch.compute.name)
    if mac is None:
        raise QuantloopError(f"timeloop-model.stats.txt: no '{arch.compute.name}' level")
    mac_energy = _field(mac, "Energy (total)")
    macs = int(_field(mac, "Computes (total)"))
    cycles = int(_field(text[summary_at:], "Cycles"))
    total = mac_energy
    per_level, leakage = [], {}
    for lvl in arch.levels:
        block = blocks.get(lvl.name)
        if block is None:
            raise QuantloopError(f"timeloop-model.stats.txt: no '{lvl.name}' level")
        leak = _field(block, "Leakage energy (total)") if "Leakage energy (total)" in block else 0.0
        leakage[lvl.name] = leak
        total += leak
        k = opw.get(lvl.name, 1)
        for ds in DATASPACES:
            m = re.search(rf"^    {ds}:\n((?:        .*\n?)+)", block, re.M)
            if not m:
                continue
            ds_block = m.group(1)
            energy = _field(ds_block, "Energy (total)")
            total += energy
            words = lambda label: -(-int(_field(ds_block, label)) // k)  # noqa: E731
            util = int(_field(ds_block, "Utilized instances (max)"))
            per_level.append(LevelStats(
                level=lvl.name, dataspace=ds, word_bits=lvl.word_bits, values_per_word=k,
                utilized_instances=util, utilized_clusters=int(_field(ds_block, "Utilized clusters (max)")),
                utilized_capacity_words=words("Utilized capacity"),
                utilized_capacity_bits=words("Utilized capacity") * lvl.word_bits,
                partition_size=int(_field(ds_block, "Partition size")),
                reads_per_instance=words("Scalar reads (per-instance)"),
                fills_per_instance=words("Scalar fills (per-instance)"),
                updates_per_instance=words("Scalar updates (per-instance)"),
                energy_pj=energy,
            ))
    utilization = macs / (cycles * arch.compute.instances) if cycles else 0.0
    return CostResult(total_energy_pj=total, cycles=cycles, compute_cycles=cycles, utilization=utilization,
                      macs=macs, mac_energy_pj=mac_energy, per_level=tuple(per_level), leakage_pj=leakage)


def evaluate_timeloop(arch: Arch, problem: Problem, mapping: Mapping, bits: Bits = Bits(), *,
                      tool: TimeloopTool | None = None) -> tuple[CostResult, Emulation]:
    """Evaluate one mapping in real Timeloop (in a temporary folder)."""
    tool = tool or find_timeloop()
    inputs = layer_inputs(arch, problem, mapping, bits)
    with tempfile.TemporaryDirectory(prefix="quantloop-timeloop-") as tmp:
        write_layer_inputs(Path(tmp), inputs)
        return parse_stats(run_model(tool, Path(tmp)), arch, inputs.emulation), inputs.emulation


def evaluate_folder(folder: Path, arch: Arch, emulation: Emulation | None = None, *,
                    tool: TimeloopTool | None = None) -> CostResult:
    """Evaluate an emitted `timeloop/<layer>/` folder as written (outputs go to a temporary copy)."""
    tool = tool or find_timeloop()
    with tempfile.TemporaryDirectory(prefix="quantloop-timeloop-") as tmp:
        for name in INPUT_FILES:
            if not (Path(folder) / name).is_file():
                raise QuantloopError(f"{folder}: {name} is missing")
            shutil.copy(Path(folder) / name, Path(tmp) / name)
        return parse_stats(run_model(tool, Path(tmp)), arch, emulation)


def evaluate_many(jobs: list[tuple[Arch, Problem, Mapping, Bits]], *, tool: TimeloopTool | None = None,
                  workers: int | None = None) -> list[tuple[CostResult, Emulation]]:
    """`evaluate_timeloop` for many mappings, several timeloop-model processes at a time."""
    tool = tool or find_timeloop()
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: evaluate_timeloop(*job, tool=tool), jobs))
