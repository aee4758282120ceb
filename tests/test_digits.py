"""The packaged digits splits, the bilinear upsampler, the shipped digits models and the training script."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantloop.runtime.accuracy import top1
from quantloop.errors import QuantloopError
from quantloop.frontend.zoo.digits import DIGITS_MODELS, digits_model_path
from quantloop.runtime import digits
from quantloop.frontend.zoo.train_digits import ALLOWED_OPS

SPLITS = list(digits.SPLIT_SIZES)


def test_splits_have_documented_sizes_and_are_disjoint_and_cover_digits():
    indices = {name: digits.split_indices(name) for name in SPLITS}
    for name, idx in indices.items():
        assert len(idx) == digits.SPLIT_SIZES[name]
        assert len(np.unique(idx)) == len(idx)
    union = np.concatenate(list(indices.values()))
    assert len(np.unique(union)) == len(union) == 1797


@pytest.mark.slow
def test_packaged_splits_equal_a_fresh_seeded_split():
    fresh = digits.make_splits()
    with np.load(digits.SPLITS_FILE) as shipped:
        assert sorted(shipped.files) == sorted(fresh)
        for key in fresh:
            np.testing.assert_array_equal(shipped[key], fresh[key], err_msg=key)
        assert shipped["x_train"].dtype == np.uint8


def test_splits_are_stratified():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    overall = np.bincount(labels, minlength=10) / len(labels)
    for name in SPLITS:
        counts = np.bincount(labels[digits.split_indices(name)], minlength=10)
        expected = overall * digits.SPLIT_SIZES[name]
        assert np.all(np.abs(counts - expected) <= 1.0), (name, counts, expected)


def test_split_images_and_labels_match_sklearn():
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = digits.load_digits_split("test", resolution=8)
    idx = digits.split_indices("test")
    np.testing.assert_array_equal(y, data.target[idx])
    np.testing.assert_allclose(x[:, 0], data.images[idx] / 16.0, atol=1e-6)


def test_load_split_shapes_and_types():
    x, y = digits.load_digits_split("calib")
    assert x.shape == (200, 1, 32, 32) and x.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_unknown_split_is_a_user_error():
    with pytest.raises(QuantloopError, match="unknown; known: train, calib, val, test"):
        digits.load_digits_split("holdout")


def test_upsample_matches_torch_bilinear():
    import torch
    images = digits._packaged_splits()["x_val"][:16]
    ours = digits.upsample(images, 32)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(images.astype(np.float32) / 16.0)[:, None], size=(32, 32), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 16)),
    st.integers(1, 40),
)
def test_upsample_stays_within_the_input_range_and_keeps_constants(images, resolution):
    out = digits.upsample(images, resolution)
    assert out.shape == (len(images), 1, resolution, resolution)
    for image, up in zip(images, out[:, 0]):
        assert image.min() / 16 - 1e-6 <= up.min() and up.max() <= image.max() / 16 + 1e-6
    flat = np.full_like(images, 7)
    np.testing.assert_allclose(digits.upsample(flat, resolution), 7 / 16, atol=1e-6)


@pytest.mark.parametrize("name", list(DIGITS_MODELS))
def test_shipped_model_graph(name):
    path = digits_model_path(name)
    assert path.stat().st_size < 1_000_000
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {node.op_type for node in model.graph.node} <= ALLOWED_OPS
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 1, 32, 32]
    (out,) = model.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 10]


def test_mobilenet_v2_digits_has_the_mobilenet_v2_structure():
    model = onnx.load(str(digits_model_path("mobilenet_v2_digits")))
    ops = [node.op_type for node in model.graph.node]
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert sum(g > 1 for g in groups) >= 5  # depthwise 3x3 convs
    assert ops.count("Add") >= 2  # residual connections
    assert "Clip" in ops and "GlobalAveragePool" in ops and ops[-1] == "Gemm"


def test_mobilenet_v1_digits_has_the_mobilenet_v1_structure():
    model = onnx.load(str(digits_model_path("mobilenet_v1_digits")))
    ops = [node.op_type for node in model.graph.node]
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert sum(g > 1 for g in groups) == 6 and len(convs) == 13  # 6 depthwise-separable blocks after the stem
    assert "Add" not in ops and "Clip" in ops and ops[-1] == "Gemm"


@pytest.mark.parametrize("name", list(DIGITS_MODELS))
def test_shipped_model_reaches_97_percent_on_test_split(name):
    x, y = digits.load_digits_split("test")
    assert top1(digits_model_path(name), x, y) >= 0.97


def test_unknown_digits_model_is_a_user_error():
    with pytest.raises(QuantloopError, match="not a digits model"):
        digits_model_path("resnet_digits")


@pytest.mark.slow
def test_short_training_runs_exports_and_is_deterministic(tmp_path):
    import torch
    from quantloop.frontend.zoo import train_digits

    threads = torch.get_num_threads()
    try:
        for name in DIGITS_MODELS:
            first = train_digits.train(name, epochs=1, limit=128)
            second = train_digits.train(name, epochs=1, limit=128)
            for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
                assert torch.equal(a, b), f"{name}: {key} differs between two seeded runs"
            train_digits._seed_everything(0)
            untrained = train_digits.build_model(name).state_dict()
            assert any(not torch.equal(untrained[k], v) for k, v in first.state_dict().items() if v.is_floating_point())
        assert train_digits.main(["--epochs", "1", "--limit", "64", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    for name in DIGITS_MODELS:
        model = onnx.load(str(tmp_path / f"{name}.onnx"))
        assert {node.op_type for node in model.graph.node} <= ALLOWED_OPS
