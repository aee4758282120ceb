"""The sampled search's descents run in lockstep (`mapper.search._local_searches`) and the sampled
phase reuses the keys of tilings whose stationary orders coincide; both must leave the scorer
exactly as descending one start after another and scoring every batch in full would."""

import numpy as np
import pytest

from quantloop.problem import Bits, Problem
from quantloop.mapper.mapspace import Mapspace
from quantloop.mapper.search import (
    DATASPACES,
    Budget,
    _arrays,
    _best,
    _free_slots,
    _keys_reusing,
    _local_searches,
    _neighbours,
    _permutations,
    _Scorer,
    sample_tilings,
)
from quantloop.mapper.orders import stationary_orders
from quantloop.targets.registry import load_target

LAYER = Problem(C=32, M=64, P=28, Q=28, R=3, S=3)


def _one_by_one(space, starts, scorer, budget):
    """The reference: steepest descent from each start in turn, every batch scored as it comes."""
    perms = _permutations(space.arch)
    free = [_free_slots(space, d) for d in range(8)]
    for t in range(starts.batch):
        start = starts[t]
        factors = np.stack([start.temporal[0], start.spatial_x[0], start.spatial_y[0]], axis=1)
        order, keep = start.order[0], start.keep[0]
        p, s = scorer.score(start)
        key = (float(p[0]), float(s[0]))
        for _ in range(budget.max_steps):
            if scorer.evaluations >= budget.evaluations:
                break
            F, O, K = _neighbours(space, factors, order, keep, free, perms)
            if len(F) == 0:
                break
            p, s = scorer.score(_arrays(F, O, K))
            i = _best(p, s)
            if not (float(p[i]), float(s[i])) < key:
                break
            key = (float(p[i]), float(s[i]))
            factors, order, keep = F[i], O[i], K[i]


def _starts(target, count=6):
    arch = load_target(target)
    bits = Bits(8, 8, 8)
    space = Mapspace(arch, LAYER, bits)
    samples = sample_tilings(space, 200, np.random.default_rng(0))[:count]
    order = stationary_orders(samples[:, :, 0], _permutations(arch), "Weights")
    must = np.repeat(space.must_keep[None], len(samples), axis=0)
    return arch, bits, space, _arrays(samples, order, must)


@pytest.mark.parametrize("target", ["eyeriss", "simba"])
@pytest.mark.parametrize("evaluations", [150_000, 700, 1])  # generous, binding mid-way, binding at once
def test_lockstep_descents_equal_descents_one_by_one(target, evaluations):
    arch, bits, space, starts = _starts(target)
    budget = Budget(evaluations=evaluations)
    reference, lockstep = _Scorer(arch, LAYER, bits, "energy"), _Scorer(arch, LAYER, bits, "energy")
    _one_by_one(space, starts, reference, budget)
    _local_searches(space, starts, lockstep, budget)
    assert (lockstep.evaluations, lockstep.legal, lockstep.best_key) == (
        reference.evaluations, reference.legal, reference.best_key)
    assert lockstep.best.mapping(0) == reference.best.mapping(0)
    if evaluations > 1:
        assert reference.evaluations > starts.batch  # the descents took steps


def test_reused_keys_equal_keys_scored_in_full():
    arch, bits, space, starts = _starts("eyeriss", count=200)
    samples = np.stack([starts.temporal, starts.spatial_x, starts.spatial_y], axis=2)
    reference, reusing = _Scorer(arch, LAYER, bits, "energy"), _Scorer(arch, LAYER, bits, "energy")
    earlier, evaluated = [], []
    keys_of = reusing.keys
    reusing.keys = lambda arrays: (evaluated.append(arrays.batch), keys_of(arrays))[1]
    for ds in DATASPACES:
        order = stationary_orders(starts.temporal, _permutations(arch), ds)
        full = reference.score(_arrays(samples, order, starts.keep))
        keys = _keys_reusing(reusing, samples, order, starts.keep, earlier)
        np.testing.assert_array_equal(keys[0], full[0])
        np.testing.assert_array_equal(keys[1], full[1])
        earlier.append((order, *keys))
    assert sum(evaluated) < 3 * len(samples)  # some orders coincided and were not evaluated again
    assert (reusing.evaluations, reusing.legal, reusing.best_key) == (
        reference.evaluations, reference.legal, reference.best_key)
