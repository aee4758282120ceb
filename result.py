"""What `quantloop.compile` returns: per-layer structured results, `to_json()` and `table()`.

Every figure is read from the mapped accel module (`#accel.problem`, `#accel.bits`,
`#accel.mapping`, `#accel.cost`), so the Python result, the printed IR and the written artefacts
agree. Mapper timings and cache hits come from the accel-map pass (kept out of the IR so that
dumps stay deterministic).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from quantloop.mapping import LevelMapping


@dataclass
class LayerSummary:
    """One accel layer of a finished compile.

    `problem`: the canonical dims N G C M P Q R S and the strides/dilations; `operand_bits`: per data
    space (Weights, Inputs, Outputs) `{"bits", "scheme", "signed"}`; `mapping`: one named
    `quantloop.mapping.LevelMapping` per storage level, outermost (DRAM) first; `energy_pj_by_level`: pJ per level and data space
    (the MACs under level "MAC", data space "compute"); `optimal`: the mapper searched the whole
    mapspace. `shape` and `bits` are the short texts of the summary table."""

    name: str
    kind: str
    shape: str
    bits: str
    energy_pj: float
    cycles: int
    utilization: float
    mapper_seconds: float
    optimal: bool
    cache_hit: bool
    macs: int = 0
    problem: dict[str, int] = field(default_factory=dict)
    operand_bits: dict[str, dict[str, Any]] = field(default_factory=dict)
    mapping: list[LevelMapping] = field(default_factory=list)
    energy_pj_by_level: dict[str, dict[str, float]] = field(default_factory=dict)
    leakage_pj: float = 0.0
    mappings_considered: int = 0


@dataclass
class CompileResult:
    """What a compile produced: the final module, per-layer figures and written artefacts."""

    module: ModuleOp
    qnn_module: ModuleOp | None
    target: Any | None
    layers: list[LayerSummary] = field(default_factory=list)
    host_ops: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    search: dict[str, Any] | None = None
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds of every phase (import, each pass, mapping, each artefact), as `quantloop.progress` recorded them."""
    timeloop_check: list[Any] | None = None
    """With `verify_timeloop`: one `backend.timeloop_verify.LayerCheck` per mapped layer."""
    phase_cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds of this process in each phase (mapping workers not included)."""
    synergy: dict[str, Any] | None = None
    """With `synergy`: the saving against uniform w8a8, decomposed (`passes.search.synergy.decompose`)."""
    title: str = ""
    """`MODEL on TARGET, BITS (OBJECTIVE)`: what the table and plots are headed with."""

    @property
    def total_energy_pj(self) -> float:
        return sum(layer.energy_pj for layer in self.layers)

    @property
    def total_cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def area_mm2(self) -> dict[str, Any] | None:
        """The target's area per level, of the MACs and in total (mm²; None where the target does not declare it)."""
        if self.target is None:
            return None
        from quantloop.targets.area import target_area

        return target_area(self.target).to_json()

    @property
    def ppa(self):
        """Energy, latency (s), area (mm²) and performance per area (`targets/ppa.py`); None without a target."""
        if self.target is None:
            return None
        from quantloop.targets.ppa import ppa

        return ppa(self.target, self.total_energy_pj, self.total_cycles, sum(layer.macs for layer in self.layers))

    def to_json(self) -> dict[str, Any]:
        """Everything above as plain JSON types (`json.dumps(result.to_json())` works)."""
        return {
            "title": self.title,
            "target": None if self.target is None else self.target.name,
            "area": self.area_mm2,
            "total": {"energy_pj": self.total_energy_pj, "cycles": self.total_cycles,
                      "macs": sum(layer.macs for layer in self.layers), "seconds": self.seconds,
                      **({"ppa": self.ppa.to_json()} if self.ppa is not None else {})},
            "layers": [_jsonable({**asdict(layer), "mapping": [lvl.to_json() for lvl in layer.mapping]})
                       for layer in self.layers],
            "host_ops": list(self.host_ops),
            "artifacts": {kind: str(path) for kind, path in self.artifacts.items()},
            "phases_s": dict(self.phases),
            **({"search": self.search} if self.search is not None else {}),
            **({"synergy": self.synergy} if self.synergy is not None else {}),
            **({"timeloop_check": [c.to_json() for c in self.timeloop_check]}
               if self.timeloop_check is not None else {}),
        }

    def table(self, width: int = 160) -> str:
        """The per-layer summary table `quantloop compile` prints, as text."""
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=width, color_system=None).print(summary_table(self))
        return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_table(result: CompileResult):
    """The rich Table of a mapped compile: one row per layer and a total."""
    from rich.table import Table

    notes = [note for note in (first_layer_note(result.layers), result.ppa.summary() if result.ppa else None) if note]
    table = Table(title=result.title or None, caption="\n".join(notes) or None)
    for column in ("layer", "kind", "shape", "bits", "energy (µJ)", "cycles", "util.", "mapper (s)", "optimal"):
        table.add_column(
            column, justify="right" if column not in ("layer", "kind", "shape", "bits") else "left", no_wrap=True
        )
    for layer in result.layers:
        table.add_row(
            layer.name, layer.kind, layer.shape, layer.bits, f"{layer.energy_pj / 1e6:,.3f}", f"{layer.cycles:,}",
            f"{layer.utilization:.0%}", "cache" if layer.cache_hit else f"{layer.mapper_seconds:.2f}",
            "yes" if layer.optimal else "no",
        )
    table.add_section()
    table.add_row(
        "total", f"{len(result.layers)} layers", f"{len(result.host_ops)} host ops", "",
        f"{result.total_energy_pj / 1e6:,.3f}", f"{result.total_cycles:,}", "",
        f"{sum(layer.mapper_seconds for layer in result.layers):.2f}",
        f"{sum(layer.optimal for layer in result.layers)}/{len(result.layers)}",
    )
    return table


