"""Timeloop v0.4 problem / mapping YAML: reading the reference files, write → read round trips,
and the map.txt-style loop nest."""

from __future__ import annotations

import os
import json
from pathlib import Path

import pytest

from quantloop.costmodel.model import evaluate
from quantloop.problem import Bits, Problem
from quantloop.costmodel.random_mappings import random_mappings
from quantloop.costmodel.timeloop_yaml import (
    format_map_txt,
    read_mapping,
    read_problem,
    write_mapping,
    write_problem,
)
from quantloop.errors import QuantloopError
from quantloop.targets.registry import load_target

REF = Path(os.environ["QUANTLOOP_REFERENCE_DIR"])
CASES = json.loads((REF / "index.json").read_text())["cases"] if REF.is_dir() else []
assert CASES, "no Timeloop reference cases found"


def _arch(path: str):
    return load_target("eyeriss" if path.startswith("eyeriss") else "simba")


@pytest.mark.parametrize("case", CASES, ids=[c["path"] for c in CASES])
def test_reference_files_read_and_round_trip(tmp_path, case):
    folder = REF / case["path"]
    arch = _arch(case["path"])
    exp = json.loads((folder / "expected.json").read_text())
    problem, bits = read_problem(folder / "problem.yaml")
    p = exp["problem"]
    assert (problem.C, problem.M, problem.P, problem.Q, problem.R, problem.S, problem.G) == (
        p["C"], p["M"], p["P"], p["Q"], p["R"], p["S"], p["G"])
    assert problem.input_width == p["input_extent_RP"] and problem.input_height == p["input_extent_SQ"]
    assert problem.tensor_sizes == p["tensor_sizes"] and problem.macs == p["macs"]
    if any(v is not None for v in exp["bits"].values()):
        assert bits == Bits(exp["bits"]["Weights"], exp["bits"]["Inputs"], exp["bits"]["Outputs"])
    else:
        assert bits is None
    mapping = read_mapping(folder / "map.yaml", arch)
    storage = [m for m in exp["mapping"] if not m.get("dummy")]
    for level, want in zip(mapping.levels, storage):
        assert list(level.temporal) == [tuple(x) for x in want["temporal"]]
        assert level.keep == frozenset(want["keeps"])
    write_mapping(tmp_path / "m.yaml", arch, mapping)
    write_problem(tmp_path / "p.yaml", problem, bits)
    assert read_mapping(tmp_path / "m.yaml", arch) == mapping
    assert read_problem(tmp_path / "p.yaml") == (problem, bits)


@pytest.mark.parametrize("target", ["eyeriss", "simba"])
def test_random_mappings_round_trip(tmp_path, target):
    arch = load_target(target)
    problem = Problem(G=2, C=16, M=24, P=14, Q=28, R=3, S=3, Wstride=2, name="x")
    for i, mapping in enumerate(random_mappings(arch, problem, 30, 11).mappings()):
        path = tmp_path / f"m{i}.yaml"
        write_mapping(path, arch, mapping)
        assert read_mapping(path, arch) == mapping


def test_problem_without_g_and_with_common_bitwidth(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("problem:\n  instance: {C: 3, M: 32, P: 112, Q: 112, R: 3, S: 3, N: 1, Wstride: 2, Hstride: 2, commonBitwidth: 4}\n")
    problem, bits = read_problem(path)
    assert problem.G == 1 and problem.input_width == 225
    assert bits == Bits(4, 4, 4)


def test_bad_problem_and_mapping_files(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("problem:\n  instance: {C: 3, M: 0, P: 1, Q: 1, R: 1, S: 1}\n")
    with pytest.raises(QuantloopError, match=r"problem.instance.M: expected a positive integer"):
        read_problem(path)
    m = tmp_path / "m.yaml"
    m.write_text("mapping:\n  - {target: DRAM, type: temporal, factors: C2 X4, permutation: CX}\n")
    with pytest.raises(QuantloopError, match=r"unknown dim 'X'"):
        read_mapping(m, load_target("eyeriss"))
    m.write_text("mapping:\n  - {target: inter_PE_spatial, type: temporal, factors: C2, permutation: C}\n")
    with pytest.raises(QuantloopError, match=r"temporal loops .* at the spatial-only level inter_PE_spatial"):
        read_mapping(m, load_target("eyeriss"))


def test_format_map_txt_matches_timeloop_loops():
    folder = REF / "eyeriss_like/pw1x1_C32_M64_P56"
    arch = load_target("eyeriss")
    problem, _ = read_problem(folder / "problem.yaml")
    text = format_map_txt(arch, read_mapping(folder / "map.yaml", arch), problem)
    theirs = (folder / "timeloop-model.map.txt").read_text()
    loops = [line.split("for ")[1] for line in text.splitlines() if "for " in line]
    their_loops = [line.split("for ")[1] for line in theirs.splitlines() if "for " in line]
    assert loops == their_loops
    assert "shared_glb [ Inputs:3584 Outputs:3584 ]" in text and "<< Compute >>" in text
