"""Cost model: batch vs single agreement, a brute-force loop-nest simulation of the fill rule,
packing, data model round trips and the legality checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantloop.costmodel.checks import check_mapping
from quantloop.mapping import LevelMapping, Mapping, MappingArrays
from quantloop.costmodel.model import evaluate, evaluate_batch
from quantloop.problem import DATASPACE_DIMS, DIMS, Bits, Problem
from quantloop.costmodel.random_mappings import random_mappings
from quantloop.errors import QuantloopError
from quantloop.targets.registry import load_target

TARGETS = {name: load_target(name) for name in ("eyeriss", "simba")}

problems = st.builds(
    Problem,
    N=st.sampled_from([1, 2]),
    G=st.sampled_from([1, 2, 4]),
    C=st.sampled_from([1, 3, 4, 8]),
    M=st.sampled_from([1, 4, 6, 16]),
    P=st.sampled_from([1, 4, 6, 7]),
    Q=st.sampled_from([1, 2, 4, 14]),
    R=st.sampled_from([1, 3]),
    S=st.sampled_from([1, 3]),
    Wstride=st.sampled_from([1, 2]),
    Hstride=st.sampled_from([1, 2]),
    Wdilation=st.sampled_from([1, 2]),
    Hdilation=st.just(1),
)
bitses = st.builds(
    Bits,
    weights=st.sampled_from([None, 2, 4, 8]),
    inputs=st.sampled_from([None, 4, 8]),
    outputs=st.sampled_from([None, 8]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems, bits=bitses, target=st.sampled_from(sorted(TARGETS)), seed=st.integers(0, 2**16))
def test_batch_agrees_with_single_evaluation(problem, bits, target, seed):
    arch = TARGETS[target]
    arrays = random_mappings(arch, problem, 12, seed)
    batch = evaluate_batch(arch, problem, arrays, bits)
    assert batch.fanout_ok.all() and batch.factors_ok.all()
    for i in range(arrays.batch):
        mapping = arrays.mapping(i)
        check_mapping(arch, problem, mapping, bits)  # random mappings are structurally legal
        single = evaluate(arch, problem, mapping, bits, check=False)
        assert single.total_energy_pj == pytest.approx(batch.energy[i], rel=1e-12)
        assert single.cycles == batch.cycles[i]
        one = evaluate_batch(arch, problem, arrays[i], bits)  # no cross-talk inside a batch
        assert one.energy[0] == pytest.approx(batch.energy[i], rel=1e-12)
        np.testing.assert_array_equal(one.reads[0], batch.reads[i])


def _box(ds: str, problem: Problem, origin: dict, ext: dict) -> tuple[range, ...]:
    ranges = {d: range(origin[d], origin[d] + ext[d]) for d in DIMS}
    if ds == "Inputs":
        # Timeloop projects a tile to its axis-aligned bounding box (AAHR): with a stride > 1 and
        # no R in the tile the window still spans (p − 1)·stride + 1 columns
        def box(a, b, stride, dilation):
            low = a.start * stride + b.start * dilation
            return range(low, (a.stop - 1) * stride + (b.stop - 1) * dilation + 1)

        w = box(ranges["P"], ranges["R"], problem.Wstride, problem.Wdilation)
        h = box(ranges["Q"], ranges["S"], problem.Hstride, problem.Hdilation)
        return ranges["N"], ranges["G"], ranges["C"], w, h
    return tuple(ranges[d] for d in DIMS if d in DATASPACE_DIMS[ds])


def _brute_force_visits(arch, problem: Problem, mapping: Mapping, level: int, ds: str) -> int:
    """Literal simulation of timeloop-model's walk with its default temporal extrapolation: every
    loop runs iterations #0 and #1 only, and #1's delta counts for the f − 1 steps after #0. A step
    charges the part of the tile not in the previous tile while the tile keeps moving by the same
    translation; a step that changes the translation charges the whole tile and forgets it; a step
    that leaves the tile where it was charges nothing. The part not in the previous tile is the
    whole tile unless the two differ along one axis (Timeloop's axis-aligned box difference)."""
    ext = {d: 1 for d in DIMS}
    for lm in mapping.levels[level:]:
        for kind in (lm.temporal, lm.spatial_x, lm.spatial_y):
            for d, f in kind:
                ext[d] *= f
    loops = []  # (dim, factor, stride) outer -> inner
    for l, lm in enumerate(mapping.levels[:level]):
        for pos, (d, f) in enumerate(lm.temporal):
            stride = math.prod(g for dd, g in lm.temporal[pos + 1:] if dd == d)
            for lower in mapping.levels[l + 1:]:
                stride *= math.prod(g for dd, g in lower.temporal if dd == d)
            for lower in mapping.levels[l:]:
                stride *= lower.factor("spatial_x", d) * lower.factor("spatial_y", d)
            loops.append((d, f, stride))
    total, prev, translation = 0, None, None
    for idx in itertools.product(*(range(min(f, 2)) for _, f, _ in loops)):
        weight = math.prod(f - 1 for (_, f, _), i in zip(loops, idx) if i == 1)
        origin = {d: 0 for d in DIMS}
        for (d, _, stride), i in zip(loops, idx):
            origin[d] += i * stride
        tile = _box(ds, problem, origin, ext)
        if prev is None:
            total += _volume(tile)  # the first tile
        else:
            t = tuple(a.start - b.start for a, b in zip(tile, prev))
            if not any(t):
                pass
            elif translation is None or t == translation:
                moved = [k for k in range(len(t)) if t[k]]
                new = set(itertools.product(*tile)) - set(itertools.product(*prev))
                total += weight * (len(new) if len(moved) == 1 else _volume(tile))
                translation = t
            else:
                total += weight * _volume(tile)
                translation = None
        prev = tile
    return total


def _volume(box: tuple) -> int:
    return math.prod(len(r) for r in box)


@pytest.mark.parametrize("seed", range(6))
def test_fills_match_a_brute_force_nest_walk(seed):
    problem = Problem(C=2, M=4, P=6, Q=4, R=3, S=3, Wstride=1 + seed % 2, name="small")
    arch = TARGETS["eyeriss" if seed % 3 else "simba"]
    arrays = random_mappings(arch, problem, 4, seed)
    result = evaluate_batch(arch, problem, arrays, Bits())
    for i in range(arrays.batch):
        mapping = arrays.mapping(i)
        for l in range(1, arch.num_levels):
            for k, ds in enumerate(("Weights", "Inputs", "Outputs")):
                if ds not in mapping.levels[l].keep:
                    continue
                visits = _brute_force_visits(arch, problem, mapping, l, ds)
                if ds == "Outputs":
                    visits -= int(result.partition_size[i, l, k])
                assert result.fills[i, l, k] == visits, (seed, i, arch.levels[l].name, ds)


def test_packing_divides_counts_per_instance_with_ceil():
    arch = TARGETS["eyeriss"]
    problem = Problem(C=32, M=64, P=56, Q=56)
    arrays = random_mappings(arch, problem, 200, 3)
    stock = evaluate_batch(arch, problem, arrays, Bits())
    w4 = evaluate_batch(arch, problem, arrays, Bits(weights=4, inputs=8, outputs=None))
    # ⌊word / 4⌋ weights per word at every level that holds them (2 in 8-bit, 4 in 16-bit words)
    per_word = np.array([lvl.word_bits // 4 for lvl in arch.levels])
    np.testing.assert_array_equal(w4.values_per_word[0, :, 0], per_word)
    np.testing.assert_array_equal(w4.reads[:, :, 0], np.ceil(stock.reads[:, :, 0] / per_word))
    np.testing.assert_array_equal(w4.fills[:, :, 0], np.ceil(stock.fills[:, :, 0] / per_word))
    per_word_inputs = np.array([lvl.word_bits // 8 for lvl in arch.levels])  # 8-bit inputs: 2 per 16-bit word
    np.testing.assert_array_equal(w4.reads[:, :, 1], np.ceil(stock.reads[:, :, 1] / per_word_inputs))
    assert np.all(w4.energy <= stock.energy + 1e-6)
    assert np.all(w4.capacity_ok >= stock.capacity_ok)  # fewer bits never close a mapping


def test_bits_equal_to_every_word_behave_like_stock():
    arch = TARGETS["simba"]
    problem = Problem(C=16, M=32, P=14, Q=14, R=3, S=3)
    arrays = random_mappings(arch, problem, 100, 4)
    a = evaluate_batch(arch, problem, arrays, Bits())
    b = evaluate_batch(arch, problem, arrays, Bits(weights=8, inputs=8, outputs=None))
    np.testing.assert_array_equal(a.reads, b.reads)
    np.testing.assert_allclose(a.energy - a.mac_energy, b.energy - b.mac_energy, rtol=1e-12)


def test_bits_parse():
    assert Bits.parse("w4a8") == Bits(4, 8, 8)
    assert Bits.parse("W2A4o16", scheme="pot") == Bits(2, 4, 16, "pot")
    with pytest.raises(QuantloopError, match="expected the form"):
        Bits.parse("int8")
    with pytest.raises(QuantloopError, match="scheme"):
        Bits(4, 8, 8, "bf16")  # float is a scheme (float PEs); bf16 is none


def test_mapping_arrays_round_trip():
    arch = TARGETS["eyeriss"]
    problem = Problem(C=64, M=64, P=56, Q=56, R=3, S=3)
    arrays = random_mappings(arch, problem, 50, 5)
    again = MappingArrays.stack(arrays.mappings())
    for i, m in enumerate(arrays.mappings()):
        assert again.mapping(i) == m
    r1 = evaluate_batch(arch, problem, arrays)
    r2 = evaluate_batch(arch, problem, again)
    np.testing.assert_array_equal(r1.energy, r2.energy)


def _pw_mapping(**changes) -> Mapping:
    levels = [
        LevelMapping(temporal=(("P", 14), ("C", 2), ("M", 4)), keep={"Weights", "Inputs", "Outputs"}),
        LevelMapping(temporal=(("P", 4), ("Q", 8)), spatial_x=(("M", 2), ("Q", 7)), spatial_y=(("M", 8),),
                     keep={"Inputs", "Outputs"}),
        LevelMapping(keep={"Inputs"}),
        LevelMapping(temporal=(("C", 16),), keep={"Weights"}),
        LevelMapping(keep={"Outputs"}),
    ]
    for index, level in changes.items():
        levels[int(index[1:])] = level
    return Mapping(tuple(levels))


PW = Problem(C=32, M=64, P=56, Q=56, name="pw")


def test_checks_name_the_broken_rule():
    arch = TARGETS["eyeriss"]
    evaluate(arch, PW, _pw_mapping())
    with pytest.raises(QuantloopError, match=r"factors of C multiply to 64, but the problem has C = 32"):
        evaluate(arch, PW, _pw_mapping(l3=LevelMapping(temporal=(("C", 32),), keep={"Weights"})))
    with pytest.raises(QuantloopError, match=r"capacity exceeded at level weights_spad: tiles need 4096 bits \(512 words of 8 bits\), 3072 bits available"):
        evaluate(arch, PW, _pw_mapping(
            l0=LevelMapping(temporal=(("P", 14), ("C", 2)), keep={"Weights", "Inputs", "Outputs"}),
            l1=LevelMapping(temporal=(("P", 4), ("Q", 8)), spatial_x=(("Q", 7),), spatial_y=(("M", 2),),
                            keep={"Inputs", "Outputs"}),
            l4=LevelMapping(temporal=(("M", 32),), keep={"Outputs"}),
        ))
    with pytest.raises(QuantloopError, match=r"shared_glb breaks the constraint spatial_x.factors C=1"):
        evaluate(arch, PW, _pw_mapping(l1=LevelMapping(temporal=(("P", 4), ("Q", 8)), spatial_x=(("C", 2), ("Q", 7)),
                                                       spatial_y=(("M", 8),), keep={"Inputs", "Outputs"}),
                                       l0=LevelMapping(temporal=(("P", 14), ("M", 8)), keep={"Weights", "Inputs", "Outputs"})))
    with pytest.raises(QuantloopError, match=r"spatial X factors multiply to 28, more than its fan-out 14"):
        evaluate(arch, PW, _pw_mapping(l1=LevelMapping(temporal=(("P", 4), ("Q", 2)), spatial_x=(("M", 2), ("Q", 14)),
                                                       spatial_y=(("M", 8),), keep={"Inputs", "Outputs"})))
    with pytest.raises(QuantloopError, match=r"level shared_glb keeps Weights, but the constraint dataspace.bypass forbids it"):
        evaluate(arch, PW, _pw_mapping(l1=LevelMapping(temporal=(("P", 4), ("Q", 8)), spatial_x=(("M", 2), ("Q", 7)),
                                                       spatial_y=(("M", 8),), keep={"Weights", "Inputs", "Outputs"})))
    with pytest.raises(QuantloopError, match=r"Outputs are 16 bits, wider than the 8-bit word of level DRAM"):
        evaluate(arch, PW, _pw_mapping(), Bits(8, 8, 16))


def test_batch_flags_broken_factor_products_and_fanouts():
    arch = TARGETS["eyeriss"]
    arrays = _pw_mapping().to_arrays()
    assert evaluate_batch("eyeriss", PW, arrays).valid.all()
    arrays.temporal[0, 0, 4] = 7  # P at DRAM 14 -> 7
    arrays.spatial_x[0, 1, 5] = 14  # Q on X: 7 -> 14, with M2 that is 28 > 14
    r = evaluate_batch(arch, PW, arrays)
    assert not r.factors_ok[0] and not r.fanout_ok[0] and not r.valid[0]


def _psum_spad_pw_mapping(c_at_dram: int):
    """Eyeriss 1×1 layer C=4 M=16 P=Q=2: C split between DRAM (c_at_dram) and weights_spad."""
    return Mapping((
        LevelMapping((("C", c_at_dram), ("P", 2), ("Q", 2)), keep={"Weights", "Inputs", "Outputs"}),
        LevelMapping((), (("M", 4),), (), keep={"Inputs", "Outputs"}),
        LevelMapping(keep={"Inputs"}),
        LevelMapping((("C", 4 // c_at_dram),), keep={"Weights"}),
        LevelMapping((("M", 4),), keep={"Outputs"}),
    ))


def test_partial_sums_pack_at_the_accumulator_width_only_below_the_last_reduction():
    from quantloop.costmodel.model import holds_partial_sums

    arch = load_target("eyeriss")
    problem = Problem(C=4, M=16, P=2, Q=2)
    inside = _psum_spad_pw_mapping(1)  # the reduction runs at weights_spad: only it and psum_spad hold partial sums
    outside = _psum_spad_pw_mapping(2)  # C also at DRAM: every level holds partial sums
    assert holds_partial_sums(inside.to_arrays())[0].tolist() == [False, False, False, True, True]
    assert holds_partial_sums(outside.to_arrays())[0].tolist() == [True] * 5
    w4a4 = Bits(4, 4, 4)  # accumulator 8 bits: 2 per 16-bit psum_spad word, 1 per 8-bit word
    r = evaluate_batch(arch, problem, MappingArrays.stack([inside, outside]), w4a4)
    assert r.values_per_word[0, :, 2].tolist() == [2, 2, 2, 1, 2]  # final outputs: 4 bits; partial: 8
    assert r.values_per_word[1, :, 2].tolist() == [1, 1, 1, 1, 2]
    fork = evaluate_batch(arch, problem, MappingArrays.stack([outside]), Bits(4, 4, 4, psum="outputs"))
    assert fork.values_per_word[0, :, 2].tolist() == [2, 2, 2, 2, 4]


def test_a_level_declares_its_partial_sum_width(tmp_path):
    import yaml

    from quantloop.targets.registry import BUILTIN_DIR

    spec = yaml.safe_load((BUILTIN_DIR / "eyeriss.yaml").read_text())
    next(lvl for lvl in spec["levels"] if lvl["name"] == "psum_spad")["partial_sum_bits"] = 16
    path = tmp_path / "wide_acc.yaml"
    path.write_text(yaml.safe_dump({**spec, "name": "wide_acc"}))
    arch = load_target(str(path))
    r = evaluate_batch(arch, Problem(C=4, M=16, P=2, Q=2), _psum_spad_pw_mapping(2).to_arrays(), Bits(4, 4, 4))
    assert r.values_per_word[0, -1, 2] == 1  # declared 16-bit partial sums: one per 16-bit word
