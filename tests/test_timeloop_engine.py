"""Emitted Timeloop inputs load in real timeloop-model and reproduce quantloop's numbers.

Tests that run Timeloop take the `timeloop` fixture (conftest): skipped, with the reason in the
summary, when no timeloop-model is found through QUANTLOOP_TIMELOOP or PATH.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from quantloop.costmodel.model import evaluate
from quantloop.problem import Bits, Problem
from quantloop.costmodel.timeloop_engine import evaluate_timeloop, find_timeloop, layer_inputs
from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
from quantloop.errors import QuantloopError
from quantloop.targets.registry import load_target

REF = Path(os.environ["QUANTLOOP_REFERENCE_DIR"])
MASTER = [c["path"] for c in json.loads((REF / "index.json").read_text())["cases"] if c["tool"] == "timeloop-master"]


def _case(path: str):
    arch = load_target("eyeriss" if path.startswith("eyeriss") else "simba")
    problem, _ = read_problem(REF / path / "problem.yaml")
    return arch, problem, read_mapping(REF / path / "map.yaml", arch)


def assert_agrees(ours, theirs, energy_rel=1e-6, level_rel=1e-6):
    """Total energy, cycles and every level × data space energy (Timeloop prints 0.01 pJ)."""
    assert theirs.total_energy_pj == pytest.approx(ours.total_energy_pj, rel=energy_rel)
    assert theirs.cycles == pytest.approx(ours.cycles, rel=energy_rel)
    assert {(s.level, s.dataspace) for s in theirs.per_level} == {(s.level, s.dataspace) for s in ours.per_level}
    for s in ours.per_level:
        t = theirs.stats(s.level, s.dataspace)
        assert t.energy_pj == pytest.approx(s.energy_pj, rel=level_rel, abs=0.01), (s.level, s.dataspace)


def test_without_timeloop_the_error_says_how_to_point_to_one(monkeypatch, tmp_path):
    monkeypatch.delenv("QUANTLOOP_TIMELOOP", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QuantloopError, match="QUANTLOOP_TIMELOOP") as err:
        find_timeloop()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("QUANTLOOP_TIMELOOP", str(tmp_path / "nothing"))
    with pytest.raises(QuantloopError, match="no executable timeloop-model"):
        find_timeloop()


@pytest.mark.parametrize("path", ["eyeriss_like/default_problem", "simba_like/dw3x3_G64_P56"])
def test_written_mapping_has_no_spatial_entry_without_fan_out_and_no_g_without_groups(path):
    arch, problem, mapping = _case(path)
    entries = layer_inputs(arch, problem, mapping).documents["map.yaml"]["mapping"]
    fanning = {s.name for lvl in arch.levels for s in lvl.spatial_stages if s.fanout_x * s.fanout_y > 1}
    fanning |= {lvl.name for lvl in arch.levels if not lvl.spatial_stages and lvl.fanout > 1}
    assert {e["target"] for e in entries if e["type"] == "spatial"} <= fanning
    loops = [e for e in entries if e["type"] in ("temporal", "spatial")]
    has_g = problem.G > 1
    assert all(("G" in e["permutation"]) == has_g and ("G" in e["factors"]) == has_g for e in loops)


@pytest.mark.parametrize("path", ["eyeriss_like/default_problem", "simba_like/pw1x1_C32_M64_P56"])
def test_written_inputs_reproduce_quantloop_in_timeloop(timeloop, path):
    arch, problem, mapping = _case(path)
    theirs, emulation = evaluate_timeloop(arch, problem, mapping, tool=timeloop)
    assert emulation.exact
    assert_agrees(evaluate(arch, problem, mapping), theirs)


@pytest.mark.slow
@pytest.mark.parametrize("path", MASTER)
def test_every_reference_case_written_by_quantloop_reproduces_the_recorded_run(timeloop, path):
    arch, problem, mapping = _case(path)
    theirs, _ = evaluate_timeloop(arch, problem, mapping, tool=timeloop)
    expected = json.loads((REF / path / "expected.json").read_text())
    assert theirs.total_energy_pj == pytest.approx(expected["total_energy_pj"], rel=1e-6)
    assert theirs.cycles == expected["cycles"]


def test_packed_bits_are_emulated_through_word_widths(timeloop):
    """With 4-bit values and the fork's 4-bit partial sums every level packs all it keeps alike,
    so stock Timeloop, given narrower words, reproduces quantloop's packed counts (2 values per
    8-bit word, 4 partial sums per 16-bit psum_spad word)."""
    arch, problem, mapping = _case("eyeriss_like/pw1x1_C32_M64_P56")
    bits = Bits(4, 4, 4, psum="outputs")
    theirs, emulation = evaluate_timeloop(arch, problem, mapping, bits, tool=timeloop)
    assert emulation.exact and emulation.values_per_word == (2, 2, 2, 2, 4)
    assert_agrees(evaluate(arch, problem, mapping, bits), theirs)


def test_levels_that_pack_data_spaces_differently_are_named():
    """At w4a4 with 8-bit accumulators DRAM and shared_glb hold 4-bit inputs (2 per word) beside
    8-bit partial sums (1 per word): stock Timeloop has one word width per level."""
    arch, problem, mapping = _case("eyeriss_like/pw1x1_C32_M64_P56")
    inputs = layer_inputs(arch, problem, mapping, Bits(4, 4, 4))
    assert inputs.emulation.mixed == ("DRAM", "shared_glb")


def test_partial_sums_at_accumulator_width_agree_with_stock_timeloop_at_w8a8(timeloop):
    """Simba's 24-bit PEAccuBuffer holds one 16-bit partial sum per word at w8a8, as stock Timeloop
    does; the fork's convention (8-bit partial sums, 3 per word) would not."""
    arch, problem, mapping = _case("simba_like/pw1x1_C32_M64_P56")
    w8a8 = evaluate(arch, problem, mapping, Bits.parse("w8a8"))
    fork = evaluate(arch, problem, mapping, Bits(8, 8, 8, psum="outputs"))
    theirs, emulation = evaluate_timeloop(arch, problem, mapping, Bits.parse("w8a8"), tool=timeloop)
    assert emulation.values_per_word == (1,) * arch.num_levels
    assert_agrees(w8a8, theirs)
    acc = "PEAccuBuffer", "Outputs"
    assert fork.stats(*acc).updates_per_instance * 3 <= w8a8.stats(*acc).updates_per_instance + 2


