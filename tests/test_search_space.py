"""qnn-search-bits without the mapper: search space, bits file, fake-quant evaluator, bad input.

The evaluator's exactness against the exporter is checked here (one onnxruntime session fed
with scales and weights equals `export_fakequant_onnx` of the same bits, bit for bit); the
exporter itself against numpy is covered by tests/test_fakequant*.py.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
import pytest

from quantloop.errors import QuantloopError
from quantloop.frontend import import_onnx
from quantloop.runtime.dataset import load_dataset
from quantloop.ir import make_context
from quantloop.ir.accel import layers
from quantloop.ir.quantization import activation_params, fake_quant
from quantloop.passes.accel_lower import AccelLowerPass
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.search.engine import Point, check_widths, pareto_front
from quantloop.passes.search.fakequant import FakeQuantEvaluator, check_inputs, fakequant_graph
from quantloop.passes.search.objectives import EnergyModel, weight_bytes
from quantloop.passes.search.space import Config, build_space, parse_bits_range
from quantloop.passes.search_bits import add_search_arguments, apply_bits, search_settings
from quantloop.targets.registry import load_target

WIDTHS = (2, 3, 4, 5, 6, 7, 8)


def canonical(spec: str):
    module = import_onnx(spec)
    CanonicalizePass().apply(make_context(), module)
    return module


@pytest.fixture(scope="module")
def mnv2():
    return canonical("zoo:mobilenet_v2_digits")


@pytest.fixture(scope="module")
def space(mnv2):
    return build_space(mnv2, WIDTHS)


@pytest.fixture(scope="module")
def evaluator(space):
    return FakeQuantEvaluator(space, load_dataset("zoo:digits-calib")[0], weight_clip="minmax", act_range="minmax")


def random_config(space, seed: int) -> Config:
    low, high = space.bounds()
    return space.decode(np.random.default_rng(seed).integers(low, high + 1))


def test_bits_range_parsing():
    assert parse_bits_range("2..8") == WIDTHS
    assert parse_bits_range("4..16") == (4, 5, 6, 7, 8, 16)
    assert parse_bits_range("8,4,6") == (4, 6, 8)
    for bad in ("8..2", "two..8", "1..1", "9..12", "4,9", "4,x"):
        with pytest.raises(QuantloopError, match="--bits-range"):
            parse_bits_range(bad)


def test_bits_range_the_target_cannot_hold_names_level_and_width():
    with pytest.raises(QuantloopError, match=r"16-bit values do not fit the 8-bit word of level DRAM of target eyeriss"):
        check_widths(load_target("eyeriss"), parse_bits_range("2..16"))


def test_space_has_every_compute_layer_including_depthwise(space, mnv2):
    ctx = make_context()
    lowered = mnv2.clone()
    apply_bits(lowered, {}, ctx)
    AccelLowerPass(target="eyeriss").apply(ctx, lowered)
    accel = layers(lowered)
    assert [layer.name for layer in space.layers] == [op.label for op in accel]
    assert any(op.kind.data == "depthwise" and op.problem.data.G > 1 for op in accel)
    assert space.n_genes == 2 * len(space.layers)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bits_file_reproduces_the_candidate_through_assign_bits(space, mnv2, seed):
    """The chosen point compiles with --bits-file: accel-lower sees exactly the searched (w, in, out) bits."""
    config = random_config(space, seed)
    module = mnv2.clone()
    ctx = make_context()
    apply_bits(module, space.bits_file(config), ctx)
    AccelLowerPass(target="eyeriss").apply(ctx, module)
    lowered = [tuple(op.bits.data.__getattribute__(k).bits for k in ("weights", "inputs", "outputs")) for op in layers(module)]
    assert lowered == space.layer_bits(config)


def test_residual_add_keeps_the_wider_operand(space):
    add = next(q for q in space.quantizers if q.rule[0] == "max" and len(q.rule[1]) == 2)
    config = random_config(space, 5)
    bits = space.tensor_bits(config)
    assert bits[add.tensor] == max(bits[t] for t in add.rule[1])


def test_genes_round_trip(space):
    config = random_config(space, 3)
    assert space.decode(space.encode(list(config.weights), list(config.activations))) == config
    assert space.decode(space.uniform(4, 8)).label() == "w4a8"


def test_default_calibration_keeps_low_bit_accuracy(space, evaluator):
    """The defaults (MSE weight clipping, percentile ranges) beat min-max at uniform w3a4 on the validation split."""
    x, y = load_dataset("zoo:digits-val")
    default = FakeQuantEvaluator(space, load_dataset("zoo:digits-calib")[0])
    config = space.decode(space.uniform(3, 4))
    assert default.top1(config, x, y) > evaluator.top1(config, x, y) + 0.1  # measured: 0.92 vs 0.70


def _reference_session(model):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("seed, clip, act_range", [(0, "minmax", "minmax"), (1, "minmax", "minmax"), (2, "mse", "percentile")])
def test_evaluator_equals_the_fakequant_export_bit_for_bit(space, mnv2, evaluator, seed, clip, act_range):
    """One session fed with a candidate's scales and weights = assign-bits + calibrate + export_fakequant_onnx."""
    from quantloop.runtime.fakequant_export import export_fakequant_onnx
    from quantloop.passes.calibrate import CalibratePass

    if (clip, act_range) != ("minmax", "minmax"):
        evaluator = FakeQuantEvaluator(
            space, load_dataset("zoo:digits-calib")[0], weight_clip=clip, act_range=act_range, percentile=99.9
        )
    config = random_config(space, seed)
    module = mnv2.clone()
    ctx = make_context()
    apply_bits(module, space.bits_file(config), ctx)
    CalibratePass(data="zoo:digits-calib", weight_clip=clip, act_range=act_range, percentile=99.9).apply(ctx, module)
    session = _reference_session(export_fakequant_onnx(module))
    x = load_dataset("zoo:digits-val")[0][:12]
    reference = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    assert np.array_equal(evaluator.predict(config, x), reference)


