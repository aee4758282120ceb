"""A model onnxruntime would refuse is refused when it is read (one line naming the node), not first at
calibration: `quantloop compile` without calibration must not accept it."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_load import load_model


def _single(op: str, elem: int, opset: int = 17, **attributes) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="the_node", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, [1, 4])],
                              [helper.make_tensor_value_info("y", elem, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_an_op_without_an_onnxruntime_kernel_is_refused_naming_the_node():
    model = _single("Relu", TensorProto.INT16)  # legal ONNX (opset 14+), but onnxruntime has no int16 Relu
    onnx.checker.check_model(model, full_check=True)
    with pytest.raises(QuantloopError) as info:
        load_model(model)
    message = str(info.value)
    assert message.startswith("<model>: onnxruntime refuses node 'the_node' (Relu): ") and "\n" not in message


def test_a_kernel_onnxruntime_cannot_construct_is_refused_naming_the_node():
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", kernel_shape=[1, 1], auto_pad="BOGUS")
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(QuantloopError, match=r"refuses node 'conv1' \(Conv\): .*AutoPad"):
        load_model(model)


def test_a_model_without_outputs_is_refused():
    model = _single("Relu", TensorProto.FLOAT)
    model.graph.ClearField("output")
    with pytest.raises(QuantloopError, match="no graph outputs"):
        load_model(model)


def test_a_model_onnxruntime_runs_is_accepted():
    assert load_model(_single("Relu", TensorProto.FLOAT)).graph.node[0].name == "the_node"
