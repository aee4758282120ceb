"""The design points of a sweep: target parameters (a grid, or a seeded random sample of it) × the
bit-widths / weight scheme each point runs at.

A point's bits are the ones given (`--bits w4a8,w8a8`, crossed with the hardware) or, by default, the
native operands of its PE type (`native_bits`: int8 → w8a8, int16 → w16a16, LightPE-1 → w4a8 pot,
LightPE-2 → w8a8 pot2, FP32 → w32a32 float: the float model, unquantized). A combination the PEs cannot execute is not evaluated and is listed as skipped,
with the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from quantloop.bits import FLOAT_BITS_TEXT, FLOAT_SCHEME
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch
from quantloop.targets.template import canonical_query, split_spec

SAMPLINGS = ("grid", "random", "nsga2")


@dataclass(frozen=True)
class DesignPoint:
    """One hardware configuration and the bits it runs the model at."""

    target: str  # a target spec, e.g. "eyeriss?glb_kib=64&pe=8x8&pe_type=lightpe1"
    bits: str
    scheme: str
    parameters: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.parameters)
        return f"{params} {self.bits}{'' if self.scheme == 'int' else ':' + self.scheme}".strip()

    def to_json(self) -> dict:
        return {"target": self.target, "bits": self.bits, "scheme": self.scheme, "parameters": dict(self.parameters)}


def parse_axis(text: str) -> tuple[str, list[str]]:
    """`'pe=8x8,16x16'` -> `('pe', ['8x8', '16x16'])`."""
    name, sep, values = text.partition("=")
    choices = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not choices:
        raise QuantloopError(f"--grid {text!r}: expected NAME=V1,V2,... (e.g. pe=8x8,16x16)")
    if len(set(choices)) != len(choices):
        raise QuantloopError(f"--grid {text!r}: a value is listed twice")
    return name.strip(), choices


def hardware_configs(axes: Mapping[str, Sequence[str]], sampling: str = "grid", samples: int = 0,
                     seed: int = 0) -> list[dict[str, str]]:
    """Every combination of the axes (`grid`), or `samples` distinct combinations drawn with `seed`
    (`random`), in a deterministic order."""
    names = list(axes)
    grid = [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]
    if sampling == "grid":
        return grid
    if sampling != "random":
        raise QuantloopError(f"sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    if samples < 1:
        raise QuantloopError("--samples: must be at least 1 with random sampling")
    picked = np.random.default_rng(seed).choice(len(grid), size=min(samples, len(grid)), replace=False)
    return [grid[i] for i in sorted(picked)]


def native_bits(arch: Arch) -> tuple[str, str]:
    """The bits and weight scheme a target's PEs are built for: widest executable weights, the MAC's
    reference input width, and int where the PEs multiply (else their shift scheme)."""
    c = arch.compute
    if c.float_only:
        return FLOAT_BITS_TEXT, FLOAT_SCHEME
    weights = c.max_weight_bits or c.ref_weight_bits
    schemes = c.schemes or frozenset({"int"})
    scheme = "int" if "int" in schemes else ("pot" if "pot" in schemes else "pot2")
    return f"w{weights}a{c.ref_input_bits}", scheme


def design_points(base: str, configs: Sequence[Mapping[str, str]], bits: Sequence[str] = (),
                  scheme: str | None = None) -> tuple[list[DesignPoint], list[dict]]:
    """(points to evaluate, skipped combinations with the reason) for target `base` at each config."""
    from quantloop.costmodel.checks import check_bits
    from quantloop.problem import Bits
    from quantloop.targets.registry import load_target

    name, fixed = split_spec(base)
    points, skipped = [], []
    for config in configs:
        params = {**fixed, **config}
        spec = f"{name}?{canonical_query(params)}" if params else name
        arch = load_target(spec)  # an invalid combination is the target's one-line error
        native, native_scheme = native_bits(arch)
        for text in bits or [native]:
            chosen_scheme = scheme or native_scheme
            try:
                check_bits(arch, Bits.parse(text, scheme=chosen_scheme))
            except QuantloopError as err:
                skipped.append({"target": spec, "bits": text, "scheme": chosen_scheme, "reason": str(err)})
                continue
            points.append(DesignPoint(spec, text, chosen_scheme, tuple(sorted(params.items()))))
    return points, skipped
