"""ONNX weights in external data files: read when they sit in the model's folder, refused in one line
(naming the model) when missing, symlinked, absolute or outside the model's folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantloop.cli import main
from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_load import load_model
from quantloop.progress import is_progress_line


def _model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _with_external_weights(folder: Path, location: str = "w.bin") -> Path:
    """model.onnx in `folder` with its weights in `folder/w.bin`, the location recorded as `location`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(_model(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, path)
    return path


def _refused(path: Path) -> str:
    with pytest.raises(QuantloopError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: cannot read its external weight data"), message
    return message


def test_weights_beside_the_model_are_read(tmp_path):
    model = load_model(_with_external_weights(tmp_path))
    weights = numpy_helper.to_array(model.graph.initializer[0])
    assert weights.shape == (4, 1, 3, 3) and (weights == 1).all()


def test_a_missing_data_file_is_one_line(tmp_path):
    assert "nope.bin" in _refused(_with_external_weights(tmp_path, "nope.bin"))


def test_a_symlinked_data_file_is_one_line(tmp_path):
    path = _with_external_weights(tmp_path / "model")
    (path.parent / "w.bin").rename(tmp_path / "real.bin")
    os.symlink(tmp_path / "real.bin", path.parent / "w.bin")
    assert "symbolic link" in _refused(path)


def test_a_data_file_outside_the_model_folder_is_one_line(tmp_path):
    path = _with_external_weights(tmp_path / "model", "../outside.bin")
    (path.parent / "w.bin").rename(tmp_path / "outside.bin")
    assert "outside" in _refused(path)


def test_an_absolute_data_location_is_one_line(tmp_path):
    path = _with_external_weights(tmp_path / "model")
    real = tmp_path / "real.bin"
    (path.parent / "w.bin").rename(real)
    path = _with_external_weights(tmp_path / "model", str(real))
    assert "absolute path" in _refused(path)


def test_the_cli_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    path = _with_external_weights(tmp_path / "model", "nope.bin")
    out = tmp_path / "out"
    code = main(["compile", str(path), "--target", "eyeriss", "-o", str(out)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not is_progress_line(line)]
    assert code == 2 and len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0], err
    assert not out.exists()
