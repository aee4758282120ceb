"""`quantloop compile --psum-bits` / `psum_bits=`: the partial-sum mode reaches every layer's bits, the
mapper, the cost and the report (`CompileOptions.psum_bits`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import quantloop
from quantloop.cli import main
from quantloop.costmodel.model import evaluate
from quantloop.ir.accel import layers
from quantloop.targets.registry import load_target


def _costs(result) -> dict[str, tuple[float, float]]:
    """Per layer: its energy evaluated with partial sums at the accumulator width and at the Outputs width."""
    arch = load_target("eyeriss")
    costs = {}
    for op in layers(result.module):
        bits = op.bits.to_costmodel()
        problem, mapping = op.problem.to_costmodel(op.label), op.mapping.to_costmodel()
        costs[op.label] = tuple(
            evaluate(arch, problem, mapping, dataclasses.replace(bits, psum=mode), check=False).total_energy_pj
            for mode in ("accumulator", "outputs")
        )
    return costs


def test_psum_bits_outputs_reaches_mapping_cost_and_report(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "--psum-bits", "outputs", "-o", str(out), "-q"]) == 0
    reported = {layer["name"]: layer["energy_pj"] for layer in json.loads((out / "report.json").read_text())["layers"]}

    fork = quantloop.compile("zoo:cnn_digits", target="eyeriss", psum_bits="outputs")
    assert {op.bits.to_costmodel().psum for op in layers(fork.module)} == {"outputs"}
    assert "psum = outputs" in str(fork.module)  # recorded in the IR, so the emitted files follow it
    fork_costs = _costs(fork)
    # the flag and the keyword are the same option; each layer's energy is its mapping costed the fork's way
    assert reported == pytest.approx({name: outputs for name, (_, outputs) in fork_costs.items()}, rel=1e-12)

    default = quantloop.compile("zoo:cnn_digits", target="eyeriss")
    assert {op.bits.to_costmodel().psum for op in layers(default.module)} == {"accumulator"}
    default_costs = _costs(default)
    assert {layer.name: layer.energy_pj for layer in default.layers} == pytest.approx(
        {name: acc for name, (acc, _) in default_costs.items()}, rel=1e-12)
    # some layer stores partial sums (else the mode could not show): there the two compiles differ
    stored = [name for name, (acc, outputs) in default_costs.items() if acc != outputs]
    assert stored
    assert sum(reported.values()) < sum(layer.energy_pj for layer in default.layers)
