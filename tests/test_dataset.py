"""`quantloop.runtime.dataset`: loading .npz / zoo data and checking it against a model input."""

from __future__ import annotations

import numpy as np
import pytest

from quantloop.errors import QuantloopError
from quantloop.runtime.dataset import check_dataset, load_dataset

SHAPE = (1, 1, 32, 32)


def test_load_npz_with_and_without_labels(tmp_path):
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    y = np.arange(5)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    got_x, got_y = load_dataset(tmp_path / "xy.npz")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    got_x, got_y = load_dataset(str(tmp_path / "x.npz"))
    np.testing.assert_array_equal(got_x, x)
    assert got_y is None


@pytest.mark.parametrize("split,count", [("train", 1100), ("calib", 200), ("val", 200), ("test", 297)])
def test_load_zoo_digits(split, count):
    x, y = load_dataset(f"zoo:digits-{split}")
    assert x.shape == (count, 1, 32, 32) and y.shape == (count,)


def test_unknown_zoo_data_set():
    with pytest.raises(QuantloopError, match=r"zoo:digits-nope: unknown data set; known: zoo:digits-train"):
        load_dataset("zoo:digits-nope")


def test_missing_file(tmp_path):
    with pytest.raises(QuantloopError, match=r"nope\.npz: no such data file"):
        load_dataset(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(QuantloopError, match=r"data\.npz: not an \.npz file \(not a zip archive\)"):
        load_dataset(path)


def test_truncated_npz(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.zeros((4, 1, 32, 32), np.float32))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(QuantloopError, match=r"cut\.npz: not an \.npz file"):
        load_dataset(path)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(QuantloopError, match=r"objects\.npz: array 'x' has dtype object; expected numbers"):
        load_dataset(path)


def test_single_npy_array_is_not_an_npz(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 2)))
    with pytest.raises(QuantloopError, match=r"x\.npy: not an \.npz archive"):
        load_dataset(path)


def test_missing_x(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((2, 1, 32, 32)), labels=np.zeros(2))
    with pytest.raises(QuantloopError, match=r"wrong\.npz: no array named 'x' \(found: images, labels\)"):
        load_dataset(path)


def test_check_accepts_and_casts():
    x = np.zeros((3, 1, 32, 32), np.float64)
    y = np.array([0, 9, 4], np.uint8)
    cx, cy = check_dataset(x, y, SHAPE, np.float32, 10, "d.npz")
    assert cx.dtype == np.float32 and cy.dtype == np.int64
    np.testing.assert_array_equal(cy, [0, 9, 4])
    cx, cy = check_dataset(x, None, ("N", 1, 32, 32), np.float32, 10, "d.npz")
    assert cy is None


def test_check_shape_mismatch_names_both_shapes():
    with pytest.raises(QuantloopError, match=r"d\.npz: x has shape 3x1x8x8, the model input needs 1x1x32x32"):
        check_dataset(np.zeros((3, 1, 8, 8), np.float32), None, SHAPE, np.float32, 10, "d.npz")
    with pytest.raises(QuantloopError, match=r"x has shape 3x32x32, the model input needs \?x1x32x32"):
        check_dataset(np.zeros((3, 32, 32), np.float32), None, (None, 1, 32, 32), np.float32, 10, "d.npz")


def test_check_fixed_batch_needs_a_multiple():
    with pytest.raises(QuantloopError, match="3 samples are not a multiple of the model's fixed batch 2"):
        check_dataset(np.zeros((3, 1, 32, 32), np.float32), None, (2, 1, 32, 32), np.float32, 10, "d.npz")


def test_check_empty():
    with pytest.raises(QuantloopError, match="x holds no samples"):
        check_dataset(np.zeros((0, 1, 32, 32), np.float32), None, ("N", 1, 32, 32), np.float32, 10, "d.npz")


def test_check_dtype_mismatch():
    with pytest.raises(QuantloopError, match="x has dtype uint8, the model input needs float32"):
        check_dataset(np.zeros((1, 1, 32, 32), np.uint8), None, SHAPE, np.float32, 10, "d.npz")


@pytest.mark.parametrize(
    "labels,message",
    [
        ([0, 10], r"labels range 0\.\.10, the model's classes are 0\.\.9"),
        ([-1, 3], r"labels range -1\.\.3"),
        ([0.0, 1.0], "y has dtype float64, expected integer class labels"),
        ([[0], [1]], r"y has shape 2x1, expected one label per sample \(2\)"),
        ([1, 2, 3], r"y has shape 3, expected one label per sample \(2\)"),
    ],
)
def test_check_bad_labels(labels, message):
    with pytest.raises(QuantloopError, match=message):
        check_dataset(np.zeros((2, 1, 32, 32), np.float32), np.array(labels), SHAPE, np.float32, 10, "d.npz")
