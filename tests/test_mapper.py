"""Mapper quality and legality: Timeloop's own searched mappings, brute force on tiny layers,
random layers re-checked by the cost model and CP-SAT, and layers without a legal mapping."""

from __future__ import annotations

import os
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantloop.costmodel.model import evaluate
from quantloop.problem import Bits, Problem
from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
from quantloop.errors import QuantloopError
from quantloop.mapper import Budget, map_layer
from quantloop.mapper.cpsat import count_tilings, verify
from quantloop.mapper.exhaustive import exhaustive_best
from quantloop.mapper.mapspace import Mapspace
from quantloop.mapper.search import search
from quantloop.targets.registry import load_target

REFERENCE = Path(os.environ["QUANTLOOP_REFERENCE_DIR"])
LAYERS = ["conv3x3_C64_M64_P56", "dw3x3_G64_P56", "pw1x1_C32_M64_P56", "default_problem"]
CASES = [("eyeriss", f"eyeriss_like/{layer}") for layer in LAYERS]
CASES += [("simba", f"simba_like/{layer}") for layer in LAYERS]
CASES += [("eyeriss", f"eyeriss_like/quant/{q}") for q in ("I8_W8_O8", "I8_W4_O8", "I4_W4_O8")]
SMALL = Budget(samples=1500, starts=3, max_steps=20, evaluations=20_000)


@pytest.mark.slow
@pytest.mark.parametrize("target,case", CASES)
def test_mapper_beats_timeloops_own_search(target, case):
    arch = load_target(target)
    problem, bits = read_problem(REFERENCE / case / "problem.yaml")
    bits = bits or Bits()
    reference = evaluate(arch, problem, read_mapping(REFERENCE / case / "map.yaml", arch), bits, check=False)
    result = map_layer(problem, arch, bits, "energy")
    assert result.cost.total_energy_pj <= reference.total_energy_pj
    assert result.mappings_considered > 1000


def test_mapper_beats_timeloop_on_one_layer_quickly():
    arch = load_target("simba")
    case = REFERENCE / "simba_like/pw1x1_C32_M64_P56"
    problem, _ = read_problem(case / "problem.yaml")
    reference = evaluate(arch, problem, read_mapping(case / "map.yaml", arch), Bits(), check=False)
    result = map_layer(problem, arch, Bits(), "energy", budget=SMALL)
    assert result.cost.total_energy_pj < reference.total_energy_pj


