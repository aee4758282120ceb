"""Result shapes inferred by the qnn constructors agree with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from xdsl.dialects.builtin import TensorType, f32

from quantloop.ir.qnn import AvgPoolOp, ConstantOp, Conv2dOp, MainBuilder, MaxPoolOp, ReshapeOp

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ort_output_shape(node: onnx.NodeProto, x_shape, initializers=()) -> tuple[int, ...]:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.zeros(x_shape, np.float32)})
    return y.shape


@st.composite
def conv_cases(draw):
    group = draw(st.sampled_from([1, 2, 3]))
    c = group * draw(st.integers(1, 2))
    m = group * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    hw = (draw(st.integers(5, 12)), draw(st.integers(5, 12)))
    return group, c, m, kernel, dilations, strides, pads, hw


@given(conv_cases())
@SETTINGS
def test_conv_shape_matches_onnxruntime(case):
    group, c, m, kernel, dilations, strides, pads, hw = case
    for axis in range(2):
        assume((kernel[axis] - 1) * dilations[axis] + 1 <= hw[axis] + pads[axis] + pads[axis + 2])
    x_shape = (1, c, *hw)
    w = np.zeros((m, c // group, *kernel), np.float32)
    b = MainBuilder([TensorType(f32, list(x_shape))])
    weight = b.add(ConstantOp(w))
    conv = b.add(Conv2dOp(b.args[0], weight, strides=strides, pads=pads, dilations=dilations, group=group))
    b.finish([conv]).verify()
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=strides, pads=pads, dilations=dilations, group=group)
    expected = ort_output_shape(node, x_shape, [onnx.numpy_helper.from_array(w, "w")])
    assert conv.output.type.get_shape() == expected


@given(
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pads=st.tuples(*[st.integers(0, 1)] * 4),
    hw=st.tuples(st.integers(4, 11), st.integers(4, 11)),
    ceil_mode=st.booleans(),
    kind=st.sampled_from(["MaxPool", "AveragePool"]),
)
@SETTINGS
def test_pool_shape_matches_onnxruntime(kernel, strides, pads, hw, ceil_mode, kind):
    assume(all(p < k for p, k in zip(pads, kernel + kernel)))  # ONNX requires pad < kernel
    x_shape = (1, 2, *hw)
    node = helper.make_node(kind, ["x"], ["y"], kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=int(ceil_mode))
    expected = ort_output_shape(node, x_shape)
    b = MainBuilder([TensorType(f32, list(x_shape))])
    op_class = MaxPoolOp if kind == "MaxPool" else AvgPoolOp
    inferred = b.add(op_class(b.args[0], kernel, strides=strides, pads=pads, ceil_mode=ceil_mode))
    explicit = b.add(op_class(b.args[0], kernel, TensorType(f32, list(expected)), strides=strides, pads=pads,
                              ceil_mode=ceil_mode))
    b.finish([inferred, explicit]).verify()  # the runtime's shape is accepted
    assert inferred.output.type.get_shape() == expected


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    data=st.data(),
)
@SETTINGS
def test_reshape_shape_matches_onnxruntime(shape, data):
    total = int(np.prod(shape))
    target = data.draw(st.permutations(shape))
    target = list(target)
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    if data.draw(st.booleans()) and len(target) <= len(shape) and target[0] == shape[0]:
        target[0] = 0
    b = MainBuilder([TensorType(f32, list(shape))])
    op = b.add(ReshapeOp(b.args[0], target))
    b.finish([op]).verify()
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    expected = ort_output_shape(node, tuple(shape), [onnx.numpy_helper.from_array(np.array(target, np.int64), "s")])
    assert op.output.type.get_shape() == expected and int(np.prod(expected)) == total
