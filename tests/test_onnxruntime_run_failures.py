"""onnxruntime failing on the search's / accuracy's own model runs: one line naming the model, no traceback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from quantloop.cosearch import run_search
from quantloop.errors import QuantloopError
from quantloop.runtime.accuracy import top1
from quantloop.passes.search import engine
from quantloop.passes.search_bits import SearchSettings


def test_a_run_failure_in_accuracy_names_the_model(tmp_path):
    """A Reshape to 3 rows of a 1-row batch: onnxruntime builds the session, then fails on the data."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("s", TensorProto.INT64, [2], [3, -1])],
    )
    path = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(QuantloopError) as info:
        top1(path, np.zeros((2, 4), np.float32), np.zeros(2, int), batch_size=1)
    message = str(info.value)
    assert message.startswith(f"{path}: onnxruntime cannot run the model (") and "\n" not in message


def test_a_run_failure_in_the_search_names_the_model(monkeypatch, tmp_path):
    def failing_run(space, x):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : injected failure in the float model's run")

    monkeypatch.setattr(engine, "float_predict", failing_run)
    settings = SearchSettings(population=2, generations=1, bits_range="4,8", progress=False)
    with pytest.raises(QuantloopError, match=r"^zoo:cnn_digits: onnxruntime cannot run the model \(.*injected"):
        run_search("zoo:cnn_digits", settings, target="eyeriss", cache_dir=str(tmp_path / "cache"))
