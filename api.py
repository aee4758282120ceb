"""The public helpers of `import quantloop`: what users reach for besides `quantloop.compile`.

Each one takes what a user has at hand (a zoo spec or a path, a target name, bits as `"w4a8"`,
a problem as a `Problem`, a dict or a Timeloop problem YAML) and hands it to the one function that
does the job (`frontend.onnx_load.load_model`, `runtime.dataset.load_dataset`,
`targets.registry.load_target`, `mapper.map_layer`, `costmodel.evaluate`).

    >>> import quantloop
    >>> model = quantloop.load_model("zoo:cnn_digits")              # onnx.ModelProto
    >>> x, y = quantloop.load_dataset("zoo:digits-test")            # numpy arrays
    >>> eyeriss = quantloop.load_target("eyeriss")                  # targets.arch.Arch
    >>> best = quantloop.map_layer({"M": 64, "C": 32, "P": 8, "Q": 8, "R": 3, "S": 3}, "eyeriss", bits="w4a8")
    >>> quantloop.cost(best.problem, best.mapping, "eyeriss", bits="w4a8").total_energy_pj
"""

from __future__ import annotations

import os
from collections.abc import Mapping as MappingABC, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["load_model", "load_dataset", "load_target", "map_layer", "cost", "LayerMapping"]


def load_model(spec: str | os.PathLike, input_shapes: MappingABC[str, Sequence[int]] | None = None):
    """A checked, shape-inferred `onnx.ModelProto`: `zoo:NAME[?width=..&resolution=..]` or an ONNX path.

    `input_shapes` fixes symbolic input dimensions by input name, e.g. `{"x": (1, 3, 224, 224)}`."""
    from quantloop.frontend.onnx_load import load_model as load

    return load(spec, dict(input_shapes) if input_shapes else None)


def load_dataset(spec: str | os.PathLike):
    """`(x, y)` numpy arrays of a data set: `zoo:digits-calib|val|test` or an `.npz` with `x` (and
    optionally `y`; y is None without labels)."""
    from quantloop.runtime.dataset import load_dataset as load

    return load(spec)


def load_target(spec: Any):
    """A target (`targets.arch.Arch`): a built-in name (`eyeriss`, `simba`), a target YAML file or a
    Timeloop design folder."""
    from quantloop.targets.registry import load_target as load

    return load(spec)


def _problem(problem: Any):
    from quantloop.problem import Problem

    if isinstance(problem, Problem):
        return problem, None
    if isinstance(problem, MappingABC):
        return Problem(**problem), None
    if isinstance(problem, (str, os.PathLike)):
        from quantloop.costmodel.timeloop_yaml import read_problem

        return read_problem(Path(problem))
    raise TypeError(f"problem: expected a Problem, a dict of dims or a problem YAML path, got {type(problem).__name__}")


def _bits(bits: Any, scheme: str, from_problem):
    from quantloop.problem import Bits

    if isinstance(bits, Bits):
        return bits
    if bits is None:
        return from_problem if from_problem is not None else Bits(scheme=scheme)
    return Bits.parse(bits, scheme=scheme)


@dataclass(frozen=True)
class LayerMapping:
    """`map_layer`'s answer: the problem and bits it mapped, the best mapping (`quantloop.mapping.Mapping`),
    its cost (`costmodel.model.CostResult`), whether the search was exhaustive (`optimal`), how many
    legal mappings were scored, and whether it came from the cache."""

    problem: Any
    bits: Any
    mapping: Any
    cost: Any
    optimal: bool
    mappings_considered: int
    seconds: float
    cache_hit: bool


def map_layer(
    problem: Any, target: Any, bits: Any = None, *, scheme: str = "int", objective: str = "energy",
    use_cache: bool = True, cache_dir: str | os.PathLike | None = None, seed: int = 0,
) -> LayerMapping:
    """The best mapping of one layer on `target` for `objective` (energy | latency | edp).

    `problem`: a `quantloop.problem.Problem`, a dict of its dims (`{"M": 64, "C": 32, "P": 8, ...}`) or
    a Timeloop problem YAML path (whose `instance.bitwidths` give the bits unless `bits` is given);
    `bits`: `"w4a8"`, `"w4a8o16"` or a `Bits` (None: one value per memory word, as stock Timeloop).
    Results go through the same on-disk cache as `quantloop compile` unless `use_cache=False`.
    """
    from quantloop.mapper.api import map_layer as search
    from quantloop.mapper.cache import MapCache

    problem, yaml_bits = _problem(problem)
    chosen_bits = _bits(bits, scheme, yaml_bits)
    cache = MapCache(cache_dir) if use_cache else None
    r = search(problem, load_target(target), chosen_bits, objective, cache=cache, seed=seed)
    return LayerMapping(problem, chosen_bits, r.mapping, r.cost, r.optimal, r.mappings_considered, r.seconds, r.cache_hit)


def cost(problem: Any, mapping: Any, target: Any, bits: Any = None, *, scheme: str = "int"):
    """The cost (`costmodel.model.CostResult`: energy per level × data space, cycles, utilization,
    MACs, ...) of one mapping, checked for legality (an illegal one raises `QuantloopError` naming
    the broken rule). `mapping`: a `quantloop.mapping.Mapping`, a `LayerMapping` or a Timeloop
    `map.yaml` path; `problem` and `bits` as for `map_layer`."""
    from quantloop.costmodel.model import evaluate

    problem, yaml_bits = _problem(problem)
    arch = load_target(target)
    if isinstance(mapping, LayerMapping):
        mapping = mapping.mapping
    elif isinstance(mapping, (str, os.PathLike)):
        from quantloop.costmodel.timeloop_yaml import read_mapping

        mapping = read_mapping(Path(mapping), arch)
    return evaluate(arch, problem, mapping, _bits(bits, scheme, yaml_bits), check=True)
