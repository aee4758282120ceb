"""ONNX import: bad inputs, QONNX Quant types, QDQ types, and the op set on hand-built graphs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantloop.errors import QuantloopError
from quantloop.frontend import export_onnx, import_onnx, load_model, parse_input_shapes, supported_ops
from quantloop.frontend.zoo import load_zoo_model
from quantloop.ir import (
    ConstantOp,
    Conv2dOp,
    DequantizeOp,
    QuantizeOp,
    UniformPerAxisType,
    UniformType,
    make_context,
)
from quantloop.passes.canonicalize import CanonicalizePass

SMALL = "zoo:mobilenet_v2?width=0.35&resolution=32&num_classes=10"


def make(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10 if opset >= 21 else 8
    return model


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def ops_of(module, kind):
    return [op for op in module.walk() if isinstance(op, kind)]


# ---------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(QuantloopError, match=r"nothere.onnx: no such file"):
        import_onnx(tmp_path / "nothere.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a protobuf\n" * 20)
    with pytest.raises(QuantloopError, match=r"notes.onnx: not (a valid ONNX file|an ONNX model)"):
        import_onnx(path)


def test_truncated_onnx(tmp_path):
    path = tmp_path / "cut.onnx"
    data = load_zoo_model(SMALL).SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(QuantloopError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "cut.onnx" in message and "\n" not in message
    assert "truncated" in message or "checker" in message


def test_checker_failure(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = make([node], [f32("x", [1, 4])], [f32("y", [1, 4])])
    model.graph.node[0].input[0] = "undefined_tensor"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(QuantloopError, match=r"bad.onnx: the ONNX checker rejects the model: .*undefined_tensor"):
        import_onnx(path)


def test_unsupported_ops_are_listed_at_once_with_counts_and_first_nodes():
    nodes = [helper.make_node("Hardmax", ["x"], ["a"], name="first_hardmax"),
             helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Hardmax", ["b"], ["c"], name="second_hardmax"),
             helper.make_node("Cos", ["c"], ["y"], name="the_cos")]
    model = make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4])])
    with pytest.raises(QuantloopError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "\n" not in message
    assert "unsupported ops: Hardmax ×2 (first 'first_hardmax'); Cos ×1 (first 'the_cos')" in message
    assert "supported ops: Abs, Add, AveragePool, BatchNormalization" in message
    assert all(op in message for op in supported_ops())


def test_symbolic_dim_needs_input_shape():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = make([node], [f32("x", ["batch", 4])], [f32("y", ["batch", 4])])
    with pytest.raises(QuantloopError, match=r"input 'x' has symbolic dimension 0 'batch'; pass its full static shape, "
                                             r"e\.g\. --input-shape x=1x4$"):  # the model's own dims, batch 1
        import_onnx(model)
    spatial = make([node], [f32("x", ["batch", 3, "h", 96])], [f32("y", ["batch", 3, "h", 96])])
    with pytest.raises(QuantloopError, match=r"--input-shape x=1x3xhx96$"):
        import_onnx(spatial)
    module = import_onnx(model, {"x": (2, 4)})
    assert module.body.block.ops.first.function_type.inputs.data[0].get_shape() == (2, 4)


def test_input_shape_errors():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = make([node], [f32("x", ["batch", 4])], [f32("y", ["batch", 4])])
    with pytest.raises(QuantloopError, match=r"--input-shape names y, but the model's inputs are x"):
        import_onnx(model, {"y": (1, 4)})
    with pytest.raises(QuantloopError, match=r"input 'x' dimension 1 is 4, --input-shape gives 5 "
                                             r"\(the model's shape: --input-shape x=1x4\)"):
        import_onnx(model, {"x": (1, 5)})


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1x3x224x224", "y=2X10"]) == {"x": (1, 3, 224, 224), "y": (2, 10)}
    assert parse_input_shapes(None) == {}
    for bad in ["x", "x=", "=1x2", "x=1xax2", "x=0x3"]:
        with pytest.raises(QuantloopError, match="--input-shape"):
            parse_input_shapes([bad])


def test_unknown_zoo_name():
    with pytest.raises(QuantloopError, match=r"zoo:resnet999: unknown zoo name 'resnet999'; models: .*resnet18"):
        import_onnx("zoo:resnet999")


def test_unsupported_opset():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = make([node], [f32("x", [1, 4])], [f32("y", [1, 4])], opset=22)
    model.ir_version = 10
    with pytest.raises(QuantloopError, match=r"opset 22 is not supported \(supported: 7..21\)"):
        import_onnx(model)


def test_used_second_output_is_refused():
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop"),
             helper.make_node("Identity", ["mask"], ["m"], name="keep_mask")]
    mask = helper.make_tensor_value_info("m", TensorProto.BOOL, [1, 4])
    model = make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4]), mask])
    with pytest.raises(QuantloopError, match=r"node 'drop' \(Dropout\): output 'mask' is used"):
        import_onnx(model)


def test_load_model_does_not_modify_its_argument():
    model = load_zoo_model(SMALL)
    before = model.SerializeToString()
    load_model(model)
    assert model.SerializeToString() == before


# ---------------------------------------------------------------------- opsets and ops


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_zoo_model_imports_at_every_opset(opset):
    module = import_onnx(f"{SMALL}&opset={opset}")
    assert len(ops_of(module, Conv2dOp)) == 52


def _misc_graph(opset):
    """MatMul, Concat, Softmax, Reshape (shape from a Constant node), AveragePool (SAME_UPPER,
    count_include_pad), MaxPool (ceil_mode), Identity, Clip without max, Gemm with transA."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
                         count_include_pad=1, name="ap"),
        helper.make_node("MaxPool", ["x"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, name="mp"),
        helper.make_node("Concat", ["ap", "mp"], ["cat"], axis=1, name="cat"),
        helper.make_node("Identity", ["cat"], ["idn"], name="idn"),
        helper.make_node("Constant", [], ["shape"], value=init("shape_value", np.array([1, -1], np.int64)), name="k"),
        helper.make_node("Reshape", ["idn", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "w"], ["mm"], name="mm"),
        helper.make_node("Clip", ["mm", "lo"], ["clipped"], name="clip"),
        helper.make_node("Gemm", ["clipped_t", "w2"], ["g"], transA=1, alpha=0.5, beta=2.0, name="gemm"),
        helper.make_node("Softmax", ["g"], ["y"], axis=1, name="softmax"),
    ]
    nodes.insert(8, helper.make_node("Reshape", ["clipped", "tshape"], ["clipped_t"], name="to_column"))
    inits = [
        init("w", rng.standard_normal((2 * 4 * 3 * 3, 6)).astype(np.float32)),
        init("lo", np.array(-0.5, np.float32)),
        init("tshape", np.array([1, 6], np.int64)),
        init("w2", rng.standard_normal((1, 5)).astype(np.float32)),
    ]
    return make(nodes, [f32("x", [1, 4, 5, 5])], [f32("y", [6, 5])], inits, opset=opset)


