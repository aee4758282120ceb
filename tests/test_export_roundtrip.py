"""import -> qnn-canonicalize -> export_onnx gives the original model's outputs in onnxruntime."""

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from xdsl.rewriter import Rewriter

from quantloop.errors import QuantloopError
from quantloop.frontend import export_onnx, import_onnx
from quantloop.frontend.zoo import load_zoo_model
from quantloop.ir import (
    BatchNormOp,
    ConstantOp,
    Conv2dOp,
    DropoutOp,
    FlattenOp,
    IdentityOp,
    IntType,
    QuantizeOp,
    UniformPerAxisType,
    UniformType,
    make_context,
    parse_module,
    print_module,
    with_element,
)
from quantloop.passes.canonicalize import CanonicalizePass

SMALL = {
    "mobilenet_v1": "zoo:mobilenet_v1?width=0.25&resolution=64&num_classes=10",
    "mobilenet_v2": "zoo:mobilenet_v2?width=0.35&resolution=64&num_classes=10",
    "resnet18": "zoo:resnet18?width=0.25&resolution=64&num_classes=10",
    "vgg16": "zoo:vgg16?width=0.0625&num_classes=10",
}
OPTIMIZATION_LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


def run(model: onnx.ModelProto, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def input_shape(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def canonical(model):
    module = import_onnx(model)
    CanonicalizePass().apply(make_context(), module)
    module.verify()
    return module


def roundtrip(model):
    exported = export_onnx(canonical(model))
    onnx.checker.check_model(exported, full_check=True)
    return exported


def random_inputs(model, count=2):
    shape = input_shape(model)
    return [np.random.default_rng(100 + i).standard_normal(shape).astype(np.float32) for i in range(count)]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_float_zoo_models_roundtrip(name):
    model = load_zoo_model(SMALL[name])
    exported = roundtrip(model)
    for x in random_inputs(model):
        expected = run(model, x)
        assert np.abs(run(exported, x) - expected).max() <= 1e-4
        assert np.abs(expected).max() > 0.5  # the bar is meaningful: outputs are not tiny


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_roundtrip_across_opsets(opset):
    model = load_zoo_model(f"zoo:mobilenet_v2?width=0.35&resolution=32&num_classes=10&opset={opset}")
    exported = roundtrip(model)
    (x,) = random_inputs(model, 1)
    assert np.abs(run(exported, x) - run(model, x)).max() <= 1e-4


def test_mobilenet_v2_default_size_roundtrip():
    model = load_zoo_model("zoo:mobilenet_v2")
    module = canonical(model)
    ops = list(module.walk())
    assert not any(isinstance(op, (BatchNormOp, IdentityOp, DropoutOp)) for op in ops)
    exported = export_onnx(module)
    for x in random_inputs(model):
        expected = run(model, x)
        assert np.abs(run(exported, x) - expected).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1", "vgg16"])
def test_default_size_roundtrip(name):
    model = load_zoo_model(f"zoo:{name}")
    exported = roundtrip(model)
    (x,) = random_inputs(model, 1)
    assert np.abs(run(exported, x) - run(model, x)).max() <= 1e-4


def test_printed_and_parsed_ir_exports_the_same_model():
    model = load_zoo_model(SMALL["mobilenet_v2"])
    text = print_module(canonical(model), elide_weights_over=None)
    exported = export_onnx(parse_module(text, "roundtrip.mlir"))
    (x,) = random_inputs(model, 1)
    assert np.abs(run(exported, x) - run(model, x)).max() <= 1e-4


# ---------------------------------------------------------------------- QDQ


class _Reader(CalibrationDataReader):
    def __init__(self, shape, count=3):
        self.items = iter([{"input": np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                           for i in range(count)])

    def get_next(self):
        return next(self.items, None)


def quantize(model: onnx.ModelProto, tmp_path, per_channel: bool, weight_type=QuantType.QInt8,
             activation_type=QuantType.QUInt8) -> onnx.ModelProto:
    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, str(src))
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing
    quantize_static(str(src), str(dst), _Reader(input_shape(model)), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, weight_type=weight_type, activation_type=activation_type)
    return onnx.load(str(dst))


def assert_exact(qdq: onnx.ModelProto, exported: onnx.ModelProto) -> None:
    for x in random_inputs(qdq):
        for level in OPTIMIZATION_LEVELS:
            assert np.array_equal(run(exported, x, level), run(qdq, x, level))


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_qdq_of_bn_folded_mobilenet_v2_is_exact(tmp_path, per_channel):
    folded = export_onnx(canonical(load_zoo_model(SMALL["mobilenet_v2"])))
    qdq = quantize(folded, tmp_path, per_channel)
    module = canonical(qdq)
    weight_type = UniformPerAxisType if per_channel else UniformType
    weights = [op for op in module.walk() if isinstance(op, ConstantOp) and len(op.output.type.get_shape()) == 4]
    assert weights and all(isinstance(op.output.type.element_type, weight_type) for op in weights)
    assert all(op.array.dtype == np.int8 and op.output.type.element_type.bits == 8 for op in weights)
    activations = [op.output.type.element_type for op in module.walk() if isinstance(op, QuantizeOp)]
    assert activations and all(isinstance(t, UniformType) and (t.bits, t.signed) == (8, False) for t in activations)
    assert_exact(qdq, export_onnx(module))


@pytest.mark.slow
def test_qdq_of_raw_zoo_model_keeps_quantized_batchnorm_exact(tmp_path):
    qdq = quantize(load_zoo_model(SMALL["mobilenet_v2"]), tmp_path, per_channel=True)
    module = canonical(qdq)
    # The BN parameters are themselves dequantized values here, so BN cannot fold and must survive.
    assert any(isinstance(op, BatchNormOp) for op in module.walk())
    assert_exact(qdq, export_onnx(module))


def test_qdq_int4_weights_are_exact(tmp_path):
    folded = export_onnx(canonical(load_zoo_model(SMALL["resnet18"])))
    qdq = quantize(folded, tmp_path, per_channel=True, weight_type=QuantType.QInt4)
    module = canonical(qdq)
    bits = {op.output.type.element_type.bits for op in module.walk()
            if isinstance(op, ConstantOp) and hasattr(op.output.type.element_type, "bits")}
    assert bits == {4}
    exported = export_onnx(module)
    assert any(t.data_type == onnx.TensorProto.INT4 for t in exported.graph.initializer)
    assert_exact(qdq, exported)
    reparsed = parse_module(print_module(module, elide_weights_over=None), "int4.mlir")
    assert_exact(qdq, export_onnx(reparsed))


@pytest.mark.slow
def test_qdq_mobilenet_v2_default_size_is_exact(tmp_path):
    folded = export_onnx(canonical(load_zoo_model("zoo:mobilenet_v2")))
    qdq = quantize(folded, tmp_path, per_channel=True)
    assert_exact(qdq, export_onnx(canonical(qdq)))


# ---------------------------------------------------------------------- types without ONNX spelling


def test_uncalibrated_int_types_export_as_float():
    model = load_zoo_model(SMALL["resnet18"])
    module = canonical(model)
    reference = export_onnx(module)
    for op in list(module.walk()):
        if isinstance(op, ConstantOp):
            Rewriter.replace_value_with_new_type(op.output, with_element(op.output.type, IntType(4, True)))
    exported = export_onnx(module)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in exported.graph.initializer if len(t.dims) == 4)
    (x,) = random_inputs(model, 1)
    assert np.array_equal(run(exported, x), run(reference, x))


def test_widths_without_an_onnx_type_are_refused():
    text = """
builtin.module {
  func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %q = "qnn.quantize"(%x) <{name = "q6"}> : (tensor<1x4xf32>) -> tensor<1x4x!qnn.uniform<u6:f32, 0.5:0>>
    %d = "qnn.dequantize"(%q) : (tensor<1x4x!qnn.uniform<u6:f32, 0.5:0>>) -> tensor<1x4xf32>
    func.return %d : tensor<1x4xf32>
  }
}
"""
    with pytest.raises(QuantloopError, match=r"qnn.quantize 'q6' has 6-bit values.*fake-quant"):
        export_onnx(parse_module(text))


def test_quantize_dequantize_text_exports_exact_qdq():
    text = """
builtin.module {
  func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %q = "qnn.quantize"(%x) : (tensor<1x4xf32>) -> tensor<1x4x!qnn.uniform<i8:f32, 0.25:3>>
    %d = "qnn.dequantize"(%q) : (tensor<1x4x!qnn.uniform<i8:f32, 0.25:3>>) -> tensor<1x4xf32>
    func.return %d : tensor<1x4xf32>
  }
}
"""
    exported = export_onnx(parse_module(text))
    x = np.array([[-40.0, -0.3, 0.13, 100.0]], np.float32)
    expected = (np.clip(np.round(x / 0.25) + 3, -128, 127) - 3) * 0.25
    assert np.array_equal(run(exported, x), expected.astype(np.float32))
    kinds = [n.op_type for n in exported.graph.node]
    assert kinds == ["QuantizeLinear", "DequantizeLinear"]
    zero_point = next(t for t in exported.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    assert onnx.numpy_helper.to_array(zero_point) == 3


STORAGE = [(onnx.TensorProto.INT8, np.int8), (onnx.TensorProto.UINT8, np.uint8), (onnx.TensorProto.INT16, np.int16),
           (onnx.TensorProto.UINT16, np.uint16), (onnx.TensorProto.INT4, None), (onnx.TensorProto.UINT4, None)]


def _zero_point(name, onnx_type, values):
    return onnx.helper.make_tensor(name, onnx_type, [len(values)] if np.ndim(values) else [],
                                   np.atleast_1d(values).astype(np.int64).tolist())


@settings(max_examples=25, deadline=None)
@given(
    act=st.sampled_from(STORAGE),
    weight=st.sampled_from(STORAGE),
    per_axis=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_qdq_parameters_roundtrip_exactly(act, weight, per_axis, seed):
    rng = np.random.default_rng(seed)
    act_type, w_type = act[0], weight[0]
    a_lo, a_hi = _range(act_type)
    w_lo, w_hi = _range(w_type)
    channels = 3
    w_codes = rng.integers(w_lo, w_hi + 1, (channels, 2, 1, 1))
    w_scale = rng.uniform(1e-3, 0.5, channels if per_axis else ()).astype(np.float32)
    w_zp = rng.integers(w_lo, w_hi + 1, channels if per_axis else ())
    a_scale = np.float32(rng.uniform(1e-3, 0.5))
    a_zp = int(rng.integers(a_lo, a_hi + 1))
    h = onnx.helper
    nodes = [
        h.make_node("QuantizeLinear", ["x", "as", "az"], ["xq"], name="q"),
        h.make_node("DequantizeLinear", ["xq", "as", "az"], ["xd"], name="dq"),
        h.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0, name="dqw"),
        h.make_node("Conv", ["xd", "wd"], ["y"], name="conv"),
    ]
    inits = [onnx.numpy_helper.from_array(a_scale, "as"), _zero_point("az", act_type, a_zp),
             h.make_tensor("w", w_type, list(w_codes.shape), w_codes.reshape(-1).tolist()),
             onnx.numpy_helper.from_array(w_scale, "ws"), _zero_point("wz", w_type, w_zp)]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, channels, 3, 3])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    module = import_onnx(model)
    exported = export_onnx(module)
    x = (rng.standard_normal((1, 2, 3, 3)) * 50).astype(np.float32)
    assert np.array_equal(run(exported, x), run(model, x))


