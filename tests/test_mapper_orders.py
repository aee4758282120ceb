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


@pytest.mark.parametrize("index", range(len(TILINGS)))
def test_sampled_seeds_try_the_window_order_variants(index):
    """The sampled search scores each tiling with data-space-stationary orders, which fix where the
    non-sliding loops sit but not the P/Q/R/S order among themselves; on these tilings the best of
    them is 1.5-2 % above the exhaustive best, and trying every level's window variants on the seeds
    (`search._try_window_orders`) reaches it."""
    from quantloop.mapper import search as S
    from quantloop.mapper.mapspace import Mapspace
    from quantloop.mapper.orders import stationary_orders

    arch = load_target("eyeriss")
    problem = Problem(C=2, M=2, P=4, Q=4, R=3, S=3)
    space = Mapspace(arch, problem, Bits(8, 8, 8))
    temporal = np.array(TILINGS[index])
    f = np.ones((arch.num_levels, 3, 8), dtype=np.int64)
    f[:, 0] = temporal
    f[1, 1, 5] = 4 // int(temporal[:, 5].prod())
    samples, must = f[None], space.must_keep[None]
    perms = [lvl.temporal_permutation for lvl in arch.levels]
    scorer = S._Scorer(arch, problem, Bits(8, 8, 8), "energy")
    best, sec = np.array([np.inf]), np.array([np.inf])
    order = np.zeros((1, arch.num_levels, 8), dtype=np.int64)
    for ds in DATASPACES:
        o = stationary_orders(samples[:, :, 0], perms, ds)
        p, s = scorer.keys(S._arrays(samples, o, must))
        if (p[0], s[0]) < (best[0], sec[0]):
            best[:], sec[:], order[:] = p, s, o
    full = [_orders([d for d in range(8) if temporal[l, d] > 1], perms[l]) for l in range(arch.num_levels)]
    exhaustive = _best(arch, problem, f, full)
    assert best[0] > exhaustive * 1.01
    S._try_window_orders(space, scorer, samples, order.copy(), must, best, sec, order, np.array([0]))
    assert best[0] == pytest.approx(exhaustive, rel=1e-12)