def _cost_argv(*extra):
    folder = REF / "eyeriss_like/pw1x1_C32_M64_P56"
    return ["cost", "--target", "eyeriss", "--problem", str(folder / "problem.yaml"),
            "--mapping", str(folder / "map.yaml"), *extra]


def test_cost_engine_timeloop_without_one_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from quantloop.cli import main

    monkeypatch.delenv("QUANTLOOP_TIMELOOP", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(_cost_argv("--engine", "timeloop")) == 2
    err = capsys.readouterr().err.strip()
    assert "QUANTLOOP_TIMELOOP" in err and "\n" not in err


def test_cost_engine_timeloop_prints_the_same_json(timeloop, monkeypatch, capsys):
    from quantloop.cli import main

    monkeypatch.setenv("QUANTLOOP_TIMELOOP", timeloop.command[0])
    assert main(_cost_argv("--json", "--bits", "w8a8")) == 0
    ours = json.loads(capsys.readouterr().out)
    assert main(_cost_argv("--json", "--bits", "w8a8", "--engine", "timeloop")) == 0
    theirs = json.loads(capsys.readouterr().out)
    assert set(theirs) == set(ours)
    assert theirs["total_energy_pj"] == pytest.approx(ours["total_energy_pj"], rel=1e-6)
    assert theirs["cycles"] == ours["cycles"]
    for a, b in zip(ours["per_level"], theirs["per_level"]):
        assert (a["level"], a["dataspace"], a["reads_per_instance"], a["updates_per_instance"]) == (
            b["level"], b["dataspace"], b["reads_per_instance"], b["updates_per_instance"])
    assert main(_cost_argv("--engine", "timeloop")) == 0
    assert "psum_spad" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_verify_timeloop_checks_every_emitted_layer(timeloop, monkeypatch, tmp_path, capsys):
    from quantloop.cli import main

    monkeypatch.setenv("QUANTLOOP_TIMELOOP", timeloop.command[0])
    out = tmp_path / "out"
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "-o", str(out), "--verify-timeloop", "-q",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    layers = len(list((out / "timeloop").iterdir()))
    assert f"Timeloop agrees within 1% on {layers}/{layers} layers" in text


def test_compile_verify_timeloop_without_one_fails_before_any_work(monkeypatch, tmp_path, capsys):
    from quantloop.cli import main

    monkeypatch.delenv("QUANTLOOP_TIMELOOP", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "out"
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "-o", str(out), "--verify-timeloop", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "QUANTLOOP_TIMELOOP" in err and "\n" not in err
    assert not out.exists()
