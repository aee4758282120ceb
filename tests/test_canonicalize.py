"""qnn-canonicalize: BN folding, activation fusion, identity removal, constant folding."""

import numpy as np
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from quantloop.frontend import export_onnx, import_onnx
from quantloop.ir import (
    AddOp,
    BatchNormOp,
    ClipOp,
    ConstantOp,
    Conv2dOp,
    DropoutOp,
    GemmOp,
    IdentityOp,
    ReluOp,
    ReshapeOp,
    make_context,
    print_module,
)
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.registry import available_passes, load_pass


def canonicalize(module):
    CanonicalizePass().apply(make_context(), module)
    module.verify()
    return module


def ops_of(module, kind):
    return [op for op in module.walk() if isinstance(op, kind)]


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def bn_inits(prefix, channels, rng):
    return [init(f"{prefix}_g", rng.uniform(0.5, 1.5, channels)), init(f"{prefix}_b", rng.normal(0, 0.1, channels)),
            init(f"{prefix}_m", rng.normal(0, 0.1, channels)), init(f"{prefix}_v", rng.uniform(0.5, 1.5, channels))]


def bn_node(x, y, prefix, name):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
                            [y], name=name)


def make(nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_registered_under_its_name():
    assert "qnn-canonicalize" in available_passes()
    assert load_pass("qnn-canonicalize") is CanonicalizePass


def test_mobilenet_v2_becomes_convs_with_bias_and_fused_activations():
    module = import_onnx("zoo:mobilenet_v2?width=0.35&resolution=32&num_classes=10")
    convs_before = len(ops_of(module, Conv2dOp))
    canonicalize(module)
    assert not ops_of(module, (BatchNormOp, IdentityOp, DropoutOp, ReluOp, ClipOp))
    convs = ops_of(module, Conv2dOp)
    assert len(convs) == convs_before == 52
    assert all(conv.bias is not None for conv in convs)
    assert sum(conv.act == "clip" for conv in convs) == 35 and all(c.act_max == 6.0 for c in convs if c.act == "clip")
    assert all(add.act == "none" for add in ops_of(module, AddOp))
    # every weight constant is used: the folded-away ones are erased
    assert all(op.output.uses for op in ops_of(module, ConstantOp))
    names = [c.node_name for c in convs]
    assert len(set(names)) == len(names) and all(names)


def test_canonicalize_is_idempotent():
    module = canonicalize(import_onnx("zoo:resnet18?width=0.25&resolution=32&num_classes=10"))
    once = print_module(module, elide_weights_over=None)
    assert print_module(canonicalize(module), elide_weights_over=None) == once


def test_batchnorm_with_a_shared_conv_output_stays_and_still_runs():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        bn_node("c", "bn_out", "bn", "bn"),
        helper.make_node("Relu", ["c"], ["r"], name="relu_on_conv"),
        helper.make_node("Add", ["bn_out", "r"], ["y"], name="add"),
    ]
    model = make(nodes, [f32("x", [1, 3, 6, 6])], [f32("y", [1, 4, 6, 6])],
                 [init("w", rng.standard_normal((4, 3, 3, 3)))] + bn_inits("bn", 4, rng))
    module = canonicalize(import_onnx(model))
    assert len(ops_of(module, BatchNormOp)) == 1 and len(ops_of(module, ReluOp)) == 1  # conv has two users
    assert ops_of(module, Conv2dOp)[0].act == "none"
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    assert np.abs(run(export_onnx(module), x) - run(model, x)).max() <= 1e-5


def test_gemm_batchnorm_folds_with_trans_b_and_beta():
    rng = np.random.default_rng(1)
    for trans_b in (0, 1):
        w = rng.standard_normal((6, 5) if trans_b else (5, 6))
        nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, alpha=0.7, beta=1.5, name="fc"),
                 bn_node("g", "b", "bn", "bn"),
                 helper.make_node("Relu", ["b"], ["y"], name="relu")]
        model = make(nodes, [f32("x", [2, 5])], [f32("y", [2, 6])],
                     [init("w", w), init("c", rng.standard_normal(6))] + bn_inits("bn", 6, rng))
        module = canonicalize(import_onnx(model))
        (gemm,) = ops_of(module, GemmOp)
        assert not ops_of(module, BatchNormOp) and gemm.act == "relu" and gemm.beta == 1.0
        x = rng.standard_normal((2, 5)).astype(np.float32)
        assert np.abs(run(export_onnx(module), x) - run(model, x)).max() <= 1e-5


