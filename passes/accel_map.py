"""`accel-map{objective=energy workers=0 cache_dir="" no_cache=false seed=0}`: map every accel.layer.

Runs the CP-SAT mapper on the target the module was lowered for (its `accel.target` attribute; a
target whose content changed since accel-lower is an error) and attaches `#accel.mapping` and
`#accel.cost` to every `accel.layer`. Layers with the same problem and bits are mapped once; the
distinct ones go to `map_layers` (a process pool with `workers` > 1; 0 lets
`quantloop.mapper.api.default_workers` choose) through the on-disk cache
(`cache_dir`, default the user cache dir or `QUANTLOOP_CACHE_DIR`; `no_cache` turns it off).
The attached cost is the cost model's evaluation of the attached mapping, so re-evaluating the
mapping with `costmodel.evaluate` gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from quantloop.errors import QuantloopError
from quantloop.ir.accel import CostAttr, LayerCost, LevelCost, MappingAttr, layers, module_target
import quantloop.mapper as mapper  # looked up at call time: tests spy on mapper.map_layers
from quantloop.options import OBJECTIVES
from quantloop.progress import current
from quantloop.targets.registry import load_target


_STATS: ContextVar[dict | None] = ContextVar("accel_map_stats", default=None)


@contextmanager
def collect_mapper_stats() -> Iterator[dict]:
    """Collect each layer's `MapResult` (time, cache hit) while accel-map runs inside this block.

    Timings stay out of the IR so that dumps are deterministic; the driver's per-layer table
    reads them from here.
    """
    stats: dict = {}
    token = _STATS.set(stats)
    try:
        yield stats
    finally:
        _STATS.reset(token)


def cost_attr(cost, *, optimal: bool, mappings_considered: int) -> CostAttr:
    """`#accel.cost` from a `costmodel.CostResult` and the mapper's search statistics."""
    return CostAttr(
        LayerCost(
            energy_pj=float(cost.total_energy_pj),
            cycles=int(cost.cycles),
            utilization=float(cost.utilization),
            macs=int(cost.macs),
            mac_energy_pj=float(cost.mac_energy_pj),
            leakage_pj=float(sum(cost.leakage_pj.values())),
            optimal=bool(optimal),
            mappings_considered=int(mappings_considered),
            per_level=tuple(
                LevelCost(s.level, s.dataspace, float(s.energy_pj), int(s.utilized_capacity_bits)) for s in cost.per_level
            ),
        )
    )


def load_module_target(module: ModuleOp, pass_name: str):
    """The `Arch` named by the module's `accel.target`, checked against the hash recorded at lowering."""
    ref = module_target(module)
    if ref is None:
        raise QuantloopError(f"{pass_name}: the module has no accel.target attribute; run accel-lower{{target=...}} first")
    arch = load_target(ref.name)
    if arch.content_hash != ref.content_hash:
        raise QuantloopError(
            f"{pass_name}: target {ref.name} changed since accel-lower (content hash {arch.content_hash[:12]}, "
            f"module has {ref.content_hash[:12]}); run accel-lower again"
        )
    return arch


@dataclass(frozen=True)
class AccelMapPass(ModulePass):
    """Attach the best mapping for `objective` (energy | latency | edp) and its cost to every accel.layer."""

    name = "accel-map"

    objective: str = "energy"
    workers: int = 0
    cache_dir: str = ""
    no_cache: bool = False
    seed: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.objective not in OBJECTIVES:
            raise QuantloopError(f"accel-map: objective '{self.objective}' is not one of {', '.join(OBJECTIVES)}")
        arch = load_module_target(op, self.name)
        todo = layers(op)
        if not todo:
            return
        distinct: dict[tuple, int] = {}
        requests = []
        for layer in todo:
            key = (layer.problem, layer.bits.to_costmodel())
            if key not in distinct:
                distinct[key] = len(requests)
                requests.append((layer.label, layer.problem.to_costmodel(name=layer.label), key[1]))

        cache = None if self.no_cache else mapper.MapCache(self.cache_dir or None)
        with current().phase("mapping", total=len(requests)) as progress:
            results = mapper.map_layers(
                requests, arch, self.objective, workers=self.workers or None, cache=cache, seed=self.seed,
                progress=progress,
            )
        level_names = [level.name for level in arch.levels]
        stats = _STATS.get()
        for layer in todo:
            result = results[distinct[(layer.problem, layer.bits.to_costmodel())]]
            if stats is not None:
                stats[layer.label] = result
            layer.properties["mapping"] = MappingAttr.from_costmodel(result.mapping, level_names)
            layer.properties["cost"] = cost_attr(
                result.cost, optimal=result.optimal, mappings_considered=result.mappings_considered
            )
