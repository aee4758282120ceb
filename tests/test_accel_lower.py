"""accel-lower: qnn compute ops become accel.layer ops with the right problems and bits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.rewriter import Rewriter

from quantloop.errors import QuantloopError
from quantloop.ir.accel import TARGET_ATTR, LayerOp, ProblemShape, host_ops, layers
from quantloop.ir.qnn import (
    AddOp,
    ConstantOp,
    Conv2dOp,
    FlattenOp,
    GemmOp,
    GlobalAvgPoolOp,
    IntType,
    MatMulOp,
    MaxPoolOp,
    PotType,
    make_context,
    parse_module,
    print_module,
    with_element,
)
from quantloop.passes.accel_lower import AccelLowerPass
from quantloop.passes.assign_bits import AssignBitsPass
from quantloop.passes.pipeline import dump_header, run_pipeline
from quantloop.targets.registry import load_target

RNG = np.random.default_rng(0)


def _const(shape, name):
    return ConstantOp(RNG.standard_normal(shape).astype(np.float32), name=name)


def small_model() -> ModuleOp:
    """conv 3x3 (bias, relu) → depthwise 3x3 stride 2 → add → maxpool → 1x1 conv stride 2 (non-square)
    → global pool → flatten → gemm (trans_b) → matmul."""
    fn = func.FuncOp("main", ([TensorType(f32, [1, 3, 16, 12])], [TensorType(f32, [1, 5])]))
    (x,) = fn.body.block.args
    ops = []

    def add(op):
        ops.append(op)
        return op

    w1, b1 = add(_const((8, 3, 3, 3), "w1")), add(_const((8,), "b1"))
    c1 = add(Conv2dOp(x, w1, b1, pads=(1, 1, 1, 1), act="relu", name="conv1"))
    w2 = add(_const((8, 1, 3, 3), "w2"))
    dw = add(Conv2dOp(c1, w2, None, strides=(2, 2), pads=(1, 1, 1, 1), group=8, act="relu", name="dw2"))
    w3 = add(_const((8, 8, 1, 1), "w3"))
    c3 = add(Conv2dOp(dw, w3, None, name="pw3"))
    s = add(AddOp(c3, dw, name="add4"))
    p = add(MaxPoolOp(s, (2, 2), strides=(2, 2), name="pool5"))
    w6 = add(_const((16, 8, 1, 3), "w6"))
    c6 = add(Conv2dOp(p, w6, None, strides=(2, 1), dilations=(1, 1), pads=(0, 1, 0, 1), name="conv6"))
    g = add(GlobalAvgPoolOp(c6, name="gap7"))
    f = add(FlattenOp(g, 1, name="flat8"))
    w9 = add(_const((10, 16), "w9"))
    fc = add(GemmOp(f, w9, None, trans_b=True, name="fc9"))
    w10 = add(_const((10, 5), "w10"))
    mm = add(MatMulOp(fc, w10, name="mm10"))
    add(func.ReturnOp(mm))
    fn.body.block.add_ops(ops)
    return ModuleOp([fn])


def quantized_model(bits="w8a8") -> ModuleOp:
    module = small_model()
    AssignBitsPass(bits=bits).apply(make_context(), module)
    return module


def _lowered(bits="w8a8", target="eyeriss") -> ModuleOp:
    module = quantized_model(bits)
    AccelLowerPass(target=target).apply(make_context(), module)
    module.verify()
    return module


def test_problems_of_a_small_model():
    by_name = {layer.label: layer for layer in layers(_lowered())}
    assert list(by_name) == ["conv1", "dw2", "pw3", "conv6", "fc9", "mm10"]
    expect = {
        "conv1": ("conv", ProblemShape(N=1, G=1, C=3, M=8, P=12, Q=16, R=3, S=3)),
        "dw2": ("depthwise", ProblemShape(N=1, G=8, C=1, M=1, P=6, Q=8, R=3, S=3, Hstride=2, Wstride=2)),
        "pw3": ("conv", ProblemShape(N=1, G=1, C=8, M=8, P=6, Q=8)),
        # input 4x3 (H x W), kernel 1x3, strides (2, 1), pads left/right 1 → output 2x3
        "conv6": ("conv", ProblemShape(N=1, G=1, C=8, M=16, P=3, Q=2, R=3, S=1, Hstride=2, Wstride=1)),
        "fc9": ("gemm", ProblemShape(N=1, C=16, M=10)),
        "mm10": ("gemm", ProblemShape(N=1, C=10, M=5)),
    }
    for name, (kind, shape) in expect.items():
        layer = by_name[name]
        assert layer.kind.data == kind, name
        assert layer.problem.data == shape, name


def test_conv_attributes_are_kept_for_the_backend():
    by_name = {layer.label: layer for layer in layers(_lowered())}
    conv6 = by_name["conv6"]
    assert tuple(conv6.pads.get_values()) == (0, 1, 0, 1)
    assert tuple(conv6.strides.get_values()) == (2, 1)
    assert conv6.source.data == "qnn.conv2d"
    assert by_name["conv1"].act.data == "relu" and by_name["conv1"].bias is not None
    assert by_name["fc9"].trans_b.value.data == 1 and by_name["fc9"].source.data == "qnn.gemm"
    assert by_name["mm10"].source.data == "qnn.matmul"


def test_bits_follow_the_element_types():
    by_name = {layer.label: layer for layer in layers(_lowered("w4a8"))}
    b = by_name["conv1"].bits.data
    assert (b.weights.bits, b.weights.scheme) == (4, "int")
    assert (b.inputs.bits, b.inputs.scheme) == (8, "int")  # the model input is signed
    assert (b.outputs.bits, b.outputs.scheme) == (8, "uint")  # after the fused relu
    b2 = by_name["dw2"].bits.data
    assert b2.inputs.scheme == "uint"


def test_pot_weights_give_the_pot_scheme():
    module = quantized_model()
    w1 = next(op for op in module.walk() if isinstance(op, ConstantOp) and op.properties["name"].data == "w1")
    Rewriter.replace_value_with_new_type(w1.results[0], with_element(w1.results[0].type, PotType(4)))
    AccelLowerPass().apply(make_context(), module)
    conv1 = next(layer for layer in layers(module) if layer.label == "conv1")
    assert (conv1.bits.data.weights.bits, conv1.bits.data.weights.scheme) == (4, "pot")
    assert conv1.bits.to_costmodel().scheme == "pot"


def test_host_ops_are_kept_and_marked():
    module = _lowered()
    assert [op.name for op in host_ops(module)] == ["qnn.add", "qnn.maxpool", "qnn.global_avgpool", "qnn.flatten"]
    assert not [op for op in module.walk() if op.name in ("qnn.conv2d", "qnn.gemm", "qnn.matmul")]
    arch = load_target("eyeriss")
    target = module.attributes[TARGET_ATTR].data
    assert (target.name, target.content_hash) == ("eyeriss", arch.content_hash)


def test_float_layer_is_an_error_that_says_what_to_run():
    with pytest.raises(QuantloopError, match="conv1.*qnn-assign-bits"):
        AccelLowerPass().apply(make_context(), small_model())


def test_bits_the_target_cannot_hold_name_layer_level_and_widths():
    # Eyeriss keeps Outputs in 8-bit words at DRAM and shared_glb: 16-bit activations do not fit.
    with pytest.raises(QuantloopError, match=r"layer 'conv1'.*Outputs.*16 bits.*8-bit word.*DRAM"):
        _lowered("w8a16")


def test_unknown_target_is_a_clean_error():
    with pytest.raises(QuantloopError, match="unknown"):
        AccelLowerPass(target="no-such-target").apply(make_context(), quantized_model())


def test_lowering_through_the_pipeline_dumps_text_that_parses_back(tmp_path):
    module = small_model()
    out = io.StringIO()
    run_pipeline(module, "qnn-assign-bits{bits=w8a8},accel-lower{target=simba}", make_context(),
                 print_ir_after_all=True, out=out, dump_dir=tmp_path)
    text = out.getvalue()
    assert dump_header("accel-lower") in text
    dumped = text.split(dump_header("accel-lower"))[1]
    assert '= accel.layer %' in dumped and "#accel.problem<" in dumped and "accel.host" in dumped
    reparsed = parse_module((tmp_path / "02_accel-lower.mlir").read_text())
    assert print_module(reparsed, elide_weights_over=None) == print_module(module, elide_weights_over=None)
    assert [layer.problem for layer in layers(reparsed)] == [layer.problem for layer in layers(module)]


def test_layer_names_stay_unique():
    module = quantized_model()
    for op in module.walk():
        if isinstance(op, (Conv2dOp, GemmOp, MatMulOp)):
            op.properties["name"] = type(op.properties["name"])("same")
    AccelLowerPass().apply(make_context(), module)
    names = [layer.label for layer in layers(module)]
    assert len(set(names)) == len(names) == 6


def test_batched_matmul_puts_the_batch_in_g():
    fn = func.FuncOp("main", ([TensorType(IntType(8, True), [2, 3, 4]), TensorType(IntType(8, True), [2, 4, 5])],
                              [TensorType(IntType(8, True), [2, 3, 5])]))
    a, b = fn.body.block.args
    mm = MatMulOp(a, b, name="bmm")
    fn.body.block.add_ops([mm, func.ReturnOp(mm)])
    module = ModuleOp([fn])
    AccelLowerPass().apply(make_context(), module)
    module.verify()
    (layer,) = layers(module)
    assert layer.problem.data == ProblemShape(N=3, G=2, C=4, M=5)
    assert isinstance(layer, LayerOp)


@pytest.mark.parametrize("spec", ["zoo:mobilenet_v2?resolution=96", "zoo:resnet18?resolution=64"])
def test_zoo_model_lowers_to_the_problems_the_mapper_derives_from_onnx(spec):
    """Two independent derivations (IR lowering vs ONNX node attributes) must agree layer by layer."""
    from quantloop.frontend.onnx_import import import_onnx
    from quantloop.frontend.onnx_load import load_model
    from quantloop.ir.accel import ProblemAttr
    from quantloop.mapper.layers_from_onnx import problems_from_onnx

    model = load_model(spec)
    module = import_onnx(model)
    run_pipeline(module, "qnn-canonicalize,qnn-assign-bits{bits=w4a4},accel-lower{target=eyeriss}", make_context())
    lowered = [(layer.label, layer.problem) for layer in layers(module)]
    expected = [(name, ProblemAttr.from_costmodel(problem)) for name, problem in problems_from_onnx(model)]
    assert [p for _, p in lowered] == [p for _, p in expected]
    assert [n for n, _ in lowered] == [n for n, _ in expected]
    depthwise = [layer for layer in layers(module) if layer.kind.data == "depthwise"]
    assert bool(depthwise) == ("mobilenet" in spec)
    assert all(op.name not in ("qnn.batchnorm",) for op in host_ops(module))


@pytest.mark.filterwarnings("ignore:qnn-calibrate. no calibration data")
@pytest.mark.parametrize("scheme", ["int", "pot2"])
def test_calibrated_types_give_bits_scheme_and_signedness(scheme):
    from quantloop.passes.calibrate import CalibratePass

    module = quantized_model("w4a8")
    CalibratePass(scheme=scheme, samples=4).apply(make_context(), module)
    AccelLowerPass(target="simba").apply(make_context(), module)
    module.verify()
    by_name = {layer.label: layer.bits.data for layer in layers(module)}
    assert (by_name["conv1"].weights.bits, by_name["conv1"].weights.scheme) == (4, scheme)
    assert (by_name["dw2"].inputs.bits, by_name["dw2"].inputs.scheme) == (8, "uint")
    assert (by_name["mm10"].outputs.bits, by_name["mm10"].outputs.scheme) == (8, "int")
