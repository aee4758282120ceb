"""The mapper's memory stays bounded whatever the layer or target: option tables and keep choices beyond their
limits are sampled, and a sampled mapspace is never reported as proven optimal. Dims are bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantloop.problem import MAX_DIM, Bits, Problem, prime_factors
from quantloop.errors import QuantloopError
from quantloop.mapper import Budget, map_layer, mapspace, search as search_module
from quantloop.mapper.mapspace import Mapspace, factorization_count, ordered_factorizations, sampled_factorizations
from quantloop.targets.registry import load_target


SMALL = Budget(samples=50, starts=1, max_steps=2, evaluations=2000)


@given(st.integers(1, 5000))
def test_prime_factors_multiply_back_and_are_prime(n):
    factors = prime_factors(n)
    assert math.prod(factors) == n and factors == sorted(factors)
    assert all(all(p % d for d in range(2, math.isqrt(p) + 1)) for p in factors)


def test_prime_factors_of_the_largest_dim_is_instant():
    assert prime_factors(MAX_DIM) == [MAX_DIM]  # 2^31 − 1 is prime
    assert prime_factors(720720) == [2, 2, 2, 2, 3, 3, 5, 7, 11, 13]


@pytest.mark.parametrize("dims", [{"C": 2**61 - 1}, {"M": MAX_DIM + 1}, {"C": 65536, "M": 65536, "P": 65536, "Q": 65536}])
def test_problems_beyond_the_limits_are_refused_in_one_line(dims):
    with pytest.raises(QuantloopError, match="exceeds") as err:
        Problem(**dims, name="big")
    assert "\n" not in str(err.value) and "big" in str(err.value)


@pytest.mark.parametrize("n,slots", [(1, 3), (12, 1), (720, 4), (97, 5)])
def test_factorization_count_matches_the_enumeration(n, slots):
    assert factorization_count(n, slots) == len(ordered_factorizations(n, slots))


def test_sampled_factorizations_are_distinct_and_multiply_to_n():
    out = sampled_factorizations(720720, 30, 2000, np.random.default_rng(0))
    assert len(out) == len(np.unique(out, axis=0)) > 100
    assert (out.prod(axis=1) == 720720).all()


def test_a_sampled_mapspace_is_not_reported_optimal(monkeypatch):
    arch, problem, bits = load_target("eyeriss"), Problem(C=2, M=2, P=2, Q=2), Bits(8, 8, 8)
    assert map_layer(problem, arch, bits).optimal  # small enough to be searched exhaustively
    monkeypatch.setattr(mapspace, "OPTION_ENTRIES", 2 * 3 * arch.num_levels)  # 2 options per dim at most
    space = Mapspace(arch, problem, bits)
    assert not space.complete and max(len(o) for o in space.options) <= 2
    assert not map_layer(problem, arch, bits, budget=SMALL).optimal


DEEP = """name: deep
description: levels without dataspace constraints, so every keep is optional
levels:
  - {name: DRAM, word_bits: 8, width: 64, energy_pj: {read: 100.0, write: 100.0, update: 100.0}}
  - {name: L0, word_bits: 8, width: 64, depth: 512, energy_pj: {read: 2.0, write: 2.0, update: 2.0}, fanout: {x: 2}}
  - {name: L1, word_bits: 8, width: 64, depth: 64, energy_pj: {read: 1.0, write: 1.0, update: 1.0}, fanout: {x: 2}}
compute: {name: mac, energy_pj: 1.0}
"""


def test_many_optional_keeps_are_sampled(monkeypatch, tmp_path):
    (tmp_path / "deep.yaml").write_text(DEEP)
    arch, problem, bits = load_target(str(tmp_path / "deep.yaml")), Problem(C=4, M=4), Bits(8, 8, 8)
    space = Mapspace(arch, problem, bits)
    n = len(search_module.optional_keeps(space))
    assert n > 2 and len(search_module.keep_choices(space)) == 2**n
    assert map_layer(problem, arch, bits).optimal
    monkeypatch.setattr(search_module, "KEEP_CHOICE_BITS", 2)
    keeps = search_module.keep_choices(space)
    assert len(keeps) <= 2 + 2**2 and (keeps >= space.must_keep).all()
    assert not map_layer(problem, arch, bits, budget=SMALL).optimal
