"""qnn-assign-bits: uniform and per-layer bit-widths, signedness, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp, TensorType, f32

from quantloop.errors import QuantloopError
from quantloop.ir.qnn import (
    AddOp,
    ConstantOp,
    Conv2dOp,
    DequantizeOp,
    FlattenOp,
    GemmOp,
    GlobalAvgPoolOp,
    IntType,
    MainBuilder,
    MaxPoolOp,
    QuantizeOp,
    ReluOp,
    SoftmaxOp,
    UniformPerAxisType,
    UniformType,
    element_type,
    main_func,
    make_context,
    parse_module,
    print_module,
)
from quantloop.passes.assign_bits import AssignBitsPass, load_bits_file, parse_bits_spec
from quantloop.passes.pipeline import run_pipeline

RNG = np.random.default_rng(1)


def w(b, *shape, name=None):
    return b.add(ConstantOp(RNG.standard_normal(shape).astype(np.float32), name=name))


def model() -> tuple[ModuleOp, dict[str, object]]:
    """conv1(relu fused) -> pool -> conv2 (no act) -> add(conv2, conv3 clip>=0) -> relu -> gap -> flatten -> fc -> softmax."""
    b = MainBuilder([TensorType(f32, [1, 3, 8, 8])])
    ops = {}
    ops["conv1"] = b.add(Conv2dOp(b.args[0], w(b, 8, 3, 3, 3, name="conv1.w"), w(b, 8), pads=(1, 1, 1, 1), act="relu", name="conv1"))
    ops["pool"] = b.add(MaxPoolOp(ops["conv1"], (2, 2), strides=(2, 2), name="pool"))
    ops["conv2"] = b.add(Conv2dOp(ops["pool"], w(b, 8, 8, 1, 1), name="conv2"))
    ops["conv3"] = b.add(Conv2dOp(ops["pool"], w(b, 8, 8, 1, 1), act="clip", act_min=0.0, act_max=6.0, name="conv3"))
    ops["add"] = b.add(AddOp(ops["conv2"], ops["conv3"], name="add"))
    ops["relu"] = b.add(ReluOp(ops["add"], name="relu"))
    ops["gap"] = b.add(GlobalAvgPoolOp(ops["relu"], name="gap"))
    ops["flatten"] = b.add(FlattenOp(ops["gap"], 1, name="flatten"))
    ops["fc"] = b.add(GemmOp(ops["flatten"], w(b, 10, 8, name="fc.w"), w(b, 10), trans_b=True, name="fc"))
    ops["softmax"] = b.add(SoftmaxOp(ops["fc"], 1, name="softmax"))
    return b.finish([ops["softmax"]]), ops


def run(module: ModuleOp, **options) -> ModuleOp:
    AssignBitsPass(**options).apply(make_context(), module)
    module.verify()
    return module


def out_type(op):
    return element_type(op.results[0])


def weight_type(op):
    return element_type(op.operands[1])


def test_uniform_bits_and_signedness():
    module, ops = model()
    run(module, bits="w4a8")
    for layer in ("conv1", "conv2", "conv3", "fc"):
        assert weight_type(ops[layer]) == IntType(4, True)
    assert element_type(ops["conv1"].operands[2]) == f32  # bias left to calibration
    unsigned = IntType(8, False)
    signed = IntType(8, True)
    assert out_type(ops["conv1"]) == unsigned  # fused relu
    assert out_type(ops["pool"]) == unsigned  # passes its input through
    assert out_type(ops["conv2"]) == signed  # no activation
    assert out_type(ops["conv3"]) == unsigned  # clip 0..6
    assert out_type(ops["add"]) == signed  # signed + unsigned
    assert out_type(ops["relu"]) == unsigned
    assert out_type(ops["gap"]) == unsigned and out_type(ops["flatten"]) == unsigned
    assert out_type(ops["fc"]) == signed
    assert out_type(ops["softmax"]) == unsigned
    func = main_func(module)
    assert element_type(func.body.block.args[0]) == IntType(8, True)
    assert func.function_type.inputs.data[0] == TensorType(IntType(8, True), [1, 3, 8, 8])
    assert func.function_type.outputs.data[0] == TensorType(unsigned, [1, 10])
    text = print_module(module, None)
    assert print_module(parse_module(text), None) == text


def test_output_bits_go_to_the_values_the_network_returns():
    """`w4a8o16`: the returned value (the softmax) is stored at 16 bits; everything a layer reads stays at 8."""
    module, ops = model()
    run(module, bits="w4a8o16")
    assert out_type(ops["softmax"]) == IntType(16, False)
    assert out_type(ops["fc"]) == IntType(8, True) and out_type(ops["conv1"]) == IntType(8, False)
    assert main_func(module).function_type.outputs.data[0] == TensorType(IntType(16, False), [1, 10])


def test_output_bits_follow_value_moving_ops_back_to_the_layer():
    """Returned through a flatten, the width lands on the gemm that writes the value (flatten passes it on)."""
    b = MainBuilder([TensorType(f32, [1, 8])])
    fc = b.add(GemmOp(b.args[0], w(b, 4, 8, name="fc.w"), w(b, 4), trans_b=True, name="fc"))
    flat = b.add(FlattenOp(fc, 1, name="flatten"))
    module = run(b.finish([flat]), bits="w4a8o16")
    assert out_type(fc) == IntType(16, True) and out_type(flat) == IntType(16, True)


def test_input_bits_option_and_sixteen_bits():
    module, ops = model()
    run(module, bits="w16a16", input_bits=4)
    assert element_type(main_func(module).body.block.args[0]) == IntType(4, True)
    assert weight_type(ops["fc"]) == IntType(16, True) and out_type(ops["fc"]) == IntType(16, True)


def test_add_of_two_unsigned_values_is_unsigned():
    b = MainBuilder([TensorType(f32, [1, 4])])
    r1 = b.add(ReluOp(b.args[0]))
    r2 = b.add(ReluOp(b.args[0]))
    s = b.add(AddOp(r1, r2))
    module = run(b.finish([s]), bits="w8a4")
    assert out_type(s) == IntType(4, False)


def test_per_layer_file(tmp_path):
    path = tmp_path / "bits.json"
    path.write_text(json.dumps({"conv1": {"weights": 2, "activations": 4}, "conv3": {"weights": 3}, "pool": {"activations": 6}}))
    module, ops = model()
    run(module, bits="w8a8", file=str(path))
    assert weight_type(ops["conv1"]) == IntType(2, True) and out_type(ops["conv1"]) == IntType(4, False)
    assert out_type(ops["pool"]) == IntType(6, False)  # named explicitly, so not passed through
    assert weight_type(ops["conv3"]) == IntType(3, True) and out_type(ops["conv3"]) == IntType(8, False)
    assert weight_type(ops["conv2"]) == IntType(8, True)  # not listed: default


def test_pass_through_inherits_bits_of_its_input(tmp_path):
    path = tmp_path / "bits.json"
    path.write_text(json.dumps({"conv1": {"activations": 5}}))
    module, ops = model()
    run(module, bits="w8a8", file=str(path))
    assert out_type(ops["pool"]) == IntType(5, False)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"conv9": {"weights": 4}}, "unknown layer names conv9 (layers in the model: add, conv1,"),
        ({"conv1": {"weights": 9}}, "layer 'conv1' weights: 9 bits is not a legal bit-width"),
        ({"conv1": {"activations": 1}}, "layer 'conv1' activations: 1 bits is not a legal bit-width"),
        ({"conv1": {"wieghts": 4}}, "layer 'conv1' has unknown keys ['wieghts']"),
        ({"conv1": {"weights": "4"}}, "layer 'conv1' weights must be an integer, got '4'"),
        ({"conv1": 4}, "layer 'conv1' must map to an object"),
        ({"relu": {"weights": 4}}, "layer 'relu' (qnn.relu) has no weights"),
        ([1, 2], "expected an object keyed by layer name, got list"),
    ],
)
def test_bits_file_errors(tmp_path, content, needle):
    path = tmp_path / "bits.json"
    path.write_text(json.dumps(content))
    module, _ = model()
    with pytest.raises(QuantloopError) as err:
        run(module, file=str(path))
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_bits_file_unreadable(tmp_path):
    with pytest.raises(QuantloopError, match="bits file not found"):
        load_bits_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(QuantloopError, match="bad.json: not valid JSON"):
        load_bits_file(bad)


@pytest.mark.parametrize("spec", ["w9a8", "w4a17", "w1a8", "w4", "8", "a8w4", ""])
def test_bad_bits_spec(spec):
    with pytest.raises(QuantloopError, match="bits '"):
        parse_bits_spec(spec)


def test_bits_spec_values():
    assert parse_bits_spec("w4a8") == (4, 8, 8)
    assert parse_bits_spec("W16A2") == (16, 2, 2)
    assert parse_bits_spec("w4a8o16") == (4, 8, 16)


def test_quantized_values_keep_their_types():
    """A QDQ-style graph: quantized weights through dequantize, activations through quantize."""
    b = MainBuilder([TensorType(f32, [1, 2, 4, 4])])
    qw = b.add(
        ConstantOp(
            np.ones((3, 2, 1, 1), np.int8),
            TensorType(UniformPerAxisType(4, True, 0, [0.1, 0.2, 0.3], [0, 0, 0]), [3, 2, 1, 1]),
            name="qw",
        )
    )
    dw = b.add(DequantizeOp(qw))
    qx = b.add(QuantizeOp(b.args[0], TensorType(UniformType(8, False, 0.05, 0), [1, 2, 4, 4])))
    dx = b.add(DequantizeOp(qx))
    conv = b.add(Conv2dOp(dx, dw, name="conv"))
    module = run(b.finish([conv]), bits="w8a8")
    assert element_type(main_func(module).body.block.args[0]) == f32  # read by qnn.quantize
    assert element_type(qw.results[0]) == UniformPerAxisType(4, True, 0, [0.1, 0.2, 0.3], [0, 0, 0])
    assert element_type(qx.results[0]) == UniformType(8, False, 0.05, 0)
    assert element_type(dw.results[0]) == f32 and element_type(dx.results[0]) == f32
    assert out_type(conv) == IntType(8, True)


def test_running_twice_changes_nothing():
    module, _ = model()
    run(module, bits="w4a4")
    once = print_module(module, None)
    run(module, bits="w8a8")
    assert print_module(module, None) == once


def test_shared_weights_with_conflicting_bits(tmp_path):
    b = MainBuilder([TensorType(f32, [1, 2, 4, 4])])
    shared = w(b, 2, 2, 1, 1)
    c1 = b.add(Conv2dOp(b.args[0], shared, name="c1"))
    c2 = b.add(Conv2dOp(c1, shared, name="c2"))
    path = tmp_path / "bits.json"
    path.write_text(json.dumps({"c2": {"weights": 4}}))
    with pytest.raises(QuantloopError, match="share weights but were given"):
        run(b.finish([c2]), file=str(path))


def test_runs_in_a_pipeline_spec(tmp_path):
    module, ops = model()
    run_pipeline(module, "qnn-assign-bits{bits=w2a4}", make_context())
    assert weight_type(ops["conv2"]) == IntType(2, True) and out_type(ops["conv2"]) == IntType(4, True)