@pytest.mark.parametrize("opset", [13, 21])
def test_misc_ops_roundtrip(opset):
    model = _misc_graph(opset)
    module = import_onnx(model)
    CanonicalizePass().apply(make_context(), module)
    exported = export_onnx(module)
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    assert np.abs(run(exported, {"x": x}) - run(model, {"x": x})).max() <= 1e-6


def test_conv_auto_pad_and_dilation():
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2], name="same"),
             helper.make_node("Conv", ["y", "w2"], ["z"], dilations=[2, 2], pads=[2, 2, 2, 1], name="dilated")]
    model = make(nodes, [f32("x", [1, 3, 9, 8])], [f32("z", [1, 4, 5, 3])],
                 [init("w", rng.standard_normal((4, 3, 3, 2)).astype(np.float32)),
                  init("w2", rng.standard_normal((4, 4, 3, 3)).astype(np.float32))])
    exported = export_onnx(import_onnx(model))
    x = rng.standard_normal((1, 3, 9, 8)).astype(np.float32)
    assert np.abs(run(exported, {"x": x}) - run(model, {"x": x})).max() <= 1e-5


# ---------------------------------------------------------------------- QDQ


def test_qdq_types():
    rng = np.random.default_rng(3)
    w_codes = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w_scales = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    bias = rng.integers(-1000, 1000, 4).astype(np.int32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0, name="dqw"),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0, name="dqb"),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], pads=[1, 1, 1, 1], name="conv"),
    ]
    inits = [init("xs", np.float32(0.05)), init("xz", np.uint8(128)), init("w", w_codes), init("ws", w_scales),
             init("wz", np.zeros(4, np.int8)), init("b", bias), init("bs", (w_scales * np.float32(0.05)))]
    model = make(nodes, [f32("x", [1, 3, 6, 6])], [f32("y", [1, 4, 6, 6])], inits, opset=13)
    module = import_onnx(model)
    (quantize,) = ops_of(module, QuantizeOp)
    assert quantize.output.type.element_type == UniformType(8, False, float(np.float32(0.05)), 128)
    weight = next(op for op in ops_of(module, ConstantOp) if op.node_name == "w")
    elem = weight.output.type.element_type
    assert isinstance(elem, UniformPerAxisType) and elem.axis == 0 and (elem.bits, elem.signed) == (8, True)
    assert elem.scales == tuple(float(s) for s in w_scales)
    assert np.array_equal(weight.array, w_codes)
    bias_op = next(op for op in ops_of(module, Conv2dOp)).bias.owner
    assert isinstance(bias_op, ConstantOp) and bias_op.array.dtype == np.float32
    assert np.array_equal(bias_op.array, bias.astype(np.float32) * (w_scales * np.float32(0.05)))
    assert len(ops_of(module, DequantizeOp)) == 2
    x = np.random.default_rng(4).standard_normal((1, 3, 6, 6)).astype(np.float32)
    assert np.array_equal(run(export_onnx(module), {"x": x}), run(model, {"x": x}))


