"""Import-time opset conversion, constant folding, host ops and odd names (ONNX graphs built by hand)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantloop.driver import compile as compile_model
from quantloop.errors import QuantloopError
from quantloop.frontend import export_onnx, import_onnx
from quantloop.frontend.onnx_load import load_model
from quantloop.ir import Conv2dOp, GlobalAvgPoolOp, HostOp, ReshapeOp, make_context, parse_module, print_module
from quantloop.passes.canonicalize import CanonicalizePass


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def make(nodes, inputs, outputs, initializers=(), opset=13):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def roundtrip(model: onnx.ModelProto, x: np.ndarray):
    """The imported, canonicalized, printed and parsed module, and its exported outputs vs the model's."""
    module = import_onnx(model)
    CanonicalizePass().apply(make_context(), module)
    module = parse_module(print_module(module, elide_weights_over=None))
    np.testing.assert_allclose(run(export_onnx(module), x), run(model, x), rtol=1e-5, atol=1e-5)
    return module


X = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_constant_subgraphs_fold_with_the_reference_evaluator():
    """Weights from ConstantOfShape + arithmetic on initializers, a Shape→Gather→Unsqueeze→Concat chain
    feeding Reshape, and Constant nodes all become initializers; no shape op reaches the IR."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Constant", [], ["wshape"], value=init("v", np.array([4, 3, 3, 3], np.int64))),
        helper.make_node("ConstantOfShape", ["wshape"], ["ones"], value=init("one", np.array([0.5], np.float32))),
        helper.make_node("Mul", ["ones", "w_raw"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["c", "target"], ["y"], name="flatten"),
    ]
    inits = [init("w_raw", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)), init("zero", np.array(0, np.int64)),
             init("axes0", np.array([0], np.int64)), init("minus1", np.array([-1], np.int64))]
    model = make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 256])], inits)
    loaded = load_model(model)
    assert [n.op_type for n in loaded.graph.node] == ["Conv", "Reshape"]
    module = roundtrip(model, X)
    assert [op.shape for op in module.walk() if isinstance(op, ReshapeOp)] == [(1, -1)]


def test_shape_chains_that_fold_one_after_another_all_fold():
    """ShuffleNetV2 exported with a dynamic batch: each block's Reshape target comes from the previous
    block's Reshape output through Shape, Gather and Div (where ONNX's data propagation stops), so each
    chain folds only in the round after the one before it; twelve of them all fold."""
    nodes, value = [], "x"
    for i in range(12):
        nodes += [helper.make_node("Shape", [value], [f"s{i}"]),
                  helper.make_node("Gather", [f"s{i}", "one"], [f"c{i}"], axis=0),
                  helper.make_node("Div", [f"c{i}", "one"], [f"d{i}"]),
                  helper.make_node("Unsqueeze", [f"d{i}", "axes"], [f"u{i}"]),
                  helper.make_node("Concat", ["batch", f"u{i}", "rest"], [f"t{i}"], axis=0),
                  helper.make_node("Reshape", [value, f"t{i}"], [f"r{i}"]),
                  helper.make_node("Relu", [f"r{i}"], [f"y{i}"])]
        value = f"y{i}"
    inits = [init("one", np.array(1, np.int64)), init("axes", np.array([0], np.int64)),
             init("batch", np.array([1], np.int64)), init("rest", np.array([-1], np.int64))]
    model = make(nodes, [f32("x", ["N", 3, 8, 8])], [f32(value, ["N", 3, 64])], inits)
    loaded = load_model(model, {"x": (1, 3, 8, 8)})
    assert not [n.op_type for n in loaded.graph.node if n.op_type in ("Shape", "Gather", "Div")]
    assert [n.op_type for n in loaded.graph.node] == ["Reshape", "Relu"] * 12


def test_an_if_on_a_constant_condition_becomes_its_branch():
    then_graph = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [f32("t", [1, 3, 8, 8])])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [f32("e", [1, 3, 8, 8])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Equal", ["c", "three"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)]
    model = make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 3, 8, 8])],
                 [init("one", np.array(1, np.int64)), init("three", np.array(3, np.int64))])
    module = roundtrip(model, X)
    assert not [op for op in module.walk() if isinstance(op, HostOp)]


def test_a_folded_constant_too_large_is_an_error_not_a_memory_blow_up():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge"),
             helper.make_node("Add", ["x", "big"], ["y"])]
    model = make(nodes, [f32("x", [1])], [f32("y", [1 << 20, 1 << 20])], [init("shape", np.array([1 << 20, 1 << 20], np.int64))])
    with pytest.raises(QuantloopError, match=r"node 'huge' \(ConstantOfShape\) makes a constant of \d+ elements"):
        import_onnx(model)


def test_opset_7_converts_and_upsample_lrn_pad_run_on_the_host(tmp_path):
    nodes = [helper.make_node("Pad", ["x"], ["xp"], pads=[0, 0, 1, 1, 0, 0, 1, 1], name="pad"),
             helper.make_node("Conv", ["xp", "w"], ["c"], name="conv"),
             helper.make_node("LRN", ["c"], ["l"], size=3, alpha=1e-3, beta=0.75, bias=2.0, name="lrn"),
             helper.make_node("Upsample", ["l"], ["u"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest", name="up"),
             helper.make_node("Softmax", ["u"], ["y"], axis=1, name="softmax")]
    w = np.random.default_rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 16, 16])], [init("w", w)], opset=7)
    module = roundtrip(model, X)
    assert sorted(op.op_type for op in module.walk() if isinstance(op, HostOp)) == ["LRN", "Pad", "Resize"]
    # Converted to opset 13, Pad and Resize read int64 / float constants as inputs; calibration exports them too.
    result = compile_model(model, target="eyeriss", output_dir=tmp_path / "out", emit="schedule")
    assert [layer.name for layer in result.layers] == ["conv"]
    assert [h.split()[0] for h in result.host_ops][:3] == ["qnn.host:Pad", "qnn.host:LRN", "qnn.host:Resize"]


def test_softmax_before_opset_13_normalises_everything_from_its_axis():
    model = make([helper.make_node("Softmax", ["x"], ["y"], axis=1, name="softmax")], [f32("x", [1, 3, 8, 8])],
                 [f32("y", [1, 3, 8, 8])], opset=11)
    module = roundtrip(model, X)
    assert [op.shape for op in module.walk() if isinstance(op, ReshapeOp)] == [(1, 192), (1, 3, 8, 8)]


def test_a_failed_opset_conversion_names_the_op():
    model = make([helper.make_node("Crop", ["x"], ["y"], name="crop")], [f32("x", [1, 3, 8, 8])],
                 [f32("y", [1, 3, 8, 8])], opset=1)
    with pytest.raises(QuantloopError, match=r"converting opset 1 to 13 with onnx.version_converter fails at op Crop$"):
        import_onnx(model)


def test_affine_ops_fold_into_the_conv_only_when_per_channel():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Mul", ["c", "per_channel"], ["m"]), helper.make_node("Sub", ["m", "shift"], ["s"]),
             helper.make_node("Div", ["s", "two"], ["d"]), helper.make_node("Mul", ["d", "plane"], ["y"], name="plane")]
    inits = [init("w", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)),
             init("per_channel", rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32)),
             init("shift", rng.standard_normal((1, 4, 1, 1)).astype(np.float32)), init("two", np.float32(2.0)),
             init("plane", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))]
    module = roundtrip(make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])], inits), X)
    assert [op.node_name for op in module.walk() if isinstance(op, HostOp)] == ["plane"]


def test_names_that_sanitise_alike_stay_distinct_and_compile(tmp_path):
    """TF-style names (`conv2/Conv2D:0`), spaces, leading digits and non-ASCII in nodes and tensors."""
    rng = np.random.default_rng(4)
    names = ["conv2/Conv2D:0", "conv2/Conv2D_0", "conv2_Conv2D:0"]
    nodes, prev = [], "input:0"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Conv", [prev, f"w {i}"], [name], pads=[1, 1, 1, 1], name=name))
        nodes.append(helper.make_node("Relu", [name], [f"{i} relu é"], name=f"{i} relu é"))
        prev = f"{i} relu é"
    inits = [init(f"w {i}", rng.standard_normal((3, 3, 3, 3)).astype(np.float32)) for i in range(3)]
    model = make(nodes, [f32("input:0", [1, 3, 8, 8])], [f32(prev, [1, 3, 8, 8])], inits)
    module = roundtrip(model, X)
    assert [op.node_name for op in module.walk() if isinstance(op, Conv2dOp)] == names
    result = compile_model(model, target="eyeriss", output_dir=tmp_path / "out", emit="schedule,timeloop")
    assert [layer.name for layer in result.layers] == names
    folders = sorted(p.name for p in (tmp_path / "out" / "timeloop").iterdir())
    assert len(set(f.lower() for f in folders)) == 3 and all(":" not in f and "/" not in f for f in folders)


def test_real_cnn_host_ops_round_trip_in_onnxruntime():
    """Each op of the real-CNN list that is not a layer, at opset 18 (Split by num_outputs, ReduceMean axes as input)."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("PRelu", ["c", "slope"], ["p"]), helper.make_node("LeakyRelu", ["p"], ["l"], alpha=0.1),
        helper.make_node("HardSwish", ["l"], ["h"]), helper.make_node("HardSigmoid", ["h"], ["g"], alpha=0.2, beta=0.4),
        helper.make_node("Max", ["g", "h", "l"], ["mx"]), helper.make_node("Min", ["mx", "c"], ["mn"]),
        helper.make_node("Sum", ["mn", "c", "p"], ["s"], name="sum3"),
        helper.make_node("Split", ["s"], ["s0", "s1"], axis=1, num_outputs=2, name="split"),
        helper.make_node("Transpose", ["s1"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Pad", ["t", "pads"], ["pd"], mode="reflect"),
        helper.make_node("Gather", ["pd", "idx"], ["ga"], axis=2),
        helper.make_node("Slice", ["ga", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Sigmoid", ["sl"], ["sg"]), helper.make_node("Mul", ["sl", "sg"], ["silu"]),
        helper.make_node("ReduceMean", ["silu", "hw"], ["gap"], keepdims=0, name="gap"),
        helper.make_node("ReduceMean", ["s0", "h_only"], ["rm"], keepdims=1, name="mean_h"),
        helper.make_node("Unsqueeze", ["gap", "axes_un"], ["un"]), helper.make_node("Squeeze", ["un", "axes_un"], ["sq"]),
        helper.make_node("Flatten", ["rm"], ["fl"], axis=1), helper.make_node("Concat", ["sq", "fl"], ["cat"], axis=1),
        helper.make_node("Softmax", ["cat"], ["y"], axis=-1),
    ]
    inits = [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             init("slope", rng.uniform(0, 0.5, (4, 1, 1)).astype(np.float32)), init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             init("idx", np.array([0, 2, 4, 6, 8], np.int64)), init("starts", np.array([1], np.int64)),
             init("ends", np.array([9], np.int64)), init("axes", np.array([3], np.int64)), init("hw", np.array([2, 3], np.int64)),
             init("h_only", np.array([2], np.int64)), init("axes_un", np.array([2], np.int64))]
    model = make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 18])], inits, opset=18)
    module = roundtrip(model, X)
    hosted = sorted({op.op_type for op in module.walk() if isinstance(op, HostOp)})
    assert hosted == sorted(["Gather", "HardSigmoid", "HardSwish", "LeakyRelu", "Max", "Min", "Mul", "PRelu", "Pad",
                             "ReduceMean", "Sigmoid", "Slice", "Split", "Transpose"])
    assert len([op for op in module.walk() if isinstance(op, GlobalAvgPoolOp)]) == 1  # the H×W mean; the H-only one is hosted