TINY = [
    ("eyeriss", Problem(C=2, M=4, P=2, Q=2)),
    ("eyeriss", Problem(C=4, M=2, P=4, Q=1, R=3, S=1, Wstride=2)),
    ("simba", Problem(C=2, M=4, P=2, Q=1)),
    ("simba", Problem(G=2, P=2, Q=2, R=3, S=1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("target,problem", TINY)
def test_mapper_matches_brute_force_on_tiny_layers(target, problem):
    """Brute force: every tiling, every permutation of every level's loops, every keep choice."""
    arch = load_target(target)
    bits = Bits(8, 8, 8)
    best, legal = exhaustive_best(arch, problem, bits)
    result = map_layer(problem, arch, bits, "energy")
    assert legal > 0
    assert result.cost.total_energy_pj <= best * 1.005
    if result.optimal:
        assert result.cost.total_energy_pj == pytest.approx(best, rel=1e-12)


def test_exhaustive_mode_is_optimal_and_says_so():
    arch = load_target("eyeriss")
    problem = Problem(C=2, M=2, P=2, Q=1)
    best, _ = exhaustive_best(arch, problem, Bits(8, 8, 8))
    result = map_layer(problem, arch, Bits(8, 8, 8), "energy")
    assert result.optimal
    assert result.cost.total_energy_pj == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("objective", ["latency", "edp"])
def test_other_objectives_match_brute_force(objective):
    arch = load_target("eyeriss")
    problem = Problem(C=2, M=2, P=2, Q=2)
    best, _ = exhaustive_best(arch, problem, Bits(8, 8, 8), objective)
    result = map_layer(problem, arch, Bits(8, 8, 8), objective)
    value = {"latency": result.cost.cycles, "edp": result.cost.total_energy_pj * result.cost.cycles}[objective]
    assert result.optimal
    assert value == pytest.approx(best, rel=1e-12)


def test_numpy_enumeration_agrees_with_cpsat_on_the_number_of_legal_tilings():
    arch = load_target("eyeriss")
    space = Mapspace(arch, Problem(C=2, M=4, P=2, Q=2, R=3, S=1), Bits(4, 8, 8))
    tilings = space.enumerate(10**6, np.random.default_rng(0))
    assert tilings.complete
    assert len(tilings) == count_tilings(space) > 0


@pytest.mark.parametrize("target", ["eyeriss", "simba"])
@pytest.mark.parametrize("bits", [Bits(), Bits(2, 4, 8)])
def test_dim_options_drop_exactly_the_options_whose_tiles_do_not_fit(target, bits):
    """dim_options checks capacity once per (divisor, level); it must keep exactly the options that
    `Mapspace.fits` keeps on the full per-level extents of each option."""
    space = Mapspace(load_target(target), Problem(C=32, M=96, P=112, Q=112, R=3, S=3, Wstride=2, Hstride=2), bits)
    dropped = 0
    for d in range(8):
        every = space.dim_options(d, prune_capacity=False)
        cum = np.ones((len(every), space.L, 8), dtype=np.int64)
        cum[:, :, d] = np.flip(np.cumprod(np.flip(every.prod(axis=2), axis=1), axis=1), axis=1)
        expected = every[space.fits(cum, space.must_keep)]
        assert np.array_equal(space.dim_options(d), expected), d
        dropped += len(every) - len(expected)
    assert dropped > 0  # the capacities do prune here


def _layer(draw) -> Problem:
    depthwise = draw(st.booleans())
    c = 1 if depthwise else draw(st.sampled_from([1, 2, 3, 4, 6, 8, 16]))
    m = 1 if depthwise else draw(st.sampled_from([1, 2, 4, 5, 8, 12, 16]))
    g = draw(st.sampled_from([2, 4, 8, 16])) if depthwise else 1
    r = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    return Problem(G=g, C=c, M=m, P=draw(st.sampled_from([1, 2, 4, 7, 8])), Q=draw(st.sampled_from([1, 2, 3, 4, 8])),
                   R=r, S=r, Wstride=stride, Hstride=stride, name="random")


@st.composite
def layers_and_bits(draw):
    problem = _layer(draw)
    return problem, Bits(draw(st.integers(2, 8)), draw(st.integers(2, 8)), draw(st.integers(2, 8)))


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layers_and_bits(), target=st.sampled_from(["eyeriss", "simba"]))
def test_every_emitted_mapping_is_legal_and_reevaluates_the_same(case, target):
    problem, bits = case
    arch = load_target(target)
    result = map_layer(problem, arch, bits, "energy", budget=SMALL)
    again = evaluate(arch, problem, result.mapping, bits, check=True)  # raises on any broken rule
    assert again == result.cost
    arrays = result.mapping.to_arrays()
    factors = np.stack([arrays.temporal[0], arrays.spatial_x[0], arrays.spatial_y[0]], axis=1)
    assert verify(Mapspace(arch, problem, bits), factors, arrays.keep[0])
    for level, lm in zip(arch.levels, result.mapping.levels):
        assert int(np.prod([f for _, f in lm.spatial_x] or [1])) <= level.fanout_x
        assert int(np.prod([f for _, f in lm.spatial_y] or [1])) <= level.fanout_y
    for stats in result.cost.per_level:
        capacity = arch.levels[arch.level_index(stats.level)].capacity_bits
        if capacity is not None:
            used = sum(s.utilized_capacity_bits for s in result.cost.per_level if s.level == stats.level)
            assert used <= capacity


def test_same_seed_same_mapping():
    arch = load_target("simba")
    problem = Problem(C=32, M=48, P=14, Q=14, R=3, S=3)
    a = map_layer(problem, arch, Bits(8, 8, 8), budget=SMALL, seed=3)
    b = map_layer(problem, arch, Bits(8, 8, 8), budget=SMALL, seed=3)
    assert a.mapping == b.mapping and a.cost == b.cost and a.mappings_considered == b.mappings_considered


def _psum_fixed(m: int):
    """Eyeriss with psum_spad's temporal M fixed to m (16 words of 16 bits hold m partial sums only
    when they pack)."""
    arch = load_target("eyeriss")
    levels = list(arch.levels)
    i = arch.level_index("psum_spad")
    levels[i] = dataclasses.replace(levels[i], temporal_factors={**levels[i].temporal_factors, "M": m})
    return dataclasses.replace(arch, levels=tuple(levels), content_hash="psum-fixed")


def test_no_legal_mapping_names_layer_level_smallest_tile_and_capacity():
    arch = _psum_fixed(32)
    problem = Problem(C=4, M=32, P=4, Q=4, name="conv7")
    with pytest.raises(QuantloopError) as err:
        map_layer(problem, arch, Bits(8, 8, None))  # one partial sum per 16-bit word
    message = str(err.value)
    assert "conv7" in message and "psum_spad" in message
    assert "512 bits" in message  # 32 partial sums of 16 bits, one per 16-bit word
    assert "256 bits" in message  # 16 words of 16 bits
    assert "\n" not in message
    # partial sums are held at the 16-bit accumulator width by default: w8a8 does not fit either
    with pytest.raises(QuantloopError, match="psum_spad"):
        map_layer(problem, arch, Bits(8, 8, 8), budget=SMALL)
    # the same layer fits once two 8-bit partial sums share a word (the quantization fork's convention)
    assert map_layer(problem, arch, Bits(8, 8, 8, psum="outputs"), budget=SMALL).cost.total_energy_pj > 0


def test_contradictory_constraints_are_named():
    arch = load_target("eyeriss")
    levels = list(arch.levels)
    glb = arch.level_index("shared_glb")
    levels[glb] = dataclasses.replace(levels[glb], spatial_x_factors={**levels[glb].spatial_x_factors, "M": 4, "Q": 4})
    arch = dataclasses.replace(arch, levels=tuple(levels), content_hash="contradiction")
    with pytest.raises(QuantloopError) as err:
        map_layer(Problem(C=4, M=8, P=4, Q=8, name="pw"), arch, Bits(8, 8, 8))
    message = str(err.value)
    assert "contradict" in message and "shared_glb" in message
    assert "fan-out x" in message and "M=4" in message and "Q=4" in message


def test_fixed_factor_that_cannot_divide_the_dim_is_named():
    with pytest.raises(QuantloopError, match=r"layer odd: .*fixed factors of M .*psum_spad temporal M=16.* M=8"):
        map_layer(Problem(C=2, M=8, P=2, Q=2, name="odd"), _psum_fixed(16), Bits(8, 8, 8))


def test_search_returns_none_only_without_legal_tilings():
    assert search(_psum_fixed(32), Problem(C=4, M=32, P=4, Q=4), Bits(8, 8, None), budget=SMALL) is None


def test_bits_wider_than_a_word_are_an_error():
    with pytest.raises(QuantloopError, match="wider than"):
        map_layer(Problem(C=2, M=2), "eyeriss", Bits(16, 8, 8))


def test_unknown_objective():
    with pytest.raises(QuantloopError, match="objective"):
        map_layer(Problem(C=2, M=2), "eyeriss", Bits(8, 8, 8), "area")
