"""problems_from_onnx: Conv/Gemm nodes of a zoo model as cost-model problems."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from quantloop.problem import Problem
from quantloop.errors import QuantloopError
from quantloop.frontend.zoo import load_zoo_model
from quantloop.mapper.layers_from_onnx import problems_from_onnx


def test_mobilenet_v2_layers():
    layers = problems_from_onnx(load_zoo_model("zoo:mobilenet_v2"))
    problems = [p for _, p in layers]
    assert len(problems) == 53  # 52 convs + the classifier
    first = problems[0]
    assert (first.C, first.M, first.P, first.Q, first.R, first.S, first.Wstride) == (3, 32, 112, 112, 3, 3, 2)
    depthwise = [p for p in problems if p.G > 1]
    assert depthwise and all(p.C == 1 and p.M == 1 for p in depthwise)
    assert problems[1].G == 32 and problems[1].P == 112
    fc = problems[-1]
    assert (fc.N, fc.C, fc.M, fc.P, fc.R) == (1, 1280, 1000, 1, 1)
    assert sum(p.macs for p in problems) == pytest.approx(300.8e6, rel=0.01)


def _model(nodes, inputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_rectangular_strided_dilated_conv_pairs_p_with_r_and_width():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 20, 30])
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 4, 3, 5], [0.0] * 360)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=2, strides=[1, 2], dilations=[2, 1])
    ((name, p),) = problems_from_onnx(_model([node], [x], [w]))
    assert name == "c"
    assert p == Problem(N=2, G=2, C=4, M=3, P=13, Q=16, R=5, S=3, Wstride=2, Hstride=1, Wdilation=1, Hdilation=2, name="c")


def test_gemm_with_transposed_weights():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 10])
    w = helper.make_tensor("w", TensorProto.FLOAT, [7, 10], [0.0] * 70)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    ((_, p),) = problems_from_onnx(_model([node], [x], [w]))
    assert (p.N, p.C, p.M) == (4, 10, 7)


def test_unknown_shape_is_an_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 20, 30])
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 8, 3, 3], [0.0] * 432)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    with pytest.raises(QuantloopError, match="no static shape"):
        problems_from_onnx(_model([node], [x], [w]))