def test_relu_after_a_shared_add_does_not_fuse():
    nodes = [helper.make_node("Add", ["x", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "s"], ["y"], name="add2")]
    module = canonicalize(import_onnx(make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4])], [])))
    assert len(ops_of(module, ReluOp)) == 1


def test_clip_fuses_into_add_and_exports_as_clip():
    nodes = [helper.make_node("Add", ["x", "x"], ["s"], name="add"),
             helper.make_node("Clip", ["s", "lo", "hi"], ["y"], name="clip")]
    model = make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4])], [init("lo", -1.0), init("hi", 2.5)])
    module = canonicalize(import_onnx(model))
    (add,) = ops_of(module, AddOp)
    assert (add.act, add.act_min, add.act_max) == ("clip", -1.0, 2.5)
    exported = export_onnx(module)
    assert [n.op_type for n in exported.graph.node] == ["Add", "Clip"]
    x = np.array([[-3, -0.2, 0.7, 4]], np.float32)
    assert np.array_equal(run(exported, x), np.clip(2 * x, -1, 2.5))


def test_constant_expressions_fold():
    nodes = [helper.make_node("Reshape", ["k", "shape"], ["k2"], name="reshape_const"),
             helper.make_node("Relu", ["k2"], ["k3"], name="relu_const"),
             helper.make_node("Add", ["x", "k3"], ["y"], name="add")]
    inits = [init("k", [[-1.0, 2.0], [3.0, -4.0]]), numpy_helper.from_array(np.array([1, 4], np.int64), "shape")]
    module = canonicalize(import_onnx(make(nodes, [f32("x", [1, 4])], [f32("y", [1, 4])], inits)))
    assert not ops_of(module, (ReshapeOp, ReluOp))
    (const,) = ops_of(module, ConstantOp)
    assert np.array_equal(const.array, np.array([[0, 2, 3, 0]], np.float32))


def test_quantized_weights_are_not_folded_into():
    """A conv whose weights come through qnn.dequantize keeps its BN: folding would break exactness."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dq"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             bn_node("c", "y", "bn", "bn")]
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8), "wq"),
             init("ws", 0.02)] + bn_inits("bn", 4, rng)
    model = make(nodes, [f32("x", [1, 3, 4, 4])], [f32("y", [1, 4, 4, 4])], inits)
    module = canonicalize(import_onnx(model))
    assert len(ops_of(module, BatchNormOp)) == 1


@settings(max_examples=15, deadline=None)
@given(
    channels=st.sampled_from([(4, 8, 1), (6, 6, 6), (6, 4, 2)]),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    with_bias=st.booleans(),
    act=st.sampled_from(["none", "Relu", "Clip"]),
    seed=st.integers(0, 2**16),
)
def test_conv_bn_fold_matches_onnxruntime(channels, kernel, stride, with_bias, act, seed):
    c_in, c_out, group = channels
    rng = np.random.default_rng(seed)
    conv_inputs = ["x", "w"] + (["bias"] if with_bias else [])
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], strides=[stride, stride], group=group,
                              pads=[kernel // 2] * 4, name="conv"),
             bn_node("c", "b" if act != "none" else "y", "bn", "bn")]
    inits = [init("w", rng.standard_normal((c_out, c_in // group, kernel, kernel)) * np.sqrt(2 / (c_in // group * kernel**2))),
             init("bias", rng.normal(0, 0.1, c_out)), init("lo", 0.0), init("hi", 6.0)] + bn_inits("bn", c_out, rng)
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["b"], ["y"], name="act"))
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["b", "lo", "hi"], ["y"], name="act"))
    size = 7
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    model = make(nodes, [f32("x", [1, c_in, size, size])], [f32("y", [1, c_out, out, out])], inits)
    module = canonicalize(import_onnx(model))
    (conv,) = ops_of(module, Conv2dOp)
    assert not ops_of(module, BatchNormOp)
    assert conv.act == {"none": "none", "Relu": "relu", "Clip": "clip"}[act]
    x = rng.standard_normal((1, c_in, size, size)).astype(np.float32)
    expected = run(model, x)
    assert np.abs(run(export_onnx(module), x) - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def test_dropout_and_identity_disappear_from_vgg():
    module = canonicalize(import_onnx("zoo:vgg16?width=0.0625&num_classes=10"))
    assert not ops_of(module, (DropoutOp, IdentityOp, ReluOp))
    assert [g.act for g in ops_of(module, GemmOp)] == ["relu", "relu", "none"]