def test_dequantize_with_other_parameters_than_its_input_is_refused():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s2", "z"], ["y"], name="dq")]
    inits = [init("s1", np.float32(0.1)), init("s2", np.float32(0.2)), init("z", np.int8(0))]
    model = make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4])], inits)
    with pytest.raises(QuantloopError, match=r"node 'dq' \(DequantizeLinear\): scale/zero point differ"):
        import_onnx(model)


# ---------------------------------------------------------------------- QONNX


def _qonnx_model(act_bits=4, w_bits=4, narrow=1):
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weight).reshape(6, -1).max(axis=1) / 7).astype(np.float32).reshape(6, 1, 1, 1)
    nodes = [
        helper.make_node("Quant", ["x", "as", "az", "ab"], ["xq"], domain="qonnx.custom_op.general",
                         signed=0, narrow=0, rounding_mode="ROUND", name="quant_act"),
        helper.make_node("Quant", ["w", "ws", "wz", "wb"], ["wq"], domain="qonnx.custom_op.general",
                         signed=1, narrow=narrow, rounding_mode="ROUND", name="quant_w"),
        helper.make_node("Conv", ["xq", "wq"], ["y"], pads=[1, 1, 1, 1], name="conv"),
    ]
    inits = [init("as", np.float32(0.1)), init("az", np.float32(0)), init("ab", np.float32(act_bits)),
             init("w", weight), init("ws", w_scale), init("wz", np.float32(0)), init("wb", np.float32(w_bits))]
    model = make(nodes, [f32("x", [1, 3, 5, 5])], [f32("y", [1, 6, 5, 5])], inits, domains=["qonnx.custom_op.general"])
    return model, weight, w_scale


def test_qonnx_quant_imports_into_uniform_types():
    model, weight, w_scale = _qonnx_model()
    module = import_onnx(model)
    (act,) = ops_of(module, QuantizeOp)
    assert act.output.type.element_type == UniformType(4, False, float(np.float32(0.1)), 0)
    assert act.node_name == "quant_act"
    w_op = next(op for op in ops_of(module, ConstantOp) if op.node_name == "w")
    elem = w_op.output.type.element_type
    assert isinstance(elem, UniformPerAxisType) and (elem.bits, elem.signed, elem.axis) == (4, True, 0)
    assert elem.scales == tuple(float(s) for s in w_scale.reshape(-1))
    codes = w_op.array
    assert codes.min() >= -7 and codes.max() <= 7  # narrow range
    assert np.array_equal(codes, np.clip(np.round(weight / w_scale), -7, 7))
    assert len(ops_of(module, DequantizeOp)) == 2
    conv = ops_of(module, Conv2dOp)[0]
    assert isinstance(conv.input.owner, DequantizeOp) and isinstance(conv.weight.owner, DequantizeOp)