def test_a_model_zoo_style_opset_8_graph_with_weights_as_inputs():
    """As the ONNX Model Zoo's opset 7/8 CNNs: weights also listed as graph inputs, BatchNormalization with
    `spatial`, a residual Sum, Reshape by an initializer, Softmax flattening from axis 1."""
    rng = np.random.default_rng(6)
    weights = {"w1": rng.standard_normal((3, 3, 3, 3)), "g": rng.uniform(0.5, 1.5, 3), "b": rng.standard_normal(3),
               "m": rng.standard_normal(3) * 0.1, "v": rng.uniform(0.5, 1.5, 3), "w2": rng.standard_normal((3, 3, 3, 3)),
               "fc": rng.standard_normal((3, 5)), "fc_b": rng.standard_normal(5)}
    inits = [init(k, v.astype(np.float32)) for k, v in weights.items()] + [init("shape", np.array([1, 3], np.int64))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], spatial=1, name="bn1"),
             helper.make_node("Relu", ["bn"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Sum", ["x", "c2"], ["s"], name="residual"), helper.make_node("GlobalAveragePool", ["s"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "fc_b"], ["logits"]), helper.make_node("Softmax", ["logits"], ["y"])]
    listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    model = make(nodes, [f32("x", [1, 3, 8, 8]), *listed], [f32("y", [1, 5])], inits, opset=8)
    module = roundtrip(model, X)
    assert [op.node_name for op in module.walk() if isinstance(op, Conv2dOp)] == ["conv1", "conv2"]
    assert not [op for op in module.walk() if isinstance(op, HostOp)]


@pytest.mark.parametrize("opset", [11, 13])
def test_host_ops_with_attributes_that_later_opsets_take_as_inputs_export_at_opset_21(opset):
    """ReduceMean's `axes` (an input from opset 18) and Split's `split` (from 13) become constant inputs."""
    split_sizes = [1, 2]
    split = (helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=split_sizes, name="split") if opset < 13 else
             helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1, name="split"))
    nodes = [split, helper.make_node("ReduceMean", ["b"], ["m"], axes=[1], keepdims=1, name="mean_c"),
             helper.make_node("ReduceMax", ["a"], ["mx"], axes=[3], keepdims=1, name="max_w"),
             helper.make_node("Add", ["m", "mx"], ["y"])]
    inits = [] if opset < 13 else [init("sizes", np.array(split_sizes, np.int64))]
    model = make(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 1, 8, 8])], inits, opset=opset)
    module = roundtrip(model, X)
    assert sorted(op.op_type for op in module.walk() if isinstance(op, HostOp)) == ["ReduceMax", "ReduceMean", "Split"]
