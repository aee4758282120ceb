"""export_fakequant_onnx: every fake quantization equals numpy's bit for bit in onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from xdsl.dialects.builtin import TensorType, f32

from quantloop.errors import QuantloopError
from quantloop.runtime.fakequant_export import FakeQuantExporter, export_fakequant_onnx
from quantloop.frontend.onnx_import import import_onnx
from quantloop.ir.types import quant_params
from quantloop.frontend.zoo.registry import load_zoo_model
from quantloop.ir import quantization as q
from quantloop.ir.qnn import (
    AddOp,
    ConstantOp,
    Conv2dOp,
    FlattenOp,
    MainBuilder,
    MaxPoolOp,
    UniformType,
    is_float,
    main_func,
    make_context,
)
from quantloop.passes.assign_bits import AssignBitsPass
from quantloop.passes.calibrate import CalibratePass, CalibrationWarning
from quantloop.passes.canonicalize import CanonicalizePass

SMALL = "zoo:mobilenet_v2?width=0.25&resolution=32&num_classes=10"


def session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def input_shape(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def calibrated_zoo(spec: str, bits: str, scheme: str = "int", data: str = ""):
    module = import_onnx(load_zoo_model(spec))
    ctx = make_context()
    CanonicalizePass().apply(ctx, module)
    AssignBitsPass(bits=bits).apply(ctx, module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        CalibratePass(data=data, scheme=scheme, samples=8).apply(ctx, module)
    return module


def bits_of(value) -> np.ndarray:
    return np.ascontiguousarray(value, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize(
    "bits,scheme,qdq",
    [("w8a8", "int", False), ("w4a4", "pot", False), ("w3a5", "int", False), ("w6a2", "pot2", False),
     ("w8a16", "int", False), ("w8a8", "int", True), ("w4a4", "int", True)],
)
def test_every_fake_quantization_matches_numpy_bit_for_bit(bits, scheme, qdq):
    module = calibrated_zoo(SMALL, bits, scheme)
    exporter = FakeQuantExporter(module, qdq=qdq)
    model = exporter.export("t")
    onnx.checker.check_model(model)
    checked = list(exporter.raw_names)
    assert len(checked) > 20
    for value in checked:
        for name in (exporter.raw_names[value], exporter.names[value]):
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    x = np.random.default_rng(0).standard_normal(input_shape(model)).astype(np.float32) * 2
    # QDQ nodes are exact only without onnxruntime's QDQ fusions; the elementary form at any level.
    sess = session(model, optimize=not qdq)
    names = [o.name for o in sess.get_outputs()]
    results = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
    clipped = 0
    for value in checked:
        elem = value.type.element_type
        scale, zp, axis = quant_params(elem)
        raw = results[exporter.raw_names[value]]
        expected = q.fake_quant(raw, scale, zp, elem.bits, elem.signed, axis=axis)
        np.testing.assert_array_equal(bits_of(results[exporter.names[value]]), bits_of(expected))
        qmin, qmax = q.qrange(elem.bits, elem.signed)
        clipped += int((q.quantize(raw, scale, zp, elem.bits, elem.signed) == qmax).any())
    assert clipped  # the check covers saturating values too
    # weights: float initializers holding exactly the decoded codes, read directly by Conv / Gemm
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_inputs = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    constants = [op for op in module.walk() if isinstance(op, ConstantOp) and not is_float(op.output)]
    assert {exporter.names[c.output] for c in constants} == weight_inputs
    for c in constants:
        wq = q.weight_quantization(c)
        assert wq.scheme == scheme
        np.testing.assert_array_equal(bits_of(inits[exporter.names[c.output]]), bits_of(wq.decode(c.array)))


def hand_model():
    """x -> conv_a (1x1, relu) and conv_b (1x1) -> add + relu -> maxpool 2x2 -> flatten.

    With one input channel and 1x1 kernels every conv output is a single float32 product, so numpy
    computes the whole network exactly as onnxruntime does.
    """
    b = MainBuilder([TensorType(f32, [1, 1, 4, 4])], ["x"])
    wa = b.add(ConstantOp(np.array([0.7, -1.3, 0.45], np.float32).reshape(3, 1, 1, 1), name="wa"))
    wb = b.add(ConstantOp(np.array([-0.2, 0.9, 1.1], np.float32).reshape(3, 1, 1, 1), name="wb"))
    a = b.add(Conv2dOp(b.args[0], wa, act="relu", name="conv_a"))
    c = b.add(Conv2dOp(b.args[0], wb, name="conv_b"))
    s = b.add(AddOp(a, c, act="relu", name="add"))
    p = b.add(MaxPoolOp(s, [2, 2], strides=[2, 2], name="pool"))
    f = b.add(FlattenOp(p, 1, name="flat"))
    return b.finish([f])


def numpy_reference(module, x: np.ndarray) -> np.ndarray:
    ops = {op.node_name: op for op in module.walk() if getattr(op, "node_name", None)}

    def fq(value, v):
        elem = value.type.element_type
        return q.fake_quant(v, elem.scale, elem.zero_point, elem.bits, elem.signed)

    def weights(name):
        c = ops[name]
        return q.weight_quantization(c).decode(c.array).reshape(1, 3, 1, 1)

    xq = fq(ops["conv_a"].input, x)
    a = fq(ops["conv_a"].output, np.maximum(weights("wa") * xq, np.float32(0)))
    c = fq(ops["conv_b"].output, weights("wb") * xq)
    s = fq(ops["add"].output, np.maximum(a + c, np.float32(0)))
    pooled = s.reshape(1, 3, 2, 2, 2, 2).max(axis=(3, 5))
    assert ops["pool"].output.type.element_type == ops["add"].output.type.element_type
    return pooled.reshape(1, 12)


@pytest.mark.parametrize("bits", ["w8a8", "w4a3", "w2a5", "w5a16"])
def test_whole_network_equals_numpy_reference(tmp_path, bits):
    rng = np.random.default_rng(3)
    data = tmp_path / "calib.npz"
    np.savez(data, x=rng.standard_normal((6, 1, 4, 4)).astype(np.float32))
    module = hand_model()
    ctx = make_context()
    AssignBitsPass(bits=bits, input_bits=int(bits.split("a")[1])).apply(ctx, module)
    CalibratePass(data=str(data)).apply(ctx, module)
    assert isinstance(main_func(module).body.block.args[0].type.element_type, UniformType)
    sess = session(export_fakequant_onnx(module))
    for _ in range(5):
        x = (rng.standard_normal((1, 1, 4, 4)) * 1.5).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_array_equal(bits_of(got), bits_of(numpy_reference(module, x)))


def test_w8a8_zoo_model_agrees_with_float_on_random_inputs():
    float_model = load_zoo_model(SMALL)
    fake = export_fakequant_onnx(calibrated_zoo(SMALL, "w8a8"))
    fs, qs = session(float_model), session(fake)
    rng = np.random.default_rng(1)
    agree = 0
    for _ in range(40):
        x = rng.standard_normal(input_shape(float_model)).astype(np.float32)
        agree += int(fs.run(None, {fs.get_inputs()[0].name: x})[0].argmax() == qs.run(None, {qs.get_inputs()[0].name: x})[0].argmax())
    assert agree >= 32


@pytest.mark.parametrize("bits,scheme,max_drop", [("w8a8", "int", 0.01), ("w4a8", "int", 0.03), ("w4a8", "pot", 0.05)])
def test_trained_digits_model_keeps_its_accuracy(bits, scheme, max_drop):
    from quantloop.runtime.dataset import load_dataset

    x, y = load_dataset("zoo:digits-test")
    float_model = load_zoo_model("zoo:cnn_digits")
    fake = export_fakequant_onnx(calibrated_zoo("zoo:cnn_digits", bits, scheme, data="zoo:digits-calib"))

    def predict(model):
        sess = session(model)
        name = sess.get_inputs()[0].name
        return np.array([sess.run(None, {name: x[i : i + 1]})[0].argmax() for i in range(len(x))])

    float_pred, fake_pred = predict(float_model), predict(fake)
    assert (fake_pred == y).mean() >= (float_pred == y).mean() - max_drop
    assert (fake_pred == float_pred).mean() >= 1 - 2 * max_drop


def test_uncalibrated_module_is_refused():
    module = import_onnx(load_zoo_model(SMALL))
    ctx = make_context()
    CanonicalizePass().apply(ctx, module)
    AssignBitsPass(bits="w8a8").apply(ctx, module)
    with pytest.raises(QuantloopError, match="run qnn-calibrate"):
        export_fakequant_onnx(module)


def test_weights_written_to_a_side_file_load_back_as_the_in_memory_export(tmp_path):
    """With `weights_file` the weights of at least EXTERNAL_MIN_BYTES go to that file as ONNX external
    data (never into the protobuf); loaded back, the model equals the in-memory export."""
    from quantloop.runtime.fakequant_export import EXTERNAL_MIN_BYTES

    module = import_onnx("zoo:cnn_digits")
    AssignBitsPass(bits="w8a8").apply(make_context(), module)
    in_memory = FakeQuantExporter(module, uncalibrated_as_float=True).export("calibration")
    with open(tmp_path / "w.bin", "wb") as f:
        model = FakeQuantExporter(module, uncalibrated_as_float=True, weights_file=f, weights_location="w.bin").export("calibration")
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(not t.raw_data for t in external)
    assert {t.name for t in external} == {t.name for t in in_memory.graph.initializer if len(t.raw_data) >= EXTERNAL_MIN_BYTES}
    onnx.save_model(model, tmp_path / "m.onnx")
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    expected = {t.name: onnx.numpy_helper.to_array(t) for t in in_memory.graph.initializer}
    got = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    assert expected.keys() == got.keys()
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array), name


def test_calibration_maps_its_weights_from_the_side_file(tmp_path):
    """After the calibration export the still-float weights are read-only maps of the side file (no
    private copy while onnxruntime loads the model), holding the same values."""
    import mmap

    from quantloop.ir.qnn import ConstantOp, IntType, main_func
    from quantloop.passes.calibrate import _map_weights_from_file

    module = import_onnx("zoo:cnn_digits")
    AssignBitsPass(bits="w8a8").apply(make_context(), module)
    weights = [o for o in module.walk() if isinstance(o, ConstantOp) and isinstance(o.output.type.element_type, IntType)]
    before = {o: np.array(o.array) for o in weights}
    with open(tmp_path / "w.bin", "wb") as f:
        exporter = FakeQuantExporter(module, uncalibrated_as_float=True, weights_file=f, weights_location="w.bin")
        model = exporter.export("calibration")
    _map_weights_from_file(main_func(module), exporter.names, model, tmp_path / "w.bin")
    def file_backed(array) -> bool:
        while array is not None and not isinstance(array, mmap.mmap):
            array = getattr(array, "base", None)
        return array is not None

    mapped = [o for o in weights if file_backed(o.array)]
    assert mapped
    for o in weights:
        assert np.array_equal(o.array, before[o])
