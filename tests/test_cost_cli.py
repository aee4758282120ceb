"""`quantloop cost`: output formats, bit-width flags and one-line errors for bad input."""

from __future__ import annotations

import os
import json
from pathlib import Path

import pytest
import yaml

from quantloop.targets.template import resolve  # the built-in is a template (parameters, PE types)

from quantloop.cli import main
from quantloop.targets import registry

REF = Path(os.environ["QUANTLOOP_REFERENCE_DIR"]) / "eyeriss_like"
PW = REF / "pw1x1_C32_M64_P56"


def _cost(*extra: str, target: str = "eyeriss", problem: Path = PW / "problem.yaml", mapping: Path = PW / "map.yaml"):
    return main(["cost", "--target", target, "--problem", str(problem), "--mapping", str(mapping), *extra])


def _error(capsys, *args, **kwargs) -> str:
    assert _cost(*args, **kwargs) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("quantloop: error: ")
    return err


def _edited_map(tmp_path: Path, edits: dict[tuple[str, str], str]) -> Path:
    entries = yaml.safe_load((PW / "map.yaml").read_text())["mapping"]
    for e in entries:
        if (e["target"], e["type"]) in edits:
            e["factors"] = edits[(e["target"], e["type"])]
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump({"mapping": entries}))
    return path


def test_table_output(capsys):
    assert _cost() == 0
    out = capsys.readouterr().out
    assert "83,565,347" in out and "psum_spad" in out and "cycles 57,344" in out


def test_json_keys(capsys):
    assert _cost("--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert {"total_energy_pj", "cycles", "utilization", "macs", "mac_energy_pj", "per_level"} <= set(got)
    assert set(got["per_level"][0]) >= {"level", "dataspace", "reads_per_instance", "fills_per_instance",
                                        "updates_per_instance", "energy_pj"}


def test_flags_override_the_problem_bitwidths(capsys):
    expected = json.loads((REF / "quant/I8_W8_O8/expected.json").read_text())["total_energy_pj"]
    w4 = REF / "quant/I8_W4_O8/problem.yaml"
    fork = ("--mac-energy", "fixed", "--psum-bits", "outputs")  # the quantization fork's conventions
    assert _cost("--json", *fork, "--bits-weights", "8", problem=w4) == 0
    assert json.loads(capsys.readouterr().out)["total_energy_pj"] == pytest.approx(expected, rel=1e-12)
    assert _cost("--json", *fork, "--bits", "w8a8", problem=w4) == 0
    assert json.loads(capsys.readouterr().out)["total_energy_pj"] == pytest.approx(expected, rel=1e-12)


def test_partial_sums_at_accumulator_width_match_stock_timeloop_at_w8a8(capsys):
    """psum_spad (16-bit words) holds one 16-bit partial sum per word at w8a8: the stock run's
    numbers, where the fork's convention (8-bit partial sums, 2 per word) gives fewer accesses."""
    stock = json.loads((REF / "pw1x1_C32_M64_P56/expected.json").read_text())
    assert _cost("--json", "--mac-energy", "fixed", "--bits", "w8a8") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["total_energy_pj"] == pytest.approx(stock["total_energy_pj"], rel=1e-9)
    psum = next(r for r in got["per_level"] if r["level"] == "psum_spad")
    assert _cost("--json", "--mac-energy", "fixed", "--bits", "w8a8", "--psum-bits", "outputs") == 0
    fork = next(r for r in json.loads(capsys.readouterr().out)["per_level"] if r["level"] == "psum_spad")
    assert fork["updates_per_instance"] * 2 == psum["updates_per_instance"]


def test_bits_change_mac_energy_unless_fixed(capsys):
    assert _cost("--json", "--bits", "w4a8") == 0
    scaled = json.loads(capsys.readouterr().out)["mac_energy_pj"]
    assert _cost("--json", "--bits", "w4a8", "--mac-energy", "fixed") == 0
    fixed = json.loads(capsys.readouterr().out)["mac_energy_pj"]
    assert scaled < fixed


def test_bits_wider_than_a_word(capsys):
    err = _error(capsys, "--bits", "w8a8o16")
    assert "Outputs are 16 bits, wider than the 8-bit word of level DRAM" in err


def test_misspelled_and_missing_target_keys(capsys, tmp_path):
    spec = resolve(yaml.safe_load((Path(registry.__file__).parent / "eyeriss.yaml").read_text()), {}, "eyeriss")
    spec["levels"][2]["dept"] = spec["levels"][2].pop("depth")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    assert f"{bad}: levels.2.dept: unknown key (misspelled?)" in _error(capsys, target=str(bad))
    spec["levels"][2]["depth"] = spec["levels"][2].pop("dept")
    del spec["compute"]["energy_pj"]
    bad.write_text(yaml.safe_dump(spec))
    assert f"{bad}: compute.energy_pj: required key is missing" in _error(capsys, target=str(bad))


def test_level_too_small(capsys, tmp_path):
    spec = resolve(yaml.safe_load((Path(registry.__file__).parent / "eyeriss.yaml").read_text()), {}, "eyeriss")
    spec["levels"][4]["width"] = 8  # psum_spad has 16-bit words
    bad = tmp_path / "small.yaml"
    bad.write_text(yaml.safe_dump(spec))
    assert "levels.4: level too small to hold anything" in _error(capsys, target=str(bad))


def test_factors_do_not_multiply(capsys, tmp_path):
    m = _edited_map(tmp_path, {("DRAM", "temporal"): "C2 M4 R1 S1 N1 P7 Q1 G1"})
    assert "the factors of P multiply to 28, but the problem has P = 56" in _error(capsys, mapping=m)


def test_capacity_exceeded(capsys, tmp_path):
    m = _edited_map(tmp_path, {("DRAM", "temporal"): "C1 M1 R1 S1 N1 P1 Q1 G1",
                               ("shared_glb", "temporal"): "C2 M4 R1 S1 N1 P56 Q8 G1"})
    err = _error(capsys, mapping=m)
    assert "capacity exceeded at level shared_glb: tiles need 2408448 bits (301056 words of 8 bits), 1048576 bits available" in err


def test_constraint_broken(capsys, tmp_path):
    m = _edited_map(tmp_path, {("psum_spad", "temporal"): "C2 M1 R1 S1 N1 P1 Q1 G1",
                               ("weights_spad", "temporal"): "C8 M1 R1 S1 N1 P1 Q1 G1"})
    assert "level psum_spad breaks the constraint temporal.factors C=1 (mapping has C=2)" in _error(capsys, mapping=m)


def test_unknown_level_in_mapping(capsys):
    assert "unknown level 'psum_spad'" in _error(capsys, target="simba")


def test_missing_files(capsys, tmp_path):
    assert "cannot read" in _error(capsys, problem=tmp_path / "none.yaml")
    assert "target file not found" in _error(capsys, target=str(tmp_path / "none.yaml"))
