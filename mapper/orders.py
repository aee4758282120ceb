"""Loop orders of one level that differ in reuse.

For Weights and Outputs the cost model sees a level's order only through the innermost loop
above every inner level that indexes them. The innermost active loop of a level is
non-indexing for at most one data space (Weights ignore N, P, Q; Inputs ignore M; Outputs
ignore C, R, S), so for them a level's order is characterised by the stationary data space, its
run of non-indexing loops innermost (taking all of them is never worse), and which loop is
innermost (or, for Inputs, just outside M).

Inputs are counted as timeloop-model counts sliding windows (`costmodel.model`): a step that
keeps the steady window shift fetches only the new part, a shift change or a 2-axis move the
whole tile, with Timeloop's extrapolation from iterations #0/#1. So the relative order of the
sliding loops P, Q, R, S changes Inputs counts (e.g. R outside P), and every candidate above is
also taken with its sliding loops permuted among the places they hold (at most 4! = 24 each).
tests/test_mapper_orders.py pins this against the exhaustive reference on tilings the
narrower set missed; it is checked empirically, not proven, for every tiling.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations

import numpy as np

from quantloop.problem import DIM_INDEX

_N, _G, _C, _M, _P, _Q, _R, _S = range(8)
_RUNS = {"Weights": (_N, _P, _Q), "Inputs": (_M,), "Outputs": (_C, _R, _S)}
_SLIDING = (_P, _Q, _R, _S)
STATIONARY = ("Weights", "Inputs", "Outputs")


def _inner_orders(present: tuple[int, ...]) -> list[tuple[tuple[int, ...], str | None]]:
    """(order outer → inner of the present dims, stationary data space) candidates."""
    if len(present) <= 1:
        return [(present, None)]
    out: list[tuple[tuple[int, ...], str | None]] = []
    for ds in STATIONARY:
        run = [d for d in present if d in _RUNS[ds]]
        if not run or len(run) == len(present):
            if run and len(run) == len(present):
                out += [(tuple(d for d in run if d != x) + (x,), ds) for x in run]
            continue
        rest = [d for d in present if d not in run]
        if ds == "Inputs":
            hard = [d for d in rest if d not in _SLIDING][:1]
            for y in [d for d in rest if d in _SLIDING] + hard:
                out.append((tuple(d for d in rest if d != y) + (y,) + tuple(run), ds))
        else:
            out += [(tuple(rest) + tuple(d for d in run if d != x) + (x,), ds) for x in run]
    if not out:
        out.append((present, None))
    out = [(o, ds) for order, ds in out for o in _window_orders(order)]
    seen, unique = set(), []
    for order, ds in out:
        if order not in seen:
            seen.add(order)
            unique.append((order, ds))
    return unique


def _window_orders(order: tuple[int, ...]) -> list[tuple[int, ...]]:
    """`order` with its sliding loops (P, Q, R, S) permuted among the places they hold: their
    relative order sets the window translations that Inputs are charged by."""
    places = [i for i, d in enumerate(order) if d in _SLIDING]
    out = []
    for perm in permutations([order[i] for i in places]):
        o = list(order)
        for i, d in zip(places, perm):
            o[i] = d
        out.append(tuple(o))
    return out


@lru_cache(maxsize=4096)
def level_candidates(present_mask: int, permutation: tuple[str, ...]) -> tuple[np.ndarray, tuple[str | None, ...]]:
    """Candidate full orders [n, 8] (outer → inner) for a level whose temporal loops with factor > 1
    are the dims in `present_mask` (bit i = DIMS[i]), honouring the level's permutation
    constraint (listed innermost first, inside every unlisted dim), and each one's stationary
    data space."""
    listed = [DIM_INDEX[d] for d in reversed(permutation)]  # outer → inner
    free = [d for d in range(8) if d not in listed]
    present = tuple(d for d in free if present_mask >> d & 1)
    orders, stationary = [], []
    for inner, ds in _inner_orders(present):
        idle = [d for d in free if d not in inner]
        orders.append(idle + list(inner) + listed)
        stationary.append(ds)
    return np.array(orders, dtype=np.int64), tuple(stationary)


def window_variants(order: np.ndarray, present_mask: int, permutation: tuple[str, ...]) -> np.ndarray:
    """The candidate orders [n, 8] of a level (`level_candidates`) that differ from `order` only in
    where its sliding loops (P, Q, R, S with factor > 1) sit among themselves: the orders that
    change Inputs' window translations and nothing else (`order` itself included when it is one)."""
    cands = level_candidates(present_mask, permutation)[0]
    sliding = [d for d in _SLIDING if present_mask >> d & 1]
    if len(sliding) < 2:
        return cands[np.all(cands == order, axis=1)]
    fixed = ~np.isin(order, sliding)
    same = np.all((cands == order) | ~fixed, axis=1)  # the other dims stay where they are
    return cands[same]


def present_masks(temporal: np.ndarray) -> np.ndarray:
    """int [..., L]: bit mask of the dims with a temporal factor > 1 at each level."""
    return ((temporal > 1) * (1 << np.arange(8))).sum(axis=-1)


def stationary_orders(temporal: np.ndarray, permutations: list[tuple[str, ...]], ds: str) -> np.ndarray:
    """order [K, L, 8] choosing at every level the first candidate stationary for `ds` (else the first)."""
    masks = present_masks(temporal)
    K, L = masks.shape
    out = np.empty((K, L, 8), dtype=np.int64)
    for l in range(L):
        uniq, inv = np.unique(masks[:, l], return_inverse=True)
        table = np.empty((len(uniq), 8), dtype=np.int64)
        for i, m in enumerate(uniq):
            orders, stat = level_candidates(int(m), permutations[l])
            j = stat.index(ds) if ds in stat else 0
            table[i] = orders[j]
        out[:, l] = table[inv.reshape(-1)]
    return out

