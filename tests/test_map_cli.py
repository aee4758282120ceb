"""`quantloop map`: text and JSON output, Timeloop files that `quantloop cost` re-evaluates to the
same numbers, cache flags, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantloop.cli import main
from quantloop.problem import Problem
from quantloop.costmodel.timeloop_yaml import write_problem
from quantloop.targets.registry import BUILTIN_DIR

COST_KEYS = {"total_energy_pj", "cycles", "utilization", "macs", "mac_energy_pj", "per_level"}


@pytest.fixture
def problem_yaml(tmp_path) -> Path:
    path = tmp_path / "layer.yaml"
    write_problem(path, Problem(C=16, M=32, P=7, Q=7, R=3, S=3, name="conv"))
    return path


def _map_json(capsys, problem_yaml, *extra: str) -> dict:
    assert main(["map", "--target", "simba", "--problem", str(problem_yaml), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_output_has_loop_nest_costs_count_time_and_optimality(capsys, problem_yaml, tmp_path):
    assert main(["map", "--target", "eyeriss", "--problem", str(problem_yaml), "--bits", "w4a8",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DRAM [") and "<< Compute >>" in out
    assert "per level and data space" in out
    assert "legal mappings considered" in out and " s (searched)" in out
    assert "proven optimal" in out


def test_json_has_cost_keys_and_mapper_keys(capsys, problem_yaml, tmp_path):
    data = _map_json(capsys, problem_yaml, "--cache-dir", str(tmp_path / "c"), "--objective", "edp")
    assert COST_KEYS | {"mapping", "mappings_considered", "optimal", "seconds"} <= set(data)
    assert data["mappings_considered"] > 0 and isinstance(data["optimal"], bool)
    assert {"DRAM", "GlobalBuffer"} <= {entry["target"] for entry in data["mapping"]}


def test_emitted_timeloop_files_cost_the_same(capsys, problem_yaml, tmp_path):
    out = tmp_path / "tl"
    mapped = _map_json(capsys, problem_yaml, "--bits", "w4a4", "--emit-timeloop", str(out), "--no-cache")
    assert main(["cost", "--target", "simba", "--problem", str(out / "problem.yaml"),
                 "--mapping", str(out / "map.yaml"), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    for key in COST_KEYS:
        assert cost[key] == mapped[key], key


def test_cache_dir_hit_and_no_cache(capsys, problem_yaml, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    assert not _map_json(capsys, problem_yaml, "--cache-dir", str(cache))["cache_hit"]
    assert _map_json(capsys, problem_yaml, "--cache-dir", str(cache))["cache_hit"]
    monkeypatch.setenv("QUANTLOOP_CACHE_DIR", str(tmp_path / "env"))
    assert not _map_json(capsys, problem_yaml)["cache_hit"]
    assert list((tmp_path / "env").rglob("*.json"))
    nocache = _map_json(capsys, problem_yaml, "--no-cache")
    assert not nocache["cache_hit"]
    assert len(list((tmp_path / "env").rglob("*.json"))) == 1


def test_same_seed_same_output(capsys, problem_yaml):
    a = _map_json(capsys, problem_yaml, "--no-cache", "--seed", "5")
    b = _map_json(capsys, problem_yaml, "--no-cache", "--seed", "5")
    assert a["mapping"] == b["mapping"] and a["total_energy_pj"] == b["total_energy_pj"]


def _error(capsys, *args: str) -> str:
    assert main(["map", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("quantloop: error: ")
    return err


def test_no_legal_mapping_is_one_line_exit_2(capsys, tmp_path):
    text = (BUILTIN_DIR / "eyeriss.yaml").read_text()
    old = "factors: {N: 1, C: 1, R: 1, S: 1, P: 1, Q: 1}"
    assert old in text
    target = tmp_path / "tiny_psum.yaml"
    target.write_text(text.replace(old, "factors: {N: 1, C: 1, R: 1, S: 1, P: 1, Q: 1, M: 32}").replace("name: eyeriss", "name: tiny_psum"))
    layer = tmp_path / "wide.yaml"
    write_problem(layer, Problem(C=4, M=32, P=4, Q=4, name="wide"))
    err = _error(capsys, "--target", str(target), "--problem", str(layer), "--no-cache")
    assert "wide" in err and "psum_spad" in err and "512 bits" in err and "256 bits" in err
    # with the fork's 8-bit partial sums two share a 16-bit word, and the layer fits
    assert main(["map", "--target", str(target), "--problem", str(layer), "--bits", "w8a8", "--psum-bits", "outputs",
                 "--no-cache", "--json"]) == 0


def test_missing_problem_file(capsys, tmp_path):
    err = _error(capsys, "--target", "eyeriss", "--problem", str(tmp_path / "nope.yaml"), "--no-cache")
    assert "nope.yaml" in err