def test_quantizer_chain_equals_numpy_fake_quant(space, evaluator):
    """The Div/Round/Clip/Mul chain on the first layer's output equals ir.quantization.fake_quant."""
    config = random_config(space, 4)
    model, _ = fakequant_graph(space)
    tensor = space.layers[0].output
    quantized = f"{tensor}__fq"
    model.graph.output.append(model.graph.output[0].__class__(name=tensor))
    model.graph.output.append(model.graph.output[0].__class__(name=quantized))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = evaluator.feeds(config)
    feeds["input"] = load_dataset("zoo:digits-val")[0][:3]
    raw, fq = session.run([tensor, quantized], feeds)
    q = space.quantizers[space.quantizer_index[tensor]]
    bits = space.tensor_bits(config)[tensor]
    scale, zp = activation_params(*evaluator.ranges[tensor], bits, q.signed)
    assert np.array_equal(fq, fake_quant(raw, scale, zp, bits, q.signed))


def test_accuracy_falls_with_bits(space, evaluator):
    x, y = load_dataset("zoo:digits-val")
    high = evaluator.top1(space.decode(space.uniform(8, 8)), x, y)
    low = evaluator.top1(space.decode(space.uniform(2, 2)), x, y)
    assert high >= 0.98 and low < 0.5


def test_weight_bytes_packs_into_the_dram_word():
    assert weight_bytes([10, 9], [4, 3], 8) == 5 + 5
    assert weight_bytes([10], [5], 8) == 10
    assert weight_bytes([10], [2], 64) == 8
    assert weight_bytes([33], [2], 64) == 16


