"""Constraints as Timeloop applies them, with timeloop-mapper as the bar.

Two imported designs: the exercises' eyeriss_like (row stationary; the bar is its recorded reference
run of pw1x1_C32_M64_P56, which is timeloop-mapper's best with the exercises' settings) and
c_on_x_m_on_y (a 2-D mesh whose arch.yaml says "C on X, M on Y"; the bar is a recorded timeloop-mapper
run with the exercises' settings, see tests/data/timeloop/c_on_x_m_on_y/README.md).

* Timeloop's own mapping obeys quantloop's reading of the constraints (quantloop is not stricter).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantloop.costmodel.model import evaluate
from quantloop.costmodel.problem import Bits
from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
from quantloop.targets.registry import load_target

DATA = Path(__file__).parent / "data" / "timeloop"
EYERISS_LAYER = DATA / "eyeriss_like" / "pw1x1_C32_M64_P56"
C_ON_X_LAYER = DATA / "c_on_x_m_on_y" / "pw1x1_C32_M64_P14"
CASES = {"eyeriss_like": (EYERISS_LAYER, "map.yaml"), "c_on_x_m_on_y": (C_ON_X_LAYER, "timeloop-mapper.map.yaml")}


def _axes(level_mapping) -> tuple[set[str], set[str]]:
    return ({d for d, f in level_mapping.spatial_x if f > 1}, {d for d, f in level_mapping.spatial_y if f > 1})


@pytest.mark.parametrize("design", list(CASES))
def test_timeloop_mappers_mapping_obeys_the_imported_constraints(design):
    layer, map_name = CASES[design]
    arch = load_target(DATA / design)
    problem, _ = read_problem(layer / "problem.yaml")
    theirs = read_mapping(layer / map_name, arch)
    evaluate(arch, problem, theirs, Bits(), check=True)  # raises if quantloop's constraints forbid it
    if design == "c_on_x_m_on_y":  # and Timeloop read "C on X, M on Y" as quantloop does
        assert _axes(theirs.levels[1]) == ({"C"}, {"M"})
