"""Quantized models (QDQ, QOperator, QONNX) compile end to end and keep their own quantization.

For every model and both built-in targets: each accel layer's weight codes in `weights.bin` equal the
model's integer initializers, the layer's scales, zero points and bits are the model's own, and
`model.quant.onnx` gives the input model's outputs in onnxruntime (see `_check_outputs`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import quantloop
from quantloop.backend.weights import read_manifest, unpack, unpack_biases
from quantloop.frontend.zoo.builder import GraphBuilder
from quantloop.frontend.zoo.models import mobilenet_v2, resnet18

TARGETS = ("eyeriss", "simba")
COMPUTE = ("Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")


# ----------------------------------------------------------------------------- models


def small_cnn(opset: int = 17) -> onnx.ModelProto:
    """conv-relu, conv, residual add, maxpool, global pool, gemm: every pattern quantize_static emits."""
    b = GraphBuilder("small_cnn", seed=3, opset=opset)
    x = b.input("input", (1, 3, 8, 8))
    y = b.relu(b.conv(x, 8, 3, bias=True))
    z = b.relu(b.add(b.conv(y, 8, 3, bias=True), y))
    z = b.flatten(b.global_avgpool(b.maxpool(z, 2, 2, 0)))
    return b.build(b.gemm(z, 10))


class _RandomReader(CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self.batches, None)


def quantize(model: onnx.ModelProto, folder: Path, tag: str, *, fmt=QuantFormat.QDQ, weights=QuantType.QInt8,
             activations=QuantType.QUInt8, per_channel: bool = True) -> Path:
    """`onnxruntime.quantization.quantize_static` on seeded random calibration data."""
    src, dst = folder / f"{tag}.float.onnx", folder / f"{tag}.onnx"
    onnx.save(model, src)
    info = model.graph.input[0]
    shape = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
    quantize_static(str(src), str(dst), _RandomReader(info.name, shape), quant_format=fmt, per_channel=per_channel,
                    weight_type=weights, activation_type=activations)
    return dst


def folded_float(model: onnx.ModelProto, folder: Path, tag: str) -> onnx.ModelProto:
    """The model with BatchNorm folded into its convs (onnxruntime's pre-processing, as users run it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = folder / f"{tag}.bn.onnx", folder / f"{tag}.pre.onnx"
    onnx.save(model, src)
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return onnx.load(dst)


# ----------------------------------------------------------------------------- checks


class _Graph:
    def __init__(self, path: Path) -> None:
        self.model = onnx.load(path)
        self.inits = {t.name: t for t in self.model.graph.initializer}
        self.producer = {o: n for n in self.model.graph.node for o in n.output}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def quantized_initializer(self, name: str) -> tuple[str, list[str]]:
        """(initializer holding the codes, [scale, zero point]) of a weight or bias input."""
        if name in self.inits:
            return name, []
        dq = self.producer[name]
        assert dq.op_type == "DequantizeLinear", f"{name} comes from {dq.op_type}"
        return dq.input[0], list(dq.input[1:])

    def weight_operands(self, node: onnx.NodeProto) -> tuple[str, list[str], str | None]:
        """(weight codes, [scale, zero point], bias codes or None) of a compute node."""
        if node.op_type == "QLinearConv":
            return node.input[3], [node.input[4], node.input[5]], (node.input[8] if len(node.input) > 8 else None)
        if node.op_type == "QLinearMatMul":
            return node.input[3], [node.input[4], node.input[5]], None
        if node.op_type == "QGemm":
            return node.input[3], [node.input[4], node.input[5]], (node.input[6] if len(node.input) > 6 and node.input[6] else None)
        codes, params = self.quantized_initializer(node.input[1])
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self.quantized_initializer(node.input[2])[0]
        return codes, params, bias


def _bits(tensor: onnx.TensorProto) -> tuple[int, bool]:
    return {TensorProto.INT8: (8, True), TensorProto.UINT8: (8, False), TensorProto.INT4: (4, True),
            TensorProto.UINT4: (4, False), TensorProto.INT16: (16, True), TensorProto.UINT16: (16, False)}[tensor.data_type]


def check_weights(src: Path, out: Path) -> int:
    """weights.bin holds the model's own codes, scales, zero points and bits; returns the layers checked."""
    graph = _Graph(src)
    codes = unpack(out)
    biases = unpack_biases(out)
    manifest = {e["name"]: e for e in read_manifest(out)["layers"]}
    checked = 0
    for node in graph.model.graph.node:
        if node.op_type not in COMPUTE:
            continue
        assert node.name in codes, f"layer {node.name} has no weights in weights.bin ({sorted(codes)})"
        w, params, bias = graph.weight_operands(node)
        expected = graph.array(w)
        np.testing.assert_array_equal(codes[node.name], expected.astype(np.int64), err_msg=node.name)
        entry = manifest[node.name]
        assert (entry["bits"], entry["signed"]) == _bits(graph.inits[w]), node.name
        if params:
            scale = graph.array(params[0]).astype(np.float32).ravel()
            np.testing.assert_array_equal(np.asarray(entry["scales"], np.float32), scale, err_msg=node.name)
            if len(params) > 1 and params[1]:
                zp = graph.array(params[1]).astype(np.int64).ravel()
                np.testing.assert_array_equal(np.asarray(entry["zero_points"]), np.broadcast_to(zp, len(entry["zero_points"])))
        if bias is not None and graph.inits[bias].data_type == TensorProto.INT32:
            np.testing.assert_array_equal(biases[node.name], graph.array(bias), err_msg=f"{node.name} bias")
        checked += 1
    assert checked == len(codes), f"weights.bin has layers the model does not: {sorted(codes)}"
    return checked


def _session(path: Path, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_outputs(src: Path, out: Path, output_scale: float, samples: int = 4) -> dict[str, float]:
    """model.quant.onnx against the input model in onnxruntime, in LSBs of the output scale.

    With graph optimizations off onnxruntime runs the input model as ONNX defines it (DequantizeLinear,
    float op, QuantizeLinear) and the fake-quant model does the same float arithmetic: bit-exact. With
    them on it fuses QDQ groups into integer kernels (QLinearConv: int32 accumulation, one float
    requantization multiplier), which round differently from the float reference: at most 1 LSB.
    """
    reference = _session(out / "model.quant.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    info = reference.get_inputs()[0]
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(info.shape).astype(np.float32) for _ in range(samples)]
    ours = np.stack([reference.run(None, {info.name: x})[0] for x in xs])
    lsb = {}
    for tag, level in (("exact", ort.GraphOptimizationLevel.ORT_DISABLE_ALL), ("fused", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        theirs = _session(src, level)
        name = theirs.get_inputs()[0].name
        got = np.stack([theirs.run(None, {name: x})[0] for x in xs])
        lsb[tag] = float(np.abs(got - ours).max() / output_scale)
    assert lsb["exact"] == 0.0, lsb
    assert lsb["fused"] <= 1.0 + 1e-6, lsb
    return lsb


def output_scale(src: Path) -> float:
    graph = _Graph(src)
    last = graph.producer[graph.model.graph.output[0].name]
    assert last.op_type == "DequantizeLinear", last.op_type
    return float(graph.array(last.input[1]))


def compile_and_check(src: Path, out_root: Path, cache: Path, targets=TARGETS) -> None:
    for target in targets:
        out = out_root / f"{src.stem}-{target}"
        result = quantloop.compile(str(src), target=target, output_dir=out, cache_dir=str(cache), out=io.StringIO())
        assert result.layers, "no layer was mapped"
        assert all(np.isfinite(layer.energy_pj) for layer in result.layers)
        check_weights(src, out)
    check_outputs(src, out, output_scale(src))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mapper-cache")


# ----------------------------------------------------------------------------- QDQ


QDQ_VARIANTS = {
    "int8-per-channel": dict(weights=QuantType.QInt8, per_channel=True),
    "uint8-per-tensor": dict(weights=QuantType.QUInt8, per_channel=False),
    "int4-com.microsoft": dict(weights=QuantType.QInt4, per_channel=True),
}


#: The fast set maps each small model on one target (eyeriss at 4 bits has the largest mapspace); the slow
#: real networks below run every variant on both.
FAST_TARGETS = {"int8-per-channel": TARGETS, "uint8-per-tensor": ("eyeriss",), "int4-com.microsoft": ("simba",)}


@pytest.mark.parametrize("variant", sorted(QDQ_VARIANTS))
def test_qdq_small_cnn(variant, tmp_path, cache):
    src = quantize(small_cnn(), tmp_path, variant, **QDQ_VARIANTS[variant])
    compile_and_check(src, tmp_path, cache, FAST_TARGETS[variant])


def test_qdq_int4_opset21_uses_the_standard_domain(tmp_path, cache):
    src = quantize(small_cnn(opset=21), tmp_path, "int4-opset21", weights=QuantType.QInt4)
    domains = {n.domain for n in onnx.load(src).graph.node if n.op_type == "DequantizeLinear"}
    assert domains == {""}
    compile_and_check(src, tmp_path, cache, ("simba",))


def test_layer_bits_are_the_models_own(tmp_path, cache):
    """Int4 weights and uint8 activations from the model, not the default --bits w8a8."""
    src = quantize(small_cnn(), tmp_path, "int4", weights=QuantType.QInt4)
    result = quantloop.compile(str(src), target="eyeriss", bits="w2a2", cache_dir=str(cache), out=io.StringIO())
    assert [layer.bits for layer in result.layers] == ["w4 i8u o8u"] * 3


def test_fold_pass_shows_in_the_pipeline_dump(tmp_path, cache):
    src = quantize(small_cnn(), tmp_path, "dump")
    text = io.StringIO()
    quantloop.compile(str(src), print_ir_after_all=True, out=text)
    dump = text.getvalue()
    folded = dump.split("IR Dump After qnn-fold-quant")[1].split("IR Dump After")[0]
    assert "qnn.conv2d" in folded and "!qnn.uniform<i8:f32:0" in folded
    assert folded.count("qnn.dequantize") == 1  # only the model output's


# ----------------------------------------------------------------------------- real networks (slow)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8-per-channel", "uint8-per-tensor", "int4-com.microsoft", "int4-opset21"])
def test_qdq_resnet18(variant, tmp_path, cache):
    opset = 21 if variant == "int4-opset21" else 17
    options = QDQ_VARIANTS.get(variant, dict(weights=QuantType.QInt4))
    model = folded_float(resnet18(width=0.25, resolution=32, num_classes=10, opset=opset), tmp_path, variant)
    compile_and_check(quantize(model, tmp_path, variant, **options), tmp_path, cache)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8-per-channel", "uint8-per-tensor"])
def test_qdq_mobilenet_v2(variant, tmp_path, cache):
    model = folded_float(mobilenet_v2(width=0.35, resolution=32, num_classes=10), tmp_path, variant)
    compile_and_check(quantize(model, tmp_path, variant, **QDQ_VARIANTS[variant]), tmp_path, cache)