def first_layer_note(layers: list[LayerSummary]) -> str | None:
    """Why the first layer's inputs are wider than the others' (the model input keeps `input-bits`), or None."""
    if len(layers) < 2 or not layers[0].operand_bits:
        return None
    first = layers[0].operand_bits["Inputs"]["bits"]
    rest = min(layer.operand_bits["Inputs"]["bits"] for layer in layers[1:])
    if first <= rest:
        return None
    return (f"{layers[0].name} reads the model input at {first} bits: model inputs keep "
            f"qnn-assign-bits' input-bits ({first}), not the activation width ({rest})")


def summarize_layers(module: ModuleOp, mapper_stats: Mapping[str, Any] | None = None) -> tuple[list[LayerSummary], list[str]]:
    """Per-layer results of a mapped accel module, and the ops left to the host.

    `mapper_stats` (layer name -> object with `seconds` and `cache_hit`) comes from the accel-map pass.
    """
    from quantloop.ir import op_kind
    from quantloop.ir.accel import DATASPACES, STRIDE_KEYS, host_ops, layers

    summaries: list[LayerSummary] = []
    for op in layers(module):
        p = op.problem.data
        cost = op.cost.data if op.cost is not None else None
        stats = (mapper_stats or {}).get(op.label)
        b = op.bits.data
        by_level: dict[str, dict[str, float]] = {}
        if cost is not None:
            for part in cost.per_level:
                by_level.setdefault(part.level, {})[part.dataspace] = part.energy_pj
            by_level["MAC"] = {"compute": cost.mac_energy_pj}
        summaries.append(
            LayerSummary(
                name=op.label,
                kind=op.kind.data.value,
                shape=_shape_text(p),
                bits=" ".join(_bits_text(prefix, b.of(ds)) for prefix, ds in (("w", "Weights"), ("i", "Inputs"), ("o", "Outputs"))),
                energy_pj=cost.energy_pj if cost else float("nan"),
                cycles=cost.cycles if cost else 0,
                utilization=cost.utilization if cost else float("nan"),
                mapper_seconds=getattr(stats, "seconds", 0.0),
                optimal=bool(cost.optimal) if cost else False,
                cache_hit=bool(getattr(stats, "cache_hit", False)),
                macs=cost.macs if cost else p.macs,
                problem={**p.dims, **{k: getattr(p, k) for k in STRIDE_KEYS}},
                operand_bits={
                    ds: {"bits": b.of(ds).bits, "scheme": b.of(ds).scheme, "signed": b.of(ds).signed} for ds in DATASPACES
                },
                mapping=list(op.mapping.levels if op.mapping is not None else ()),
                energy_pj_by_level=by_level,
                leakage_pj=cost.leakage_pj if cost else 0.0,
                mappings_considered=cost.mappings_considered if cost else 0,
            )
        )
    host = [f"{op_kind(op)} {_op_name(op)}" for op in host_ops(module)]
    return summaries, host


def _shape_text(p) -> str:
    """`G M C P×Q R×S /stride` with the dims that are 1 left out, e.g. `M64 C32 56×56 3×3 /2`."""
    parts = [f"{d}{v}" for d, v in (("N", p.N), ("G", p.G), ("M", p.M), ("C", p.C)) if v > 1]
    parts.append(f"{p.P}×{p.Q}")
    if p.R * p.S > 1:
        parts.append(f"{p.R}×{p.S}")
    if p.Wstride > 1 or p.Hstride > 1:
        parts.append(f"/{p.Wstride}" if p.Wstride == p.Hstride else f"/{p.Wstride}×{p.Hstride}")
    return " ".join(parts)


def _bits_text(prefix: str, operand) -> str:
    suffix = {"int": "", "uint": "u", "float": "f"}.get(operand.scheme, operand.scheme)
    return f"{prefix}{operand.bits}{suffix}"


def _op_name(op) -> str:
    name = op.properties.get("name") or op.attributes.get("name")
    return getattr(name, "data", "?")