def _range(onnx_type):
    bits = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT16: 16,
            onnx.TensorProto.UINT16: 16, onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}[onnx_type]
    signed = onnx_type in (onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT4)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


# ---------------------------------------------------------------------- folded (qnn-fold-quant) modules


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_folded_qdq_module_exports_valid_onnx_with_the_models_outputs(tmp_path, per_channel):
    """After qnn-fold-quant a conv reads quantized operands and writes a quantized result: the export
    dequantizes the operands, runs the float op and quantizes the result (the IR's meaning), so the model
    is valid ONNX (no Conv on integers) and gives the QDQ model's outputs bit for bit."""
    from quantloop.passes.fold_quant import FoldQuantPass

    qdq = quantize(load_zoo_model(SMALL["resnet18"]), tmp_path, per_channel)
    module = canonical(qdq)
    FoldQuantPass().apply(make_context(), module)
    module.verify()
    folded = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    assert folded and all(isinstance(op.input.type.element_type, UniformType) for op in folded)
    exported = export_onnx(module)
    onnx.checker.check_model(exported, full_check=True)
    for x in random_inputs(qdq):
        expected = run(qdq, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        assert np.array_equal(run(exported, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), expected)
        assert np.abs(expected).max() > 0.1  # the bar is meaningful: outputs are not tiny


def test_folded_int4_module_moves_codes_through_float_where_onnxruntime_has_no_int4_kernel(tmp_path):
    """uint4 activations through Flatten / MaxPool after qnn-fold-quant: ONNX allows Flatten on int4 but
    onnxruntime has no kernel for it, so the export dequantizes around it; the outputs stay bit-exact."""
    from quantloop.passes.fold_quant import FoldQuantPass

    model = load_zoo_model("zoo:mobilenet_v1?width=0.25&resolution=32&num_classes=10&opset=21")
    qdq = quantize(model, tmp_path, True, weight_type=QuantType.QInt4, activation_type=QuantType.QUInt4)
    module = canonical(qdq)
    FoldQuantPass().apply(make_context(), module)
    moved = [op for op in module.walk() if isinstance(op, FlattenOp)]
    assert moved and moved[0].input.type.element_type.bits == 4
    exported = export_onnx(module)
    onnx.checker.check_model(exported, full_check=True)
    for x in random_inputs(qdq):
        expected = run(qdq, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        assert np.array_equal(run(exported, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), expected)
