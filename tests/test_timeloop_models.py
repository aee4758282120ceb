"""Every mapping the mapper emits for whole networks loads in real Timeloop as written and agrees.

At w8a8 (`compile(..., verify_timeloop=True)`, i.e. `quantloop compile --verify-timeloop`): every
emitted `timeloop/<layer>/` folder is evaluated in timeloop-model and total energy and cycles agree
within 1 % on every layer of MobileNetV2, ResNet-18 and the two digits models, on both targets.

At lower bits (w4a4) stock Timeloop cannot show every level's packing (one word width per level;
DRAM and the global buffers hold 4-bit inputs beside 8-bit partial sums), so the check is what it
can check: the emitted folder loads as written (Timeloop rejects mappings whose tiles overflow a
buffer, so it also fits), and every level × data space's reads, fills and updates in VALUES (what
Timeloop counts at a level written with narrower words, and at a level written as declared) equal
quantloop's counts of the same mapping at one value per word.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import quantloop
from quantloop.costmodel.model import evaluate
from quantloop.problem import Bits
from quantloop.costmodel.timeloop_engine import evaluate_folder
from quantloop.ir.accel import layers
from quantloop.targets.registry import load_target

NETWORKS = ["zoo:cnn_digits", "zoo:mobilenet_v2_digits", "zoo:mobilenet_v2", "zoo:resnet18"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["eyeriss", "simba"])
@pytest.mark.parametrize("model", NETWORKS)
def test_every_emitted_layer_agrees_with_timeloop_at_w8a8(timeloop, monkeypatch, tmp_path, model, target):
    monkeypatch.setenv("QUANTLOOP_TIMELOOP", timeloop.command[0])
    result = quantloop.compile(model, target=target, bits="w8a8", output_dir=tmp_path / "out", emit="timeloop",
                               verify_timeloop=True, workers=2)
    checks = result.timeloop_check
    assert len(checks) == len(result.layers) == len(list((tmp_path / "out" / "timeloop").iterdir()))
    assert not [c.name for c in checks if c.mixed_levels]
    bad = [(c.name, c.energy_diff, c.cycles_diff) for c in checks if c.flagged]
    assert not bad


@pytest.mark.slow
@pytest.mark.parametrize("target", ["eyeriss", "simba"])
def test_low_bit_mappings_load_fit_and_count_the_same_values(timeloop, tmp_path, target):
    out = tmp_path / "out"
    result = quantloop.compile("zoo:cnn_digits", target=target, bits="w4a4", output_dir=out, emit="timeloop")
    arch = load_target(target)
    for op in layers(result.module):
        problem, mapping = op.problem.to_costmodel(op.label), op.mapping.to_costmodel()
        folder = next(p for p in (out / "timeloop").iterdir() if (p / "README.md").read_text().startswith(f"# {op.label} "))
        theirs = evaluate_folder(folder, arch, None, tool=timeloop)  # counts as Timeloop reports them: values
        values = evaluate(arch, problem, mapping, Bits(), check=False)
        for s in values.per_level:
            t = theirs.stats(s.level, s.dataspace)
            assert (t.reads_per_instance, t.fills_per_instance, t.updates_per_instance) == (
                s.reads_per_instance, s.fills_per_instance, s.updates_per_instance), (op.label, s.level, s.dataspace)
