"""`quantloop.runtime.accuracy` and the `quantloop eval` command."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantloop.runtime.accuracy import make_session, predict, top1
from quantloop.cli import main
from quantloop.errors import QuantloopError


def linear_classifier(batch: int | str, weights: np.ndarray) -> onnx.ModelProto:
    """logits = flatten(x) @ weights, x of shape batch×1×2×2."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, weights.shape[1]])],
        [onnx.numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def one_hot_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs whose arg-max pixel is the class (4 classes), so the identity classifier is always right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.random((n, 4), dtype=np.float32) * 0.5
    x[np.arange(n), y] = 1.0
    return x.reshape(n, 1, 2, 2), y


@pytest.mark.parametrize("batch", ["N", 1, 5])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_top1_counts_exactly_for_fixed_and_dynamic_batches(batch, batch_size):
    x, y = one_hot_data(20)
    model = linear_classifier(batch, np.eye(4))
    assert top1(model, x, y, batch_size=batch_size) == 1.0
    wrong = y.copy()
    wrong[[2, 11, 19]] = (wrong[[2, 11, 19]] + 1) % 4
    assert top1(model.SerializeToString(), x, wrong, batch_size=batch_size) == pytest.approx(17 / 20)
    shifted = linear_classifier(batch, np.roll(np.eye(4), 1, axis=1))
    assert top1(shifted, x, (y + 1) % 4, batch_size=batch_size) == 1.0


def test_predict_concatenates_in_order():
    x, _ = one_hot_data(9)
    logits = predict(make_session(linear_classifier("N", np.eye(4))), x, batch_size=4)
    np.testing.assert_allclose(logits, x.reshape(9, 4))


def test_fixed_batch_with_leftover_samples_is_an_error():
    x, y = one_hot_data(7)
    with pytest.raises(QuantloopError, match="7 samples cannot be fed to a model with fixed batch 5"):
        top1(linear_classifier(5, np.eye(4)), x, y)


def test_unloadable_model_is_a_user_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(QuantloopError, match=r"broken\.onnx: onnxruntime cannot load the model"):
        top1(path, *one_hot_data(2))
    with pytest.raises(QuantloopError, match=r"absent\.onnx: no such model file"):
        top1(tmp_path / "absent.onnx", *one_hot_data(2))


def test_cli_eval_zoo_model_on_zoo_data(capsys):
    assert main(["eval", "zoo:cnn_digits", "--data", "zoo:digits-test"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "/297)" in out
    percent = float(out.split("top-1")[1].split("%")[0])
    assert percent >= 97.0


def test_cli_eval_file_model_on_npz(tmp_path, capsys):
    x, y = one_hot_data(12)
    model_path = tmp_path / "lin.onnx"
    onnx.save(linear_classifier("N", np.eye(4)), str(model_path))
    y[0] = (y[0] + 1) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["eval", str(model_path), "--data", str(tmp_path / "d.npz"), "--input-shape", "x=3x1x2x2"]) == 0
    assert "91.67 % (11/12)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x": np.zeros((4, 1, 8, 8), np.float32), "y": np.zeros(4, np.int64)}, "x has shape 4x1x8x8, the model input needs 1x1x32x32"),
        ({"x": np.zeros((4, 1, 32, 32), np.float32)}, "no array named 'y'"),
        ({"x": np.zeros((4, 1, 32, 32), np.float32), "y": np.full(4, 12)}, r"labels range 12\.\.12, the model's classes are 0\.\.9"),
        ({"pixels": np.zeros((4, 1, 32, 32), np.float32)}, "no array named 'x'"),
    ],
)
def test_cli_eval_bad_data_prints_one_line_and_exits_2(tmp_path, capsys, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["eval", "zoo:cnn_digits", "--data", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantloop: error: ")
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    "shape,message",
    [
        ("1x1x16x16", r"--input-shape 1x1x16x16: does not fit the model input 1x1x32x32"),
        ("images=1x1x32x32", r"the model has no input 'images' \(its input is 'input'\)"),
        ("1by1", "expected dims like 1x1x32x32"),
    ],
)
def test_cli_eval_bad_input_shape(capsys, shape, message):
    assert main(["eval", "zoo:cnn_digits", "--data", "zoo:digits-val", "--input-shape", shape]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_eval_unknown_zoo_data(capsys):
    assert main(["eval", "zoo:cnn_digits", "--data", "zoo:digits-holdout"]) == 2
    assert "zoo:digits-holdout: unknown data set" in capsys.readouterr().err
