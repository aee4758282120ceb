"""Per-layer weight-scheme genes in the mixed-precision search: present only where the target's PEs
execute more than one scheme (eyeriss_hybrid), absent on single-scheme targets (eyeriss), and a
decoded candidate with a pot layer evaluates as a compile of its bits file does."""

from __future__ import annotations

import numpy as np
import pytest

from quantloop.frontend import import_onnx
from quantloop.runtime.accuracy import top1
from quantloop.runtime.dataset import load_dataset
from quantloop.runtime.fakequant_export import export_fakequant_onnx
from quantloop.ir import make_context
from quantloop.mapper import MapCache
from quantloop.options import DEFAULT_ACT_RANGE, DEFAULT_MAX_CALIB_SAMPLES, DEFAULT_WEIGHT_CLIP
from quantloop.passes.calibrate import first_samples
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.search.engine import target_schemes
from quantloop.passes.search.fakequant import FakeQuantEvaluator
from quantloop.passes.search.objectives import EnergyModel, layer_problems
from quantloop.passes.search.space import Config, build_space
from quantloop.targets.registry import load_target

MODEL = "zoo:cnn_digits"
WIDTHS = (4, 8)


@pytest.fixture(scope="module")
def module():
    m = import_onnx(MODEL)
    CanonicalizePass().apply(make_context(), m)
    return m


def space_for(module, target: str):
    return build_space(module, WIDTHS, target_schemes(load_target(target)))


def test_hybrid_target_has_one_scheme_gene_per_layer(module):
    space = space_for(module, "eyeriss_hybrid")
    n = len(space.layers)
    assert len(space.schemes) > 1 and "int" in space.schemes and "pot" in space.schemes
    assert space.n_genes == 3 * n
    low, high = space.bounds()
    assert list(high[2 * n :]) == [len(space.schemes) - 1] * n and list(high[: 2 * n]) == [len(WIDTHS) - 1] * (2 * n)
    per_layer = ["pot"] + ["int"] * (n - 1)
    config = space.decode(space.encode([8] * n, [8] * n, per_layer))
    assert config.scheme == tuple(per_layer) and config.layer_scheme(0) == "pot"
    assert config.calibration_scheme == "int"
    table = space.bits_file(config)
    assert [table[layer.name]["scheme"] for layer in space.layers] == per_layer
    assert space.config_from_table(_entries(table), "bits") == config
    # every layer at one scheme is the same candidate as that scheme for the whole model
    assert space.decode(space.encode([8] * n, [8] * n, ["pot"] * n)) == Config((8,) * n, (8,) * n, "pot")


def test_single_scheme_target_space_is_unchanged(module):
    space = space_for(module, "eyeriss")
    n = len(space.layers)
    assert space.schemes == ("int",) and space.n_genes == 2 * n
    genes = space.uniform(4, 8)
    assert len(genes) == 2 * n
    config = space.decode(genes)
    assert config == Config((4,) * n, (8,) * n, "int") and config.label() == "w4a8"
    assert all("scheme" not in entry for entry in space.bits_file(config).values())


def _entries(table):
    from quantloop.passes.assign_bits import parse_bits_table

    return parse_bits_table(table, "bits")


def test_decoded_pot_layer_evaluates_as_its_compile(module, tmp_path):
    """Energy (mapper, per layer) and accuracy (exact fake-quant model) of a candidate whose first
    layer is pot equal a compile of its bits file on eyeriss_hybrid."""
    from quantloop.driver import compile as compile_model

    target = "eyeriss_hybrid"
    space = space_for(module, target)
    n = len(space.layers)
    config = space.decode(space.encode([4] + [8] * (n - 1), [8] * n, ["pot"] + ["int"] * (n - 1)))
    assert config.layer_scheme(0) == "pot"
    cache_dir = str(tmp_path / "cache")

    calib = load_dataset("zoo:digits-calib")[0]
    val_x, val_y = load_dataset("zoo:digits-val")
    batch = space.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    evaluator = FakeQuantEvaluator(
        space, first_samples(calib, batch, DEFAULT_MAX_CALIB_SAMPLES), weight_clip=DEFAULT_WEIGHT_CLIP,
        act_range=DEFAULT_ACT_RANGE,
    )
    accuracy = evaluator.top1(config, val_x, val_y)
    names, problems, _ = layer_problems(module, target)
    energy = EnergyModel(problems, names, load_target(target), "energy", cache=MapCache(cache_dir))
    energy_pj, cycles = energy.totals(space.layer_bits(config), config.scheme)

    compiled = compile_model(MODEL, target=target, bits_table=space.bits_file(config),
                             weight_scheme=config.calibration_scheme, data="zoo:digits-calib", cache_dir=cache_dir)
    assert [layer.operand_bits["Weights"]["scheme"] for layer in compiled.layers] == list(config.scheme)
    assert sum(layer.energy_pj for layer in compiled.layers) == pytest.approx(energy_pj, rel=1e-9)
    assert sum(int(layer.cycles) for layer in compiled.layers) == cycles
    assert top1(export_fakequant_onnx(compiled.qnn_module), val_x, val_y) == pytest.approx(accuracy, abs=1e-12)
    # the pot layer really is pot: different from the all-int candidate
    all_int = Config(config.weights, config.activations, "int")
    assert energy.totals(space.layer_bits(all_int), "int")[0] != energy_pj


def test_small_population_starts_with_every_scheme_on_a_hybrid_target(module):
    """Presets come in each of the target's schemes, interleaved: four candidates already include
    power-of-two ones (a small search reaches pot layers); a single-scheme target keeps its int presets."""
    from quantloop.passes.search.nsga import initial_population

    hybrid = space_for(module, "eyeriss_hybrid")
    n = len(hybrid.layers)
    start = [hybrid.decode(g) for g in initial_population(hybrid, 4, seed=0)]
    assert [c.scheme for c in start] == ["int", "pot", "int", "pot"]
    assert [c.label() for c in start] == ["w8a8", "w8a8:pot", "w4a8", "w4a8:pot"]
    presets = [hybrid.decode(g) for g in initial_population(hybrid, 10, seed=0)]  # 3 uniform + 2 edge, x 2 schemes
    assert presets[-2].scheme == "int" and presets[-1].scheme == ("int",) + ("pot",) * (n - 2) + ("int",)
    assert presets[-1].weights == (8,) + (4,) * (n - 2) + (8,)

    plain = space_for(module, "eyeriss")
    start = [plain.decode(g) for g in initial_population(plain, 5, seed=0)]
    assert [c.label() for c in start] == ["w8a8", "w4a8", "w4a4", "mixed", "mixed"]
    assert [c.activations[1] for c in start[3:]] == [8, 4] and all(c.scheme == "int" for c in start)
