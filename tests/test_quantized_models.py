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
EMIT = "weights,onnx"  # the artefacts the checks read
COMPUTE = ("Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")


# ----------------------------------------------------------------------------- models


def small_cnn(opset: int = 17) -> onnx.ModelProto:
    """conv-relu, depthwise conv, conv, residual add, maxpool, global pool, gemm: the patterns quantize_static
    emits for MobileNet and ResNet."""
    b = GraphBuilder("small_cnn", seed=3, opset=opset)
    x = b.input("input", (1, 3, 8, 8))
    y = b.relu(b.conv(b.relu(b.conv(x, 8, 3, bias=True)), 8, 3, group=8, bias=True))
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

    def activation_params(self, node: onnx.NodeProto) -> dict[str, tuple[str, str]]:
        """{"input" | "output": (scale, zero point)} the model gives a compute node's activations."""
        if node.op_type in ("QLinearConv", "QLinearMatMul", "QGemm"):
            params = {"input": (node.input[1], node.input[2])}
            if node.op_type != "QGemm":
                params["output"] = (node.input[6], node.input[7])
            elif len(node.input) > 8:
                params["output"] = (node.input[7], node.input[8])
            return params
        params = {}
        dq = self.producer.get(node.input[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            params["input"] = (dq.input[1], dq.input[2])
        readers = [n for n in self.model.graph.node if node.output[0] in n.input]
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
            params["output"] = (readers[0].input[1], readers[0].input[2])
        return params

    def weight_operands(self, node: onnx.NodeProto) -> tuple[str, list[str], str | None]:
        """(weight codes, [scale, zero point], bias codes or None) of a compute node."""
        if node.op_type == "QLinearConv":
            return node.input[3], [node.input[4], node.input[5]], (node.input[8] if len(node.input) > 8 else None)
        if node.op_type == "QLinearMatMul":
            return node.input[3], [node.input[4], node.input[5]], None
        if node.op_type in ("ConvInteger", "MatMulInteger"):  # scales live in the dynamic chain's Mul
            return node.input[1], [], None
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


def check_qdq_domain(src: Path, variant: str) -> None:
    """The quantizer really wrote the Q/DQ domain the variant is about: `com.microsoft` for ORT's int4
    below opset 21, the standard domain otherwise (else an int4 test could silently test int8)."""
    model = onnx.load(str(src), load_external_data=False)
    domains = {n.domain for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    expected = {"com.microsoft"} if variant.endswith("com.microsoft") else {""}
    assert domains == expected, f"{variant}: Q/DQ domains {domains}, expected {expected}"


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
        for key, (scale_name, zp_name) in graph.activation_params(node).items():
            got = entry["activations"][key]
            assert (got["scale"], got["zero_point"]) == (float(graph.array(scale_name)), int(graph.array(zp_name))), (node.name, key)
            assert (got["bits"], got["signed"]) == _bits(graph.inits[zp_name]), (node.name, key)
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


def check_outputs(src: Path, out: Path, output_scale: float, samples: int = 4, integer_kernels: bool = False) -> dict[str, float]:
    """model.quant.onnx against the input model in onnxruntime, in LSBs of the output scale.

    With graph optimizations off onnxruntime runs a QDQ model as ONNX defines it (DequantizeLinear,
    float op, QuantizeLinear) and the fake-quant model does the same float arithmetic: bit-exact. With
    them on it fuses QDQ groups into integer kernels (QLinearConv: int32 accumulation, one float
    requantization multiplier), which may round differently from the float reference: at most 1 LSB.
    A QOperator model (`integer_kernels`) runs those kernels at every level: at most 1 LSB.
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
    assert lsb["exact"] <= (1.0 + 1e-6 if integer_kernels else 0.0), lsb
    assert lsb["fused"] <= 1.0 + 1e-6, lsb
    return lsb


def output_scale(src: Path) -> float:
    graph = _Graph(src)
    last = graph.producer[graph.model.graph.output[0].name]
    assert last.op_type == "DequantizeLinear", last.op_type
    return float(graph.array(last.input[1]))


def compile_and_check(src: Path, out_root: Path, cache: Path, targets=TARGETS, integer_kernels: bool = False) -> None:
    for target in targets:
        out = out_root / f"{src.stem}-{target}"
        result = quantloop.compile(str(src), target=target, output_dir=out, cache_dir=str(cache), emit=EMIT, out=io.StringIO())
        assert result.layers, "no layer was mapped"
        assert all(np.isfinite(layer.energy_pj) for layer in result.layers)
        check_weights(src, out)
    check_outputs(src, out, output_scale(src), integer_kernels=integer_kernels)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mapper-cache")


# ----------------------------------------------------------------------------- QDQ


QDQ_VARIANTS = {
    "int8-per-channel": dict(weights=QuantType.QInt8, per_channel=True),
    "uint8-per-tensor": dict(weights=QuantType.QUInt8, per_channel=False),
    "int4-com.microsoft": dict(weights=QuantType.QInt4, per_channel=True),
}


QDQ_VARIANTS["uint4-per-tensor"] = dict(weights=QuantType.QUInt4, per_channel=False, opset=21)

#: The fast set maps each small model on one target (eyeriss at 4 bits has the largest mapspace); the slow
#: real networks below run every variant on both.
FAST_TARGETS = {"int8-per-channel": TARGETS, "uint8-per-tensor": ("eyeriss",), "int4-com.microsoft": ("simba",),
                "uint4-per-tensor": ("simba",)}


@pytest.mark.parametrize("variant", sorted(QDQ_VARIANTS))
def test_qdq_small_cnn(variant, tmp_path, cache):
    options = dict(QDQ_VARIANTS[variant])
    src = quantize(small_cnn(options.pop("opset", 17)), tmp_path, variant, **options)
    compile_and_check(src, tmp_path, cache, FAST_TARGETS[variant])


def test_qdq_reduce_mean_without_keepdims_is_quantized_once(tmp_path, cache):
    """ReduceMean(keepdims=0) imports as global_avgpool + reshape and the model quantizes after the reshape:
    qnn-fold-quant gives the pool that quantization too, so calibration does not quantize the pooled values a
    second time at a scale of their own (which made QDQ ShuffleNetV2 differ by 1 LSB)."""
    from quantloop.frontend import import_onnx
    from quantloop.ir import GlobalAvgPoolOp, ReshapeOp, make_context
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.passes.fold_quant import FoldQuantPass

    b = GraphBuilder("reduce_mean_cnn", seed=4)
    x = b.input("input", (1, 3, 8, 8))
    y = b.relu(b.conv(x, 8, 3, bias=True))
    b.nodes.append(helper.make_node("ReduceMean", [y], ["mean"], axes=[2, 3], keepdims=0, name="mean"))
    b.shapes["mean"] = (1, 8)
    src = quantize(b.build(b.gemm("mean", 4)), tmp_path, "qdq-mean")
    module = import_onnx(str(src))
    CanonicalizePass().apply(make_context(), module)
    FoldQuantPass().apply(make_context(), module)
    (pool,) = [op for op in module.walk() if isinstance(op, GlobalAvgPoolOp)]
    (squeeze,) = [op for op in module.walk() if isinstance(op, ReshapeOp)]
    assert squeeze.input is pool.results[0]
    assert pool.results[0].type.element_type == squeeze.results[0].type.element_type
    assert hasattr(pool.results[0].type.element_type, "scale")
    compile_and_check(src, tmp_path, cache, ("simba",))


def test_qdq_int4_opset21_uses_the_standard_domain(tmp_path, cache):
    src = quantize(small_cnn(opset=21), tmp_path, "int4-opset21", weights=QuantType.QInt4)
    domains = {n.domain for n in onnx.load(src).graph.node if n.op_type == "DequantizeLinear"}
    assert domains == {""}
    compile_and_check(src, tmp_path, cache, ("simba",))


def test_qoperator_small_cnn(tmp_path, cache):
    src = quantize(small_cnn(), tmp_path, "qop", fmt=QuantFormat.QOperator)
    ops = {n.op_type for n in onnx.load(src).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= ops
    compile_and_check(src, tmp_path, cache, ("eyeriss",), integer_kernels=True)


def test_qoperator_elementwise_and_concat(tmp_path, cache):
    """SiLU (x · sigmoid x) and a concat: QLinearSigmoid, QLinearMul, QLinearConcat run on the host."""
    b = GraphBuilder("silu_cnn", seed=5)
    x = b.input("input", (1, 3, 8, 8))
    c = b.conv(x, 8, 3, bias=True)
    for op, inputs, out in (("Sigmoid", [c], "sig"), ("Mul", [c, "sig"], "silu")):
        b.nodes.append(helper.make_node(op, inputs, [out], name=op.lower()))
        b.shapes[out] = b.shapes[c]
    b.nodes.append(helper.make_node("Concat", [c, "silu"], ["cat"], axis=1, name="concat"))
    b.shapes["cat"] = (1, 16, 8, 8)
    y = b.gemm(b.flatten(b.global_avgpool(b.conv("cat", 8, 1, bias=True))), 4)
    src = quantize(b.build(y), tmp_path, "qop-silu", fmt=QuantFormat.QOperator)
    ops = {n.op_type for n in onnx.load(src).graph.node}
    assert {"QLinearSigmoid", "QLinearMul", "QLinearConcat"} <= ops
    compile_and_check(src, tmp_path, cache, ("simba",), integer_kernels=True)


def test_qoperator_channel_shuffle_after_qlinear_concat(tmp_path, cache):
    """ShuffleNet's channel shuffle in QOperator form: Reshape / Transpose of uint8 codes after a
    com.microsoft QLinearConcat, whose output ONNX shape inference alone does not see."""
    b = GraphBuilder("shuffle_cnn", seed=6)
    x = b.input("input", (1, 3, 8, 8))
    left, right = b.relu(b.conv(x, 4, 3, bias=True)), b.relu(b.conv(x, 4, 1, bias=True))
    b.nodes.append(helper.make_node("Concat", [left, right], ["cat"], axis=1, name="concat"))
    b.nodes += [helper.make_node("Reshape", ["cat", "split_shape"], ["groups"], name="reshape"),
                helper.make_node("Transpose", ["groups"], ["shuffled"], perm=[0, 2, 1, 3, 4], name="transpose"),
                helper.make_node("Reshape", ["shuffled", "flat_shape"], ["mixed"], name="reshape_back")]
    b.shapes.update(cat=(1, 8, 8, 8), groups=(1, 2, 4, 8, 8), shuffled=(1, 4, 2, 8, 8), mixed=(1, 8, 8, 8))
    y = b.gemm(b.flatten(b.global_avgpool(b.conv("mixed", 8, 3, bias=True))), 4)
    model = b.build(y)  # the builder's initializers are float: the int64 shapes go in afterwards
    model.graph.initializer.extend([numpy_helper.from_array(np.array([1, 2, 4, 8, 8], np.int64), "split_shape"),
                                    numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "flat_shape")])
    src = quantize(model, tmp_path, "qop-shuffle", fmt=QuantFormat.QOperator)
    graph = onnx.load(src).graph
    assert ("com.microsoft", "QLinearConcat") in {(n.domain, n.op_type) for n in graph.node}
    transpose = next(n for n in graph.node if n.op_type == "Transpose")
    assert transpose.input[0].endswith("_quantized"), "the Transpose must move uint8 codes, as in QOperator ShuffleNetV2"
    compile_and_check(src, tmp_path, cache, ("simba",), integer_kernels=True)


def test_qoperator_average_pool(tmp_path, cache):
    """DenseNet's transition layers in QOperator form: onnxruntime's com.microsoft QLinearAveragePool."""
    b = GraphBuilder("avgpool_cnn", seed=7)
    x = b.input("input", (1, 3, 8, 8))
    y = b.relu(b.conv(x, 8, 3, bias=True))
    z = b.gemm(b.flatten(b.global_avgpool(b.conv(b.avgpool(y, 2, 2), 8, 3, bias=True))), 4)
    src = quantize(b.build(z), tmp_path, "qop-avgpool", fmt=QuantFormat.QOperator)
    assert ("com.microsoft", "QLinearAveragePool") in {(n.domain, n.op_type) for n in onnx.load(src).graph.node}
    compile_and_check(src, tmp_path, cache, ("simba",), integer_kernels=True)


def test_qlinear_matmul(tmp_path, cache):
    b = GraphBuilder("mlp", seed=1)
    x = b.input("x", (4, 16))
    w = "w"
    b.initializers.append((w, np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)))
    b.nodes.append(helper.make_node("MatMul", [x, w], ["y"], name="mm"))
    b.shapes["y"] = (4, 8)
    src = quantize(b.build("y"), tmp_path, "qlinear-matmul", fmt=QuantFormat.QOperator, per_channel=False)
    assert "QLinearMatMul" in {n.op_type for n in onnx.load(src).graph.node}
    compile_and_check(src, tmp_path, cache, ("simba",), integer_kernels=True)


def test_dynamic_quantization_keeps_the_weights_and_calibrates_the_activations(tmp_path, cache):
    """quantize_dynamic's ConvInteger / MatMulInteger chains: the layers keep the model's uint8 weight codes;
    activations, which the model quantizes with run-time scales, get --bits and calibration. Outputs then
    differ from the model's by that difference of activation scales (checked loosely, 5 % of the range)."""
    from onnxruntime.quantization import quantize_dynamic

    from quantloop.passes.calibrate import CalibrationWarning

    src, dst = tmp_path / "dyn.float.onnx", tmp_path / "dyn.onnx"
    onnx.save(small_cnn(), src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= ops
    out = tmp_path / "out"
    with pytest.warns(CalibrationWarning):
        result = quantloop.compile(str(dst), target="simba", output_dir=out, cache_dir=str(cache), emit=EMIT, out=io.StringIO())
    assert [layer.bits.split()[0] for layer in result.layers] == ["w8u"] * 4
    assert check_weights(dst, out) == 4
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    theirs = _session(dst, ort.GraphOptimizationLevel.ORT_ENABLE_ALL).run(None, {"input": x})[0]
    ours = _session(out / "model.quant.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"input": x})[0]
    assert np.abs(theirs - ours).max() <= 0.05 * np.abs(theirs).max()


@pytest.mark.parametrize("op_type", ["ConvInteger", "MatMulInteger"])
def test_integer_accumulator_ops_outside_the_dynamic_chain_are_refused(op_type):
    from quantloop.errors import QuantloopError

    conv = op_type == "ConvInteger"
    x_shape, w_shape, y_shape = ([1, 2, 4, 4], (3, 2, 1, 1), [1, 3, 4, 4]) if conv else ([2, 4], (4, 3), [2, 3])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["f", "s", "z"], ["q"], name="quant"),
         helper.make_node(op_type, ["q", "w"], ["y"], name="acc")],
        "g", [helper.make_tensor_value_info("f", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, y_shape)],
        [numpy_helper.from_array(np.ones(w_shape, np.uint8), "w"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
         numpy_helper.from_array(np.array(0, np.uint8), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(QuantloopError, match=f"{op_type} writes int32 accumulators whose scale is not in the model"):
        quantloop.compile(model)


def test_a_bits_file_sets_float_layers_and_refuses_the_models_own(tmp_path, cache):
    import json

    from quantloop.errors import QuantloopError

    model = small_cnn()
    src, dst = tmp_path / "partial.float.onnx", tmp_path / "partial.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), _RandomReader("input", (1, 3, 8, 8)), quant_format=QuantFormat.QDQ,
                    per_channel=True, nodes_to_exclude=["fc_11"])
    bits = tmp_path / "bits.json"
    bits.write_text(json.dumps({"fc_11": {"weights": 2}}))
    from quantloop.passes.calibrate import CalibrationWarning

    with pytest.warns(CalibrationWarning):  # the float Gemm's output range comes from random inputs
        result = quantloop.compile(str(dst), target="simba", bits_file=str(bits), cache_dir=str(cache), out=io.StringIO())
    assert {layer.name: layer.bits.split()[0] for layer in result.layers} == {
        "conv_1": "w8", "conv_3": "w8", "conv_5": "w8", "fc_11": "w2"}
    bits.write_text(json.dumps({"conv_3": {"weights": 4}}))
    with pytest.raises(QuantloopError, match=r"layer 'conv_3'.*quantizes its weights itself \(8 bits\)"):
        quantloop.compile(str(dst), bits_file=str(bits), out=io.StringIO())


def test_int16_activations_keep_their_bits_and_a_target_too_narrow_says_so(tmp_path):
    from quantloop.errors import QuantloopError
    from quantloop.ir.types import UniformType

    src = quantize(small_cnn(), tmp_path, "int16", activations=QuantType.QInt16)
    module = quantloop.compile(str(src), out=io.StringIO()).module
    convs = [op for op in module.walk() if op.name == "qnn.conv2d"]
    assert convs and all(isinstance(op.results[0].type.element_type, UniformType) for op in convs)
    assert {(op.results[0].type.element_type.bits, op.results[0].type.element_type.signed) for op in convs} == {(16, True)}
    with pytest.raises(QuantloopError, match=r"layer 'conv_1'.*16 bits, wider than the 8-bit word") as err:
        quantloop.compile(str(src), target="simba", out=io.StringIO())
    assert str(err.value).startswith(f"{src}: ")  # names the model, though the message names the target "simba"


def test_tensors_the_model_leaves_float_get_bits_from_the_options(tmp_path, cache):
    """The Gemm left out of quantization gets --bits w4a8 and calibration; the QDQ convs keep int8/uint8."""
    model = small_cnn()
    src, dst = tmp_path / "partial.float.onnx", tmp_path / "partial.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), _RandomReader("input", (1, 3, 8, 8)), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    nodes_to_exclude=["fc_11"])
    from quantloop.passes.calibrate import CalibrationWarning

    with pytest.warns(CalibrationWarning):  # the float Gemm's output range comes from random inputs
        result = quantloop.compile(str(dst), target="simba", bits="w4a8", cache_dir=str(cache), out=io.StringIO())
    bits = {layer.name: layer.bits for layer in result.layers}
    assert bits["conv_1"] == bits["conv_3"] == bits["conv_5"] == "w8 i8u o8u"
    assert bits["fc_11"].startswith("w4 i8u o8")


def test_fold_is_a_no_op_on_float_models():
    from quantloop.frontend import import_onnx
    from quantloop.ir import make_context
    from quantloop.ir.qnn import print_module
    from quantloop.passes.pipeline import run_pipeline

    module = run_pipeline(import_onnx("zoo:cnn_digits"), "qnn-canonicalize", make_context())
    before = print_module(module, elide_weights_over=None)
    assert print_module(run_pipeline(module, "qnn-fold-quant", make_context()), elide_weights_over=None) == before


def test_dequantized_constant_outside_a_weight_operand_becomes_its_float_values():
    """An int8 constant added to an activation: the Add reads float32((q - zp) * scale), as DequantizeLinear."""
    from quantloop.ir.ops import AddOp, ConstantOp

    codes = np.arange(-6, 6, dtype=np.int8).reshape(1, 12)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["c", "s", "z"], ["cf"], name="dq"), helper.make_node("Add", ["x", "cf"], ["y"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])],
        [numpy_helper.from_array(codes, "c"), numpy_helper.from_array(np.array(0.3, np.float32), "s"),
         numpy_helper.from_array(np.array(2, np.int8), "z")],
    )
    module = quantloop.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out=io.StringIO()).module
    (add,) = [op for op in module.walk() if isinstance(op, AddOp)]
    constant = add.rhs.owner
    assert isinstance(constant, ConstantOp)
    np.testing.assert_array_equal(constant.array, (codes.astype(np.float32) - 2) * np.float32(0.3))
    assert not [op for op in module.walk() if op.name == "qnn.dequantize"]


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
    qdq_network(lambda opset: resnet18(width=0.25, resolution=32, num_classes=10, opset=opset), variant, tmp_path, cache)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8-per-channel", "uint8-per-tensor", "int4-com.microsoft", "int4-opset21"])
def test_qdq_mobilenet_v2(variant, tmp_path, cache):
    qdq_network(lambda opset: mobilenet_v2(width=0.35, resolution=32, num_classes=10, opset=opset), variant, tmp_path, cache)


def qdq_network(build, variant: str, tmp_path: Path, cache: Path) -> None:
    """A zoo network, BatchNorm folded, quantized as `variant` (int4-opset21: int4 in the standard domain)."""
    opset = 21 if variant == "int4-opset21" else 17
    options = {k: v for k, v in QDQ_VARIANTS.get(variant, dict(weights=QuantType.QInt4)).items() if k != "opset"}
    model = folded_float(build(opset), tmp_path, variant)
    src = quantize(model, tmp_path, variant, **options)
    check_qdq_domain(src, variant)
    compile_and_check(src, tmp_path, cache)


@pytest.mark.slow
def test_qoperator_resnet18(tmp_path, cache):
    model = folded_float(resnet18(width=0.25, resolution=32, num_classes=10), tmp_path, "qop")
    compile_and_check(quantize(model, tmp_path, "qop", fmt=QuantFormat.QOperator), tmp_path, cache, integer_kernels=True)


# ----------------------------------------------------------------------------- QONNX

QONNX = "qonnx.custom_op.general"


def qonnx_cnn() -> onnx.ModelProto:
    """Quant nodes at 2, 4 and 8 bits on weights and activations (signed, unsigned, narrow, per channel)."""
    rng = np.random.default_rng(11)
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def quant(x: str, out: str, scale, bits: int, signed: int, narrow: int = 0) -> str:
        inputs = [x, const(f"{out}.scale", scale), const(f"{out}.zeropt", 0.0), const(f"{out}.bitwidth", bits)]
        nodes.append(helper.make_node("Quant", inputs, [out], domain=QONNX, name=f"{out}_quant", signed=signed,
                                      narrow=narrow, rounding_mode="ROUND"))
        return out

    def weight(name: str, shape, bits: int, narrow: int) -> str:
        w = rng.standard_normal(shape).astype(np.float32) * 0.3
        qmax = 2 ** (bits - 1) - 1
        scale = (np.abs(w).reshape(shape[0], -1).max(axis=1) / qmax).reshape((-1,) + (1,) * (len(shape) - 1))
        return quant(const(name, w), f"{name}_q", scale.astype(np.float32), bits, 1, narrow)

    x = quant("x", "x_q", 0.05, 8, 1)
    nodes.append(helper.make_node("Conv", [x, weight("conv1.w", (8, 3, 3, 3), 2, 1)], ["c1"], pads=[1, 1, 1, 1], name="conv1"))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    a1 = quant("r1", "a1", 0.1, 4, 0)
    nodes.append(helper.make_node("Conv", [a1, weight("conv2.w", (8, 8, 3, 3), 4, 0)], ["c2"], pads=[1, 1, 1, 1], name="conv2"))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    a2 = quant("r2", "a2", 0.05, 8, 0)
    nodes.append(helper.make_node("GlobalAveragePool", [a2], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", [quant("gap", "a3", 0.05, 8, 0)], ["flat"], name="flatten"))
    a3 = "flat"
    nodes.append(helper.make_node("Gemm", [a3, weight("fc.w", (10, 8), 8, 1)], ["logits"], transB=1, name="fc"))
    quant("logits", "y", 0.02, 8, 1)
    graph = helper.make_graph(nodes, "qonnx_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)])


@pytest.mark.parametrize("targets", [("simba",), pytest.param(TARGETS, marks=pytest.mark.slow)], ids=["simba", "both"])
def test_qonnx_cnn_compiles_with_its_own_bits_codes_and_outputs(targets, tmp_path, cache):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.general.quant import quant

    model = qonnx_cnn()
    src = tmp_path / "qonnx.onnx"
    onnx.save(model, src)
    graph = _Graph(src)
    expected_bits = {"conv1": "w2 i8 o4u", "conv2": "w4 i4u o8u", "fc": "w8 i8u o8"}
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(model).transform(InferShapes())
    reference = np.stack([execute_onnx(wrapper, {"x": x})["y"] for x in xs])
    for target in targets:
        out = tmp_path / target
        result = quantloop.compile(str(src), target=target, output_dir=out, cache_dir=str(cache), emit=EMIT, out=io.StringIO())
        assert {layer.name: layer.bits for layer in result.layers} == expected_bits
        codes = unpack(out)
        for node in graph.model.graph.node:
            if node.op_type not in ("Conv", "Gemm"):
                continue
            q = graph.producer[node.input[1]]
            w, scale, zeropt, bits = (graph.array(name) for name in q.input)
            attrs = {a.name: helper.get_attribute_value(a) for a in q.attribute}
            values = quant(w, scale, zeropt, bits, attrs["signed"], attrs["narrow"], "ROUND")
            np.testing.assert_array_equal(codes[node.name], np.round(values / scale + zeropt).astype(np.int64))
        ours = _session(out / "model.quant.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        got = np.stack([ours.run(None, {"x": x})[0] for x in xs])
        # Quant rounds as the fake quantization does and qonnx runs the float ops in onnxruntime: bit-exact.
        np.testing.assert_array_equal(got, reference)


def _qonnx_model(nodes, inits, x_shape, y_shape, opset_version: int = 2) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "qonnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, opset_version)])


def _qonnx_reference(model: onnx.ModelProto, xs: list[np.ndarray]) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(model).transform(InferShapes())
    return np.stack([execute_onnx(wrapper, {"x": x})["y"] for x in xs])


def test_qonnx_bipolar_weights(tmp_path, cache):
    """BipolarQuant weights become 2-bit ±1 codes at the model's scale; outputs bit-exact."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Quant", ["x", "xs", "z", "b8"], ["xq"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND", name="quant_x"),
        helper.make_node("BipolarQuant", ["w", "ws"], ["wq"], domain=QONNX, name="binary_w"),
        helper.make_node("Conv", ["xq", "wq"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Quant", ["c", "ys", "z", "b8"], ["y"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND", name="quant_y"),
    ]
    model = _qonnx_model(nodes, {"xs": 0.02, "z": 0.0, "b8": 8, "w": w, "ws": 0.05, "ys": 0.05}, [1, 3, 6, 6], [1, 4, 6, 6])
    src = tmp_path / "bipolar.onnx"
    onnx.save(model, src)
    out = tmp_path / "out"
    result = quantloop.compile(str(src), target="simba", output_dir=out, cache_dir=str(cache), emit=EMIT, out=io.StringIO())
    assert [layer.bits for layer in result.layers] == ["w2 i8 o8"]
    np.testing.assert_array_equal(unpack(out)["conv"], np.where(w >= 0, 1, -1))
    xs = [rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(4)]
    ours = _session(out / "model.quant.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(np.stack([ours.run(None, {"x": x})[0] for x in xs]), _qonnx_reference(model, xs))


@pytest.mark.parametrize("scale, exact", [(2.0**-6, True), (0.02, False)], ids=["power-of-two", "other"])
def test_qonnx_trunc(scale, exact, tmp_path):
    """Trunc (ROUND) of 8-bit codes to 5 bits (t = 8). With a power-of-two scale (as Brevitas' truncation
    uses) the float reference is exact; with another scale x = q·scale is rounded to float32, so a tie
    q / t = n + 1/2 may round either way: at most 1 LSB of out_scale."""
    nodes = [
        helper.make_node("Quant", ["x", "xs", "z", "b8"], ["xq"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND", name="quant_x"),
        helper.make_node("Trunc", ["xq", "xs", "z", "b8", "ts", "b5"], ["y"], domain=QONNX, signed=1, rounding_mode="ROUND", name="trunc"),
    ]
    model = _qonnx_model(nodes, {"xs": scale, "z": 0.0, "b8": 8, "ts": 8 * scale, "b5": 5}, [64, 64], [64, 64])
    from quantloop.runtime.fakequant_export import export_fakequant_onnx

    path = tmp_path / "trunc.quant.onnx"
    onnx.save(export_fakequant_onnx(quantloop.compile(model, out=io.StringIO()).module), path)  # no layer to map
    xs = [np.random.default_rng(9).standard_normal((64, 64)).astype(np.float32) * 64 * scale]
    ours = _session(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    got, reference = ours.run(None, {"x": xs[0]})[0], _qonnx_reference(model, xs)[0]
    lsb = np.abs(got - reference) / np.float32(8 * scale)
    assert lsb.max() == 0.0 if exact else lsb.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("change, message", [
    (dict(rounding_mode="FLOOR"), "rounding_mode FLOOR is not supported"),
    (dict(inputs=5), "Trunc v1"),
    (dict(bipolar_activation=True), "BipolarQuant of activations"),
])
def test_qonnx_refusals_name_the_reason(change, message):
    from quantloop.errors import QuantloopError

    trunc_inputs = ["xq", "xs", "z", "b8", "ts", "b5"][: change.get("inputs", 6)]
    nodes = [helper.make_node("Quant", ["x", "xs", "z", "b8"], ["xq"], domain=QONNX, signed=1, name="quant_x"),
             helper.make_node("Trunc", trunc_inputs, ["y"], domain=QONNX, name="trunc",
                              rounding_mode=change.get("rounding_mode", "ROUND"))]
    if change.get("bipolar_activation"):
        nodes = [helper.make_node("BipolarQuant", ["x", "xs"], ["y"], domain=QONNX, name="binary_x")]
    model = _qonnx_model(nodes, {"xs": 0.02, "z": 0.0, "b8": 8, "ts": 0.16, "b5": 5}, [1, 4], [1, 4])
    with pytest.raises(QuantloopError, match=message):
        quantloop.compile(model)


def test_int64_constants_of_host_ops_pass_through_calibration_and_the_fake_quant_model(tmp_path):
    """Calibration and model.quant.onnx export run the model with a Slice's int64 starts/ends unchanged."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["y"], name="slice")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([1], np.int64), "starts"), numpy_helper.from_array(np.array([3], np.int64), "ends"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from quantloop.passes.calibrate import CalibrationWarning

    with pytest.warns(CalibrationWarning):
        quantloop.compile(model, target="simba", output_dir=tmp_path / "out", emit="onnx", out=io.StringIO())
    session = _session(tmp_path / "out" / "model.quant.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert session.run(None, {"x": np.ones((1, 3, 4, 4), np.float32)})[0].shape == (1, 2, 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2"])
def test_qdq_torch_cnns_with_host_ops(name, tmp_path, cache):
    """QDQ around host ops (HardSigmoid, Mul, Transpose, Slice with int64 constants) keeps the model's
    quantization on every tensor: bit-exact outputs, the model's own codes."""
    import torch

    from quantloop.frontend.zoo.torch_cnns import build

    net = build(name, width=0.25, num_classes=10).eval()
    path = tmp_path / f"{name}.float.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 32, 32), path, dynamo=False, opset_version=13, input_names=["input"])
    model = folded_float(onnx.load(path), tmp_path, name)
    compile_and_check(quantize(model, tmp_path, name), tmp_path, cache, ("simba",))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2"])
def test_qoperator_torch_cnns(name, tmp_path, cache):
    """QOperator with onnxruntime's QLinearMul (squeeze-excitation), QLinearConcat (fire modules) and the
    channel shuffle on uint8 codes after a QLinearConcat (ShuffleNetV2)."""
    import torch

    from quantloop.frontend.zoo.torch_cnns import build

    path = tmp_path / f"{name}.float.onnx"
    torch.onnx.export(build(name, width=0.25, num_classes=10).eval(), torch.randn(1, 3, 32, 32), path,
                      dynamo=False, opset_version=13, input_names=["input"])
    model = folded_float(onnx.load(path), tmp_path, name)
    compile_and_check(quantize(model, tmp_path, name, fmt=QuantFormat.QOperator), tmp_path, cache, ("simba",),
                      integer_kernels=True)
