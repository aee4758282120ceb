"""The synergy decomposition: its parts add up to the total saving, and re-mapping warm-started
from the kept w8a8 mapping never loses in the objective."""

from __future__ import annotations

import pytest

from quantloop.costmodel.model import evaluate
from quantloop.problem import Bits, Problem
from quantloop.mapper import map_layer
from quantloop.mapper.search import Budget
from quantloop.passes.search.synergy import METRICS, PARTS, LayerInput, decompose
from quantloop.targets.registry import load_target

SMALL = Budget(samples=300, starts=2, max_steps=10, evaluations=4_000)
LAYERS = [
    ("conv", Problem(C=16, M=16, P=8, Q=8, R=3, S=3), Bits(4, 4, 4)),
    ("dw", Problem(G=16, P=8, Q=8, R=3, S=3), Bits(6, 3, 3)),
    ("fc", Problem(C=64, M=10), Bits(2, 5, 8)),
]


def _decomposition(target: str, objective: str) -> dict:
    arch = load_target(target)

    def map_one(problem, bits, seed, warm_start):
        return map_layer(problem, arch, bits, objective, seed=seed, budget=SMALL, warm_start=warm_start)

    layers = [LayerInput(name, p, map_one(p, Bits(8, 8, 8), 0, None).mapping, bits) for name, p, bits in LAYERS]
    return decompose(arch, layers, objective, map_one=map_one)


@pytest.mark.parametrize("target, objective", [("eyeriss", "energy"), ("simba_paper", "edp")])
def test_parts_add_up_to_the_total_saving(target, objective):
    d = _decomposition(target, objective)
    for metric in METRICS:
        parts = d["parts"][metric]
        assert sum(parts[p] for p in PARTS) == pytest.approx(parts["total"], abs=1e-12)
        w8a8, remapped = d["states"]["w8a8"][metric], d["states"]["remapped"][metric]
        assert parts["total"] == pytest.approx((w8a8 - remapped) / w8a8, abs=1e-12)
    metric = {"energy": "energy_pj", "edp": "edp"}[objective]
    assert d["parts"][metric]["remapping"] >= -1e-12  # the warm start: no negative synergy from a mapper miss
    assert d["parts"]["cycles"]["mac_energy"] == 0.0
    if target == "simba_paper":  # the fork's fixed MAC energy: the bits save nothing in the MACs
        assert d["parts"]["energy_pj"]["mac_energy"] == 0.0
    else:
        assert d["parts"]["energy_pj"]["mac_energy"] > 0.0
    for t in d["traffic"]:
        if t["level"] == "DRAM":
            assert t["remapped_words"] >= t["compulsory_words"] > 0


def test_warm_start_is_never_worse_than_the_mapping_it_starts_from():
    arch = load_target("eyeriss")
    problem = Problem(C=16, M=16, P=8, Q=8, R=3, S=3)
    w8a8 = map_layer(problem, arch, Bits(8, 8, 8), "energy", budget=SMALL).mapping
    bits = Bits(4, 4, 4)
    kept = evaluate(arch, problem, w8a8, bits)
    for seed in range(3):
        warm = map_layer(problem, arch, bits, "energy", seed=seed, budget=Budget(samples=5, starts=1, max_steps=1,
                                                                                 evaluations=50), warm_start=w8a8)
        assert warm.cost.total_energy_pj <= kept.total_energy_pj * (1 + 1e-12)