def test_qonnx_model_exports_to_runnable_int4_qdq():
    model, weight, w_scale = _qonnx_model()
    exported = export_onnx(import_onnx(model))
    x = np.random.default_rng(6).uniform(-0.5, 2.0, (1, 3, 5, 5)).astype(np.float32)
    # QONNX semantics, computed independently: fake-quantized input and weights into a float conv.
    xq = np.clip(np.round(x / np.float32(0.1)), 0, 15) * np.float32(0.1)
    wq = (np.clip(np.round(weight / w_scale), -7, 7) * w_scale).astype(np.float32)
    reference = make([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                     [f32("x", [1, 3, 5, 5])], [f32("y", [1, 6, 5, 5])], [init("w", wq)])
    assert np.abs(run(exported, {"x": x}) - run(reference, {"x": xq.astype(np.float32)})).max() <= 1e-5


@pytest.mark.parametrize("bits", [1, 3.5, 32])
def test_qonnx_illegal_bitwidth(bits):
    model, _, _ = _qonnx_model(act_bits=bits)
    with pytest.raises(QuantloopError, match=r"node 'quant_act' \(Quant\): bitwidth .* is not a legal storage width"):
        import_onnx(model)


def test_qonnx_unknown_domain_op_is_unsupported():
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain="qonnx.custom_op.general", name="mt")
    model = make([node], [f32("x", [1, 4])], [f32("y", [1, 4])], [init("t", np.zeros((4, 3), np.float32))],
                 domains=["qonnx.custom_op.general"])
    with pytest.raises(QuantloopError, match=r"unsupported ops: qonnx.custom_op.general.MultiThreshold ×1 \(first 'mt'\)"):
        import_onnx(model)


def test_reshape_and_maxpool_of_quantized_tensors_keep_their_type():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("MaxPool", ["q"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Reshape", ["p", "shape"], ["r"], name="reshape"),
             helper.make_node("DequantizeLinear", ["r", "s", "z"], ["y"], name="dq")]
    inits = [init("s", np.float32(0.1)), init("z", np.uint8(10)), init("shape", np.array([1, -1], np.int64))]
    model = make(nodes, [f32("x", [1, 2, 4, 4])], [f32("y", [1, 8])], inits)
    module = import_onnx(model)
    assert all(isinstance(op.results[0].type.element_type, UniformType)
               for op in module.walk() if op.name in ("qnn.maxpool", "qnn.reshape"))
    x = np.random.default_rng(7).standard_normal((1, 2, 4, 4)).astype(np.float32)
    assert np.array_equal(run(export_onnx(module), {"x": x}), run(model, {"x": x}))


def test_quant_in_the_standard_domain_is_not_qonnx():
    node = helper.make_node("Quant", ["x"], ["y"], name="fake")
    model = make([node], [f32("x", [1, 4])], [f32("y", [1, 4])])
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(QuantloopError, match=r"unsupported ops: com.example.Quant ×1"):
        import_onnx(model)


def test_weights_whose_data_does_not_match_their_shape():
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    model = make([node], [f32("x", [1, 64])], [f32("y", [1, 64])], [init("w", np.zeros((64, 64), np.float32))])
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-8]
    with pytest.raises(QuantloopError, match=r"initializer 'w': its data does not match its type and shape \[64, 64\]"):
        import_onnx(model)


def test_every_microsoft_qoperator_converter_has_a_shape_inference_twin():
    """`frontend.onnx_contrib_shapes` infers the shapes of com.microsoft nodes through standard twins: a converter
    added without a twin would import a model whose contrib outputs have no shapes."""
    from quantloop.frontend.onnx_contrib_shapes import _TWINS
    from quantloop.frontend.onnx_qoperator import MICROSOFT_QOPERATOR_CONVERTERS

    assert set(MICROSOFT_QOPERATOR_CONVERTERS) <= set(_TWINS)
    # the twins beyond the converters: com.microsoft Quantize/DequantizeLinear, which the QDQ path reads
    assert set(_TWINS) - set(MICROSOFT_QOPERATOR_CONVERTERS) == {"QuantizeLinear", "DequantizeLinear"}
