"""Property test: random legal mappings, evaluated in real timeloop-model and in quantloop's cost
model, agree (total energy within 1 %, every level × data space energy within 2 %, cycles within 1 %).

Hypothesis (derandomized by the `ci` profile) draws a target (the built-in `eyeriss` and `simba`,
and `tests/data/timeloop/ws_array`, a weight-stationary Timeloop design written for these tests),
a layer (strided conv, depthwise, 1×1, fully connected, batch > 1), bit-widths and a seed for
`random_mappings` (random tilings over every level and fan-out the target allows, random loop
orders, random keep / bypass choices); mappings that overflow a buffer are dropped.

Bits below a level's word: stock Timeloop stores one value per word, so the bits are emulated as
Timeloop sees them: a level whose kept data spaces all pack k values per word is given words of
⌊word / k⌋ bits and k times the words per access and capacity (`costmodel.timeloop_arch`), which
makes Timeloop count exactly what quantloop counts. Bits are drawn 2..8 per data space, with
partial sums at the accumulator width or (the fork's convention) at the Outputs width; a mapping
whose bits put differently packed data spaces on one level (not expressible in stock Timeloop) is
not compared, and the test requires that at least `MIN_COMPARED` mappings were.

Layers whose input windows overlap (3×3 at stride 1 or 2) are compared in full too: the cost
model counts sliding-window Inputs as timeloop-model does by default, with its temporal
extrapolation (costmodel/model.py, "Sliding windows"; `test_extrapolation_shortcut_is_modelled`
shows the one place where that differs from walking every iteration). Where such windows are
spread over a fan-out (eyeriss' S on Y), neighbouring PEs pass rows to each other over links as
timeloop-model counts them (costmodel/link_transfers.py); those mappings are compared in full too.

timeloop-model evaluates one mapping per call (about 0.3–0.8 s), so the calls of one example run
side by side; the whole test takes a minute or two and is in the slow set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantloop.costmodel.model import evaluate, evaluate_batch
from quantloop.problem import Bits, Problem
from quantloop.costmodel.random_mappings import random_mappings
from quantloop.costmodel.timeloop_engine import evaluate_many, layer_inputs
from quantloop.errors import QuantloopError
from quantloop.targets.registry import load_target

DATA = Path(__file__).resolve().parent / "data" / "timeloop"
TARGETS = {"eyeriss": "eyeriss", "simba": "simba", "ws_array": str(DATA / "ws_array")}
MIN_COMPARED = 200
PER_EXAMPLE = 4

layers = st.one_of(
    st.builds(lambda c, m, p, k, s: Problem(C=c, M=m, P=p, Q=p, R=k, S=k, Wstride=s, Hstride=s, name="conv"),
              st.sampled_from([3, 4, 8, 16]), st.sampled_from([4, 8, 16, 24]), st.sampled_from([4, 7, 8]),
              st.sampled_from([2, 3]), st.sampled_from([1, 2, 3])),
    st.builds(lambda g, p, s: Problem(G=g, P=p, Q=p, R=3, S=3, Wstride=s, Hstride=s, name="dw"),
              st.sampled_from([4, 8, 16, 32]), st.sampled_from([4, 7, 14]), st.sampled_from([1, 2, 3])),
    st.builds(lambda c, m, p: Problem(C=c, M=m, P=p, Q=p, name="pw"),
              st.sampled_from([8, 16, 32, 48]), st.sampled_from([8, 16, 32]), st.sampled_from([2, 4, 7, 14])),
    st.builds(lambda n, c, m: Problem(N=n, C=c, M=m, name="fc"),
              st.sampled_from([1, 2, 4]), st.sampled_from([16, 64, 100]), st.sampled_from([10, 16, 32])),
)
widths = st.integers(min_value=2, max_value=8)
bit_choices = st.one_of(
    st.just(Bits()),
    st.builds(lambda w, a, o: Bits(w, a, o), st.integers(5, 8), st.integers(5, 8), st.integers(5, 8)),
    st.builds(lambda w, a, o, psum: Bits(w, a, o, psum=psum), widths, widths, widths,
              st.sampled_from(["accumulator", "outputs"])),
    st.integers(2, 8).map(lambda b: Bits(b, b, b, psum="outputs")),
)


@pytest.mark.slow
def test_random_mappings_agree_with_real_timeloop(timeloop):
    arches = {name: load_target(spec) for name, spec in TARGETS.items()}
    compared: list[dict] = []

    @settings(max_examples=90, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target=st.sampled_from(sorted(TARGETS)), problem=layers, bits=bit_choices,
           seed=st.integers(0, 2**16))
    def check(target, problem, bits, seed):
        arch = arches[target]
        arrays = random_mappings(arch, problem, 64, seed)
        if arrays.batch == 0:
            return
        fits = np.flatnonzero(evaluate_batch(arch, problem, arrays, bits).valid)
        jobs = []
        for i in fits:
            mapping = arrays.mapping(int(i))
            try:
                if not layer_inputs(arch, problem, mapping, bits).emulation.exact:
                    continue
            except QuantloopError:  # a dim on both X and Y of one stage: one Timeloop spatial entry cannot say it
                continue
            jobs.append((arch, problem, mapping, bits))
            if len(jobs) == PER_EXAMPLE:
                break
        if not jobs:
            return
        overlapping = problem.R > problem.Wstride or problem.S > problem.Hstride
        for (_, _, mapping, _), (theirs, _) in zip(jobs, evaluate_many(jobs, tool=timeloop)):
            ours = evaluate(arch, problem, mapping, bits)
            where = f"{target} {problem} {bits} seed {seed}"
            # overlapping windows spread over a fan-out: neighbours pass rows over links (Timeloop's link transfers)
            linked = overlapping and any(d in "PQRS" and f > 1 for lm in mapping.levels
                                         for d, f in (*lm.spatial_x, *lm.spatial_y))
            row = {"where": where, "packed": any(b is not None for b in bits.as_tuple()), "overlapping": overlapping,
                   "linked": linked,
                   "energy": abs(theirs.total_energy_pj - ours.total_energy_pj) / ours.total_energy_pj,
                   "cycles": abs(theirs.cycles - ours.cycles) / ours.cycles, "level": 0.0}
            assert theirs.total_energy_pj == pytest.approx(ours.total_energy_pj, rel=0.01), where
            assert theirs.cycles == pytest.approx(ours.cycles, rel=0.01), where
            for s in ours.per_level:
                t = theirs.stats(s.level, s.dataspace)
                assert t.energy_pj == pytest.approx(s.energy_pj, rel=0.02, abs=0.05), (where, s.level, s.dataspace)
                if s.energy_pj > 1.0:
                    row["level"] = max(row["level"], abs(t.energy_pj - s.energy_pj) / s.energy_pj)
            compared.append(row)

    check()
    full = compared
    overlap = sum(c["overlapping"] for c in full)
    packed = sum(c["packed"] for c in full)
    linked = [c for c in full if c["linked"]]
    print(f"{len(full)} mappings compared in full ({overlap} with overlapping windows, {len(linked)} of them "
          f"spread over a fan-out, {packed} at packed bits)")
    for key in ("energy", "cycles", "level"):
        worst = max(full, key=lambda c: c[key])
        print(f"worst {key} difference {worst[key]:.3e} ({worst['where']})")
    if linked:
        worst = max(linked, key=lambda c: c["energy"])
        print(f"overlapping windows over a fan-out: worst total energy difference {worst['energy']:.3e} ({worst['where']})")
    assert len(full) >= MIN_COMPARED, f"only {len(full)} mappings compared in full"
    assert len(linked) >= 10, f"only {len(linked)} mappings with overlapping windows over a fan-out compared"
    assert overlap >= MIN_COMPARED // 4, f"only {overlap} mappings with overlapping windows compared in full"
    assert packed >= MIN_COMPARED // 4, f"only {packed} mappings with packed bits compared in full"


def test_extrapolation_shortcut_is_modelled(timeloop):
    """R (3) outside P (4) at DRAM, 3×3 at stride 1; a shared_glb Input tile is 1 column × 6 rows
    × 3 channels = 18 values. Walking every iteration, a step of R comes after P's index 3 and
    moves the window 2 columns back (a new translation): all 12 windows are fetched whole, 216
    fills, what Timeloop counts with TIMELOOP_DISABLE_TEMPORAL_EXTRAPOLATION=1. By default
    Timeloop runs P's iterations #0 and #1 only, so a step of R (+1 column) is compared with the
    window at P's index 1 (+1 column), finds the same window and charges nothing:
    18 + 3 × 3 × 18 = 180. The cost model counts what default Timeloop counts (the recorded
    reference runs were made with it)."""
    from quantloop.mapping import LevelMapping, Mapping
    from quantloop.costmodel.timeloop_engine import evaluate_timeloop

    arch = load_target("eyeriss")
    problem = Problem(C=3, M=4, P=4, Q=4, R=3, S=3)
    mapping = Mapping((
        LevelMapping((("R", 3), ("P", 4)), keep={"Weights", "Inputs", "Outputs"}),
        LevelMapping((("M", 2), ("S", 3), ("Q", 2), ("C", 3)), (("Q", 2),), (("M", 2),), keep={"Inputs", "Outputs"}),
        LevelMapping(keep={"Inputs"}), LevelMapping(keep={"Weights"}), LevelMapping(keep={"Outputs"}),
    ))
    ours = evaluate(arch, problem, mapping).stats("shared_glb", "Inputs").fills_per_instance
    default, _ = evaluate_timeloop(arch, problem, mapping, tool=timeloop)
    exact, _ = evaluate_timeloop(arch, problem, mapping, tool=dataclasses.replace(timeloop, extrapolate=False))
    assert ours == default.stats("shared_glb", "Inputs").fills_per_instance == 180
    assert exact.stats("shared_glb", "Inputs").fills_per_instance == 216


def _eyeriss_mapping(dram, glb, x, y):
    from quantloop.mapping import LevelMapping, Mapping

    return Mapping((
        LevelMapping(dram, keep={"Weights", "Inputs", "Outputs"}),
        LevelMapping(glb, x, y, keep={"Inputs", "Outputs"}),
        LevelMapping(keep={"Inputs"}), LevelMapping(keep={"Weights"}), LevelMapping(keep={"Outputs"}),
    ))


@pytest.mark.parametrize("problem, mapping, glb_reads, spad_reads, spad_fills", [
    # S3 on Y, Q7 temporal right above: one Q step later, PE s needs the input row PE s + 1 just had
    (Problem(G=4, P=4, Q=7, R=3, S=3),
     _eyeriss_mapping((("R", 3), ("P", 4), ("G", 2)), (("Q", 7),), (("G", 2),), (("S", 3),)), 432, 216, 120),
    # M2 × S2 on Y (and M2 on X): a multicast group leaves the glb only when all its PEs get the row over links
    (Problem(C=3, M=4, P=8, Q=7, R=2, S=2),
     _eyeriss_mapping((("C", 3), ("R", 2), ("P", 8)), (("Q", 7),), (("M", 2),), (("M", 2), ("S", 2))), 381, 409, 263),
])
def test_link_transfers_of_sliding_windows(timeloop, problem, mapping, glb_reads, spad_reads, spad_fills):
    """Overlapping windows spread over a fan-out: timeloop-model lets neighbouring PEs pass rows
    over links (costmodel/link_transfers.py). Without link transfers
    (TIMELOOP_DISABLE_LINK_TRANSFERS=1) the first case is 1008 glb reads and 168 reads and fills per
    ifmap_spad — what the cost model counted before it modelled them."""
    _assert_inputs_as_timeloop_counts(timeloop, load_target("eyeriss"), problem, mapping,
                                      ("shared_glb", glb_reads), ("ifmap_spad", spad_reads, spad_fills))


def _assert_inputs_as_timeloop_counts(timeloop, arch, problem, mapping, parent, child):
    """Ours and real Timeloop both give the expected Inputs reads at `parent` = (level, reads) and
    reads and fills at `child` = (level, reads, fills); energy and cycles agree."""
    from quantloop.costmodel.timeloop_engine import evaluate_timeloop

    ours = evaluate(arch, problem, mapping)
    theirs, _ = evaluate_timeloop(arch, problem, mapping, tool=timeloop)
    for r in (ours, theirs):
        assert r.stats(parent[0], "Inputs").reads_per_instance == parent[1]
        assert r.stats(child[0], "Inputs").reads_per_instance == child[1]
        assert r.stats(child[0], "Inputs").fills_per_instance == child[2]
    assert ours.total_energy_pj == pytest.approx(theirs.total_energy_pj, rel=1e-6)
    assert ours.cycles == theirs.cycles


def _mesh_mapping(dram, glb, x, y, inputs=(), weights=(), outputs=()):
    from quantloop.mapping import LevelMapping, Mapping

    return Mapping((
        LevelMapping(dram, keep={"Weights", "Inputs", "Outputs"}),
        LevelMapping(glb, x, y, keep={"Inputs", "Outputs"}),
        LevelMapping(inputs, keep={"Inputs"}), LevelMapping(weights, keep={"Weights"}),
        LevelMapping(outputs, keep={"Outputs"}),
    ))


@pytest.mark.parametrize("problem, mapping, glb_reads, reg_reads, reg_fills", [
    # Q2 on X, S3 on Y at stride 2: PE (q 1, s 0) and (q 0, s 2) read the same rows (multicast)
    (Problem(G=8, P=4, Q=4, R=3, S=3, Wstride=2, Hstride=2),
     _mesh_mapping((), (("P", 2), ("G", 2), ("Q", 2)), (("Q", 2),), (("S", 3),), inputs=(("G", 2),),
                   weights=(("R", 3), ("G", 2)), outputs=(("P", 2),)), 800, 192, 160),
    # R3 on X, P2 on Y at stride 1: coinciding windows and links between them (one group of two leaves
    # the GlobalBuffer only when both its PEs get the window over links)
    (Problem(G=8, P=4, Q=7, R=3, S=3),
     _mesh_mapping((("G", 2), ("P", 2)), (), (("R", 3),), (("P", 2),), inputs=(("G", 2), ("S", 3)),
                   weights=(("Q", 7), ("G", 2))), 504, 360, 144),
    # P2 and R2 both on Y
    (Problem(C=3, M=8, P=4, Q=7, R=2, S=2),
     _mesh_mapping((("Q", 7), ("P", 2)), (), (("M", 4),), (("P", 2), ("R", 2)), inputs=(("C", 3),),
                   weights=(("M", 2), ("S", 2))), 252, 168, 84),
])
def test_windows_over_a_2d_mesh(timeloop, problem, mapping, glb_reads, reg_reads, reg_fills):
    """Sliding dims on both axes of one fan-out (`tests/data/timeloop/pe_mesh`): Timeloop multicasts
    children whose windows coincide and links neighbours on the physical 4 × 4 mesh
    (costmodel/link_transfers.py, `coinciding_windows`)."""
    _assert_inputs_as_timeloop_counts(timeloop, load_target(str(DATA / "pe_mesh")), problem, mapping,
                                      ("GlobalBuffer", glb_reads), ("InputReg", reg_reads, reg_fills))
