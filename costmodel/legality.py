"""A target's legality rules as data: what every judge of a mapping reads.

The numpy enumerator (`mapper.mapspace`), the CP-SAT model (`mapper.cpsat`), the brute-force
reference (`mapper.exhaustive`) and the cost model's checks (`costmodel.checks`, `evaluate_batch`)
all take the rules from here, so they cannot drift apart (`tests/test_legality_agreement.py`
checks that they agree on random mappings of random targets).

Two kinds of rule:

* Slot rules (`slot_table`): for every (level, temporal | spatial X | spatial Y, dim) slot, the
  factor the target fixes there (1 forbids the dim), or 0 when the mapper may choose it; plus
  each level's fan-out limits (`fanout_table`).
* Tile bounds (`tile_bounds`): "the tiles of these data spaces that level l keeps, counted in
  words (or values), sum to at most n". A level's capacity is one; `StorageLevel.max_tile_values`
  (at most n values of one data space per tile) is another. A new bound kind is one more
  `TileBound` produced here; every judge already evaluates them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantloop.problem import DATASPACES, DIMS
from quantloop.targets.arch import Arch

TEMPORAL, SPATIAL_X, SPATIAL_Y = 0, 1, 2
FREE = 0


def slot_table(arch: Arch) -> np.ndarray:
    """int64[L, 3, 8]: the fixed factor of each slot (1 = the dim may not use it), FREE when free."""
    table = np.full((arch.num_levels, 3, len(DIMS)), FREE, dtype=np.int64)
    for l, lvl in enumerate(arch.levels):
        for d, name in enumerate(DIMS):
            table[l, TEMPORAL, d] = lvl.temporal_factors.get(name, FREE)
            for kind, fanout, fixed in ((SPATIAL_X, lvl.fanout_x, lvl.spatial_x_factors),
                                        (SPATIAL_Y, lvl.fanout_y, lvl.spatial_y_factors)):
                table[l, kind, d] = 1 if fanout == 1 else fixed.get(name, FREE)
    return table


def fanout_table(arch: Arch) -> np.ndarray:
    """int64[L, 2]: the fan-out limits (X, Y) of every level."""
    return np.array([[lvl.fanout_x, lvl.fanout_y] for lvl in arch.levels], dtype=np.int64)


def slots_ok(table: np.ndarray, fanout: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """bool[...]: factors [..., L, 3, 8] honour every fixed slot and every fan-out limit."""
    fixed = table != FREE
    slots = np.all(~fixed | (factors == table), axis=(-3, -2, -1))
    spread = factors[..., 1:, :].prod(axis=-1)  # [..., L, 2]
    return slots & np.all(spread <= fanout, axis=(-2, -1))


@dataclass(frozen=True)
class TileBound:
    """Σ over `dataspaces` that `level` keeps of their tile, in `unit` ("words" or "values"), ≤ `limit`."""

    level: int
    dataspaces: tuple[int, ...]
    unit: str
    limit: int
    rule: str


def tile_bounds(arch: Arch) -> list[TileBound]:
    """Every tile bound of `arch`: capacities (words, all kept data spaces) and per-data-space value limits."""
    bounds = []
    for l, lvl in enumerate(arch.levels):
        if lvl.capacity_words is not None:
            bounds.append(TileBound(l, (0, 1, 2), "words", lvl.capacity_words,
                                    f"level {lvl.name}: capacity {lvl.capacity_words} words"))
        for ds, limit in sorted(lvl.max_tile_values.items()):
            bounds.append(TileBound(l, (DATASPACES.index(ds),), "values", limit,
                                    f"level {lvl.name}: at most {limit} {ds} values per tile"))
    return bounds


def bound_usage(bound: TileBound, values: np.ndarray, words: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """What the tiles [..., L, 3] (values and words per data space; keep [..., L, 3] or [L, 3])
    put against `bound`: [...]."""
    amount = words if bound.unit == "words" else values
    ds = list(bound.dataspaces)
    return (amount[..., bound.level, ds] * keep[..., bound.level, ds]).sum(axis=-1)


def tiles_ok(bounds: list[TileBound], values: np.ndarray, words: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """bool[...]: every tile bound holds (leading shapes of the tiles and of keep broadcast)."""
    ok = np.ones(np.broadcast_shapes(values.shape[:-2], np.shape(keep)[:-2]), dtype=bool)
    for bound in bounds:
        ok &= bound_usage(bound, values, words, keep) <= bound.limit
    return ok
