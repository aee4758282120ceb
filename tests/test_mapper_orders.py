"""The mapper's reduced loop-order set (`mapper.orders`) must reach the best order of a tiling
that the exhaustive reference (`mapper.exhaustive`) reaches, under the sliding-window Inputs rule
(a window shift change refetches the whole tile, so P/Q vs R/S order matters)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from quantloop.mapping import MappingArrays
from quantloop.costmodel.model import evaluate_batch
from quantloop.problem import DATASPACES, Bits, Problem
from quantloop.mapper.exhaustive import _orders
from quantloop.mapper.orders import level_candidates, present_masks
from quantloop.targets.registry import load_target

ONE = [1] * 8
# eyeriss tilings (temporal factors per level, N G C M P Q R S) of a 3x3 stride-1 layer where the
# old reduction (only the non-indexing run and the innermost loop) missed the best order by 1.5-2 %
TILINGS = [
    [ONE, [1, 1, 1, 1, 4, 1, 3, 3], ONE, [1, 1, 2, 1, 1, 1, 1, 1], [1, 1, 1, 2, 1, 1, 1, 1]],
    [[1, 1, 1, 1, 1, 2, 1, 1], [1, 1, 1, 1, 4, 1, 3, 3], ONE, [1, 1, 2, 1, 1, 1, 1, 1], [1, 1, 1, 2, 1, 1, 1, 1]],
    [[1, 1, 1, 1, 1, 4, 1, 1], [1, 1, 1, 1, 4, 1, 3, 3], ONE, [1, 1, 2, 1, 1, 1, 1, 1], [1, 1, 1, 2, 1, 1, 1, 1]],
]


def _best(arch, problem, f, per_level) -> float:
    orders = np.array(list(itertools.product(*per_level)))
    n = len(orders)
    keep = np.array([[l == 0 or ds in lvl.may_keep or ds in lvl.must_keep for ds in DATASPACES]
                     for l, lvl in enumerate(arch.levels)])
    F = np.broadcast_to(f, (n,) + f.shape)
    r = evaluate_batch(arch, problem, MappingArrays(F[:, :, 0], F[:, :, 1], F[:, :, 2], orders,
                                                    np.broadcast_to(keep, (n,) + keep.shape)), Bits(8, 8, 8))
    return float(np.where(r.capacity_ok, r.energy, np.inf).min())


@pytest.mark.parametrize("index", range(len(TILINGS)))
def test_reduced_orders_reach_the_exhaustive_best(index):
    arch = load_target("eyeriss")
    problem = Problem(C=2, M=2, P=4, Q=4, R=3, S=3)
    temporal = np.array(TILINGS[index])
    f = np.ones((arch.num_levels, 3, 8), dtype=np.int64)
    f[:, 0] = temporal
    f[1, 1, 5] = 4 // int(temporal[:, 5].prod())  # the rest of Q spatially, as the found tilings had
    masks = present_masks(temporal)
    perms = [lvl.temporal_permutation for lvl in arch.levels]
    full = [_orders([d for d in range(8) if temporal[l, d] > 1], perms[l]) for l in range(arch.num_levels)]
    reduced = [level_candidates(int(masks[l]), perms[l])[0].tolist() for l in range(arch.num_levels)]
    best = _best(arch, problem, f, full)
    assert np.isfinite(best)
    assert _best(arch, problem, f, reduced) == pytest.approx(best, rel=1e-12)
