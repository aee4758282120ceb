"""Legality checks of one mapping against a problem, a target and bit-widths.

Every failure is a QuantloopError naming the broken rule: the dim and both numbers for factor
products, the level and both sizes in bits for capacity, the constraint for constraint breaks.
"""

from __future__ import annotations

import numpy as np

from quantloop.bits import FLOAT_BITS, FLOAT_SCHEME, legal_text
from quantloop.costmodel.legality import (
    FREE, SPATIAL_X, SPATIAL_Y, TEMPORAL, bound_usage, fanout_table, slot_table, tile_bounds,
)
from quantloop.mapping import Mapping
from quantloop.problem import DATASPACES, DIMS, Bits, Problem, values_per_word
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch


def check_bits(arch: Arch, bits: Bits) -> None:
    """A value may not be wider than the word of any storage level (the fork aborts there too,
    even at a level that bypasses the data space); float values are 32 bits; and the PEs must execute the
    weights' width and scheme (a LightPE-1 array only shifts by power-of-two weights, an fp32 array runs
    float layers only)."""
    why = arch.compute.unsupported(bits.weights, bits.scheme)
    if bits.scheme == FLOAT_SCHEME:  # float layers run on float PEs only (said first: the widths follow from it)
        if why is not None:
            raise QuantloopError(f"bits: {why} (target {arch.name})")
        for ds, b in zip(DATASPACES, bits.as_tuple()):
            if b is not None and b not in FLOAT_BITS:
                raise QuantloopError(f"bits: float {ds} are {legal_text(FLOAT_BITS)} bits, not {b} (target {arch.name})")
    for ds, b in zip(DATASPACES, bits.as_tuple()):
        if b is None:
            continue
        for lvl in arch.levels:
            if b > lvl.word_bits:
                raise QuantloopError(
                    f"bits: {ds} are {b} bits, wider than the {lvl.word_bits}-bit word of level {lvl.name} of target {arch.name}"
                )
    if why is not None:
        raise QuantloopError(f"bits: {why} (target {arch.name})")


def check_factors(problem: Problem, mapping: Mapping) -> None:
    prod = mapping.dim_products()
    for d in DIMS:
        want = getattr(problem, d)
        if prod[d] != want:
            raise QuantloopError(
                f"mapping: the factors of {d} multiply to {prod[d]}, but the problem has {d} = {want}"
            )


def _check_permutation(level: str, loops: list[str], permutation: tuple[str, ...]) -> None:
    """Timeloop semantics: `permutation` lists dims innermost first; the level's active loops
    must nest in that order and listed dims must be inside unlisted ones."""
    inner_first = list(reversed(loops))
    rank = {d: i for i, d in enumerate(permutation)}
    seen_unlisted = False
    last = -1
    for d in inner_first:
        if d not in rank:
            seen_unlisted = True
            continue
        if seen_unlisted or rank[d] < last:
            raise QuantloopError(
                f"mapping: level {level} breaks the constraint temporal.permutation "
                f"{''.join(permutation)} (innermost first): loops are {''.join(inner_first)} innermost first"
            )
        last = rank[d]


def check_structure(arch: Arch, mapping: Mapping) -> None:
    """Keep/bypass rules, fan-out limits and the target's dataflow constraints."""
    if len(mapping.levels) != arch.num_levels:
        raise QuantloopError(
            f"mapping: has {len(mapping.levels)} levels, target {arch.name} has {arch.num_levels} "
            f"({', '.join(l.name for l in arch.levels)})"
        )
    table, fanout = slot_table(arch), fanout_table(arch)
    for l, (lvl, lm) in enumerate(zip(arch.levels, mapping.levels)):
        for ds in sorted(lm.keep - lvl.may_keep):
            raise QuantloopError(f"mapping: level {lvl.name} keeps {ds}, but the constraint dataspace.bypass forbids it")
        for ds in sorted(lvl.must_keep - lm.keep):
            raise QuantloopError(f"mapping: level {lvl.name} bypasses {ds}, but the constraint dataspace.keep requires it")
        for kind, loops in ((SPATIAL_X, lm.spatial_x), (SPATIAL_Y, lm.spatial_y), (TEMPORAL, lm.temporal)):
            axis = "X" if kind == SPATIAL_X else "Y"
            if kind != TEMPORAL:
                total = int(np.prod([f for _, f in loops])) if loops else 1
                limit = int(fanout[l, kind - 1])
                if total > limit:
                    raise QuantloopError(
                        f"mapping: level {lvl.name} spatial {axis} factors multiply to {total}, more than its fan-out {limit}"
                    )
            got = dict(loops)
            constraint = "temporal" if kind == TEMPORAL else f"spatial_{axis.lower()}"
            for d, name in enumerate(DIMS):
                fixed = int(table[l, kind, d])
                if fixed != FREE and got.get(name, 1) != fixed:
                    raise QuantloopError(
                        f"mapping: level {lvl.name} breaks the constraint {constraint}.factors {name}={fixed} "
                        f"(mapping has {name}={got.get(name, 1)})"
                    )
        if lvl.temporal_permutation:
            _check_permutation(lvl.name, [d for d, _ in lm.temporal], lvl.temporal_permutation)


def check_tiles(arch: Arch, values: np.ndarray, words: np.ndarray, keep: np.ndarray) -> None:
    """Every tile bound (`legality.tile_bounds`: capacities, per-data-space value limits) of the
    tiles values[L, 3] / words[L, 3] per instance at keep[L, 3]."""
    for bound in tile_bounds(arch):
        need = int(bound_usage(bound, values, words, keep))
        if need <= bound.limit:
            continue
        lvl = arch.levels[bound.level]
        if bound.unit == "words" and len(bound.dataspaces) == len(DATASPACES):
            raise QuantloopError(
                f"mapping: capacity exceeded at level {lvl.name}: tiles need {need * lvl.word_bits} bits "
                f"({need} words of {lvl.word_bits} bits), {lvl.capacity_bits} bits available"
            )
        raise QuantloopError(f"mapping: breaks the rule '{bound.rule}': the tile has {need} {bound.unit}")


def check_mapping(arch: Arch, problem: Problem, mapping: Mapping, bits: Bits) -> None:
    """All checks except capacity (which needs the tile sizes; `evaluate` runs it)."""
    check_bits(arch, bits)
    check_structure(arch, mapping)
    check_factors(problem, mapping)


__all__ = ["check_bits", "check_factors", "check_structure", "check_tiles", "check_mapping", "values_per_word"]