def test_packing_class_shares_mappings_only_when_words_agree():
    from quantloop.problem import Bits

    eyeriss = EnergyModel([], [], load_target("eyeriss"), "energy")
    # Eyeriss keeps weights and inputs only in 8-bit words (3, 4 -> 2 per word; 5..8 -> 1), outputs also in
    # the 16-bit psum_spad; partial sums pack at the accumulator width max(o, w + a) (3+4=7 and 4+4=8: 2 per
    # 16-bit word either way).
    assert eyeriss.packing_class(Bits(6, 7, 7)) == Bits(8, 8, 8)
    assert eyeriss.packing_class(Bits(3, 4, 5)) == Bits(4, 4, 5)
    simba = EnergyModel([], [], load_target("simba"), "energy")
    # Simba: weights and inputs only in 8-bit words, outputs also in the 24-bit PEAccuBuffer (5, 6 -> 4 per
    # word; 7, 8 -> 3). w4a6o7 and w4a8o8 share every packing, partial sums included (accumulators 10 and
    # 12: 2 per 24-bit word); w3a5o5 (accumulator 8: 3 per word) and w4a8o6 (12: 2) do not.
    assert simba.packing_class(Bits(3, 5, 5)) == Bits(3, 5, 5)
    assert simba.packing_class(Bits(4, 6, 7)) == Bits(4, 8, 8)
    assert EnergyModel([], [], load_target("simba"), "edp").packing_class(Bits(3, 5, 5)) == Bits(3, 5, 5)


def test_pareto_front_is_non_dominated():
    rng = np.random.default_rng(0)
    points = [
        Point(Config((int(w),), (8,)), float(e), 1, int(b), float(a), True)
        for w, e, b, a in zip(rng.integers(2, 9, 60), rng.random(60), rng.integers(1, 50, 60), rng.random(60))
    ]
    front = pareto_front(points, "energy")
    key = lambda p: np.array([p.energy_pj, p.weight_bytes, -p.accuracy])  # noqa: E731
    for p in front:
        assert not any(np.all(key(o) <= key(p)) and np.any(key(o) < key(p)) for o in points)
    for p in set(points) - set(front):
        assert any(np.all(key(o) <= key(p)) and np.any(key(o) < key(p)) for o in points)


def test_data_that_does_not_fit_the_model_names_both_shapes(space):
    with pytest.raises(QuantloopError, match=r"val: x has shape 4x1x16x16, the model input needs 1x1x32x32"):
        check_inputs(space, np.zeros((4, 1, 16, 16), np.float32), None, "val", 10)
    with pytest.raises(QuantloopError, match="dtype"):
        check_inputs(space, np.zeros((4, 1, 32, 32), np.int32), None, "val", 10)


def test_labels_out_of_range(space):
    with pytest.raises(QuantloopError, match=r"labels range 0\.\.12, the model's classes are 0\.\.9"):
        check_inputs(space, np.zeros((2, 1, 32, 32), np.float32), np.array([0, 12]), "val", 10)


def test_quantized_models_are_refused():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 21)])
    module = import_onnx(model)
    with pytest.raises(QuantloopError, match="already quantized"):
        build_space(module, WIDTHS)


def test_search_flags():
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    assert search_settings(parser.parse_args([])) is None
    settings = search_settings(parser.parse_args(["--search", "--max-accuracy-drop", "1", "--population", "6",
                                                  "--generations", "2", "--bits-range", "3..8", "--seed", "7"]))
    assert (settings.max_accuracy_drop, settings.population, settings.generations, settings.bits_range, settings.seed) == (
        1.0, 6, 2, "3..8", 7)


def test_compile_search_cli_reports_bad_flags_in_one_line(capsys, tmp_path):
    from quantloop.cli import main

    code = main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "--search", "--bits-range", "2..16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "16-bit values do not fit the 8-bit word of level DRAM" in err
    assert main(["compile", "zoo:cnn_digits", "--search"]) == 2
    assert "--search needs --target" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 1, 28, 28), np.float32), y=np.zeros(3, np.int64))
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "--search", "--val-data", str(bad)]) == 2
    assert "x has shape 3x1x28x28, the model input needs 1x1x32x32" in capsys.readouterr().err
    assert main(["compile", "zoo:mobilenet_v1?width=0.25&resolution=32", "--target", "eyeriss", "--search",
                 "--val-data", str(bad)]) == 2
