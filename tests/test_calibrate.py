"""qnn-calibrate on a tiny hand-made model whose scales are computed by hand below."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import TensorType, f32

from quantloop.errors import QuantloopError
from quantloop.ir import quantization as q
from quantloop.ir.qnn import (
    ConstantOp,
    Conv2dOp,
    FlattenOp,
    GemmOp,
    MainBuilder,
    MaxPoolOp,
    Pot2Type,
    PotType,
    UniformPerAxisType,
    UniformType,
    make_context,
    parse_module,
    print_module,
)
from quantloop.passes.assign_bits import AssignBitsPass
from quantloop.passes.calibrate import CalibratePass, CalibrationWarning
from quantloop.passes.registry import load_pass

CONV_W = np.array([0.5, -0.25], np.float32).reshape(2, 1, 1, 1)
GEMM_W = np.array([[1.5, -2.0], [0.5, 0.2], [0.0, 0.0]], np.float32)  # (N=3, K=2), trans_b
X = np.array([[[[1.0, 2.0], [3.0, 4.0]]], [[[-1.0, 0.0], [0.5, 2.0]]]], np.float32)  # 2 samples, 1x2x2


def tiny_model():
    """x (1,1,2,2) -> conv 1x1 + relu (2 ch) -> maxpool 2x2 -> flatten -> gemm (3 outputs)."""
    b = MainBuilder([TensorType(f32, [1, 1, 2, 2])], ["x"])
    w = b.add(ConstantOp(CONV_W, name="conv.w"))
    conv = b.add(Conv2dOp(b.args[0], w, act="relu", name="conv"))
    pool = b.add(MaxPoolOp(conv, [2, 2], strides=[2, 2], name="pool"))
    flat = b.add(FlattenOp(pool, 1, name="flat"))
    gw = b.add(ConstantOp(GEMM_W, name="fc.w"))
    fc = b.add(GemmOp(flat, gw, trans_b=True, name="fc"))
    return b.finish([fc])


def calibrated(tmp_path, bits="w8a8", x=X, **options):
    """Calibrated with min-max weights and ranges (the hand-computed cases) unless `options` say otherwise."""
    options = {"weight_clip": "minmax", "act_range": "minmax", **options}
    data = tmp_path / "calib.npz"
    np.savez(data, x=x)
    module = tiny_model()
    ctx = make_context()
    AssignBitsPass(bits=bits).apply(ctx, module)
    CalibratePass(data=str(data), **options).apply(ctx, module)
    module.verify()
    return module


def by_name(module):
    out = {}
    for op in module.walk():
        name = getattr(op, "node_name", None)
        if name:
            out[name] = op
    return out


def test_hand_computed_scales(tmp_path):
    module = calibrated(tmp_path)
    ops = by_name(module)
    # input: signed 8 bits, symmetric over max(|-1|, 4) = 4
    x_elem = ops["conv"].input.type.element_type
    assert isinstance(x_elem, UniformType) and x_elem.signed and x_elem.zero_point == 0
    assert x_elem.scale == pytest.approx(4 / 127)
    # conv weights: per output channel, max|w| / 127, codes ±127
    w_elem = ops["conv.w"].output.type.element_type
    assert isinstance(w_elem, UniformPerAxisType) and w_elem.axis == 0 and w_elem.bits == 8
    assert w_elem.scales == pytest.approx((0.5 / 127, 0.25 / 127))
    assert w_elem.zero_points == (0, 0)
    np.testing.assert_array_equal(ops["conv.w"].array.ravel(), [127, -127])
    assert ops["conv.w"].array.dtype == np.int8
    # conv + relu: unsigned; the largest value is 0.5 * 4 = 2
    conv_elem = ops["conv"].output.type.element_type
    assert isinstance(conv_elem, UniformType) and not conv_elem.signed and conv_elem.zero_point == 0
    assert conv_elem.scale == pytest.approx(2 / 255)
    # maxpool and flatten move values: same type as the conv output, no requantization
    assert ops["pool"].output.type.element_type == conv_elem
    assert ops["flat"].output.type.element_type == conv_elem
    # gemm weights (N, K) with trans_b: one scale per output row; an all-zero row gets scale 1
    fc_w = ops["fc.w"].output.type.element_type
    assert fc_w.axis == 0 and fc_w.scales == pytest.approx((2 / 127, 0.5 / 127, 1.0))
    expected_codes = [[round(1.5 * 127 / 2), -127], [127, round(0.2 * 127 / 0.5)], [0, 0]]
    np.testing.assert_array_equal(ops["fc.w"].array, expected_codes)
    # gemm output: pooled features [2, 0] and [1, 0.25] -> [3, 1, 0] and [1, 0.55, 0]; signed, max 3
    fc_elem = ops["fc"].results[0].type.element_type
    assert fc_elem.signed and fc_elem.scale == pytest.approx(3 / 127)
    # the function signature follows the new types
    main = next(op for op in module.ops)
    assert main.function_type.inputs.data[0].element_type == x_elem
    assert main.function_type.outputs.data[0].element_type == fc_elem


def test_bits_from_assign_bits_are_kept(tmp_path):
    ops = by_name(calibrated(tmp_path, bits="w4a6"))
    w_elem = ops["conv.w"].output.type.element_type
    assert w_elem.bits == 4 and w_elem.scales == pytest.approx((0.5 / 7, 0.25 / 7))
    conv_elem = ops["conv"].output.type.element_type
    assert conv_elem.bits == 6 and conv_elem.scale == pytest.approx(2 / 63)


def test_percentile_range_is_inside_minmax(tmp_path):
    ops = by_name(calibrated(tmp_path, act_range="percentile", percentile=90.0))
    x_scale = ops["conv"].input.type.element_type.scale
    lo, hi = np.percentile(X, [10, 90])
    assert x_scale == pytest.approx(max(-lo, hi) / 127)
    assert x_scale < 4 / 127


def test_mse_weight_clipping_changes_outlier_channel(tmp_path):
    ops = by_name(calibrated(tmp_path, bits="w2a8", weight_clip="mse"))
    conv_w = ops["conv.w"].output.type.element_type
    # one weight per channel: clipping at max|w| is exact, so MSE keeps the min-max scale
    assert conv_w.scales == pytest.approx((0.5, 0.25))


@pytest.mark.parametrize("scheme,elem_type", [("pot", PotType), ("pot2", Pot2Type)])
def test_power_of_two_schemes_keep_scales_as_attributes(tmp_path, scheme, elem_type):
    module = calibrated(tmp_path, bits="w4a8", scheme=scheme)
    ops = by_name(module)
    constant = ops["fc.w"]
    assert isinstance(constant.output.type.element_type, elem_type)
    wq = q.weight_quantization(constant)
    assert wq.scheme == scheme and wq.axis == 0
    top = q.max_level(scheme, 4)
    np.testing.assert_allclose(wq.scales, [2.0 / top, 0.5 / top, 1.0], rtol=1e-6)
    decoded = wq.decode(constant.array)
    np.testing.assert_array_equal(wq.encode(decoded), constant.array)
    if scheme == "pot":  # levels ±{1, 1/2, ..., 1/64}·2 for the first row: 1.5 is a tie -> 1, -2 -> -2
        np.testing.assert_array_equal(decoded[0], [1.0, -2.0])
    text = print_module(module, elide_weights_over=None)
    assert "qnn.scales = array<f32:" in text and "qnn.axis = 0" in text
    again = by_name(parse_module(text))
    np.testing.assert_array_equal(q.weight_quantization(again["fc.w"]).scales, wq.scales)


def test_calibrated_module_prints_and_parses_back(tmp_path):
    module = calibrated(tmp_path)
    text = print_module(module, elide_weights_over=None)
    assert print_module(parse_module(text), elide_weights_over=None) == text
    assert "!qnn.uniform<u8:f32, " in text


def test_random_inputs_warn_and_are_seeded():
    def run(seed):
        module = tiny_model()
        ctx = make_context()
        AssignBitsPass().apply(ctx, module)
        with pytest.warns(CalibrationWarning, match="random inputs"):
            CalibratePass(samples=8, seed=seed).apply(ctx, module)
        return by_name(module)["conv"].output.type.element_type

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_registered_under_its_name():
    assert load_pass("qnn-calibrate") is CalibratePass


@pytest.mark.parametrize(
    "options,message",
    [
        ({"weight_clip": "max"}, "weight_clip='max' is not one of minmax, mse"),
        ({"act_range": "kl"}, "act_range='kl'"),
        ({"scheme": "log"}, "scheme='log'"),
        ({"percentile": 10.0}, "percentile=10.0"),
    ],
)
def test_bad_options(tmp_path, options, message):
    with pytest.raises(QuantloopError, match=message):
        calibrated(tmp_path, **options)


def test_scheme_needs_legal_bits(tmp_path):
    with pytest.raises(QuantloopError, match="16-bit weights cannot use scheme pot"):
        calibrated(tmp_path, bits="w16a8", scheme="pot")


def test_data_must_match_the_input(tmp_path):
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((4, 3, 2, 2), np.float32))
    module = tiny_model()
    ctx = make_context()
    AssignBitsPass().apply(ctx, module)
    with pytest.raises(QuantloopError, match="bad.npz: x has shape 4x3x2x2"):
        CalibratePass(data=str(data)).apply(ctx, module)
    with pytest.raises(QuantloopError, match="no such data file"):
        CalibratePass(data=str(tmp_path / "missing.npz")).apply(ctx, module)


def test_observed_ranges_are_cached_per_model_data_and_settings(tmp_path, monkeypatch):
    """A second calibration of the same model on the same data reads the ranges from the cache (no
    onnxruntime session) and types every value exactly as the first; other data or settings miss."""
    import onnxruntime

    from quantloop.ir.qnn import print_module

    cache = str(tmp_path / "cache")
    first = print_module(calibrated(tmp_path, cache_dir=cache), elide_weights_over=None)
    assert list((tmp_path / "cache" / "calibration").rglob("*.json"))

    def no_session(*args, **kwargs):
        raise AssertionError("onnxruntime ran although the ranges are cached")

    with monkeypatch.context() as patch:
        patch.setattr(onnxruntime, "InferenceSession", no_session)
        again = print_module(calibrated(tmp_path, cache_dir=cache), elide_weights_over=None)
        assert again == first
        with pytest.raises(AssertionError, match="onnxruntime ran"):
            calibrated(tmp_path, cache_dir=cache, act_range="percentile", percentile=99.0)
        # the ranges are observed in float: other bits reuse them (their scales differ, computed after)
        w4a4 = print_module(calibrated(tmp_path, bits="w4a4", cache_dir=cache), elide_weights_over=None)
        assert w4a4 != first
        other_data = tmp_path / "other"
        other_data.mkdir()
        with pytest.raises(AssertionError, match="onnxruntime ran"):
            calibrated(other_data, x=X * 2, cache_dir=cache)
    uncached = print_module(calibrated(tmp_path, no_cache=True), elide_weights_over=None)
    assert uncached == first


def test_max_samples_caps_the_data_run(tmp_path):
    """Samples past `max_samples` (here a 10x larger third one) do not reach the observed ranges."""
    from quantloop.ir.builder import main_func

    x = np.concatenate([X, 10 * X[:1]])

    def input_scale(**options):
        module = calibrated(tmp_path, x=x, no_cache=True, **options)
        return main_func(module).body.block.args[0].type.element_type.scale

    assert input_scale(max_samples=2) == pytest.approx(input_scale(max_samples=3) / 10)


def test_first_samples_keeps_whole_batches():
    from quantloop.passes.calibrate import first_samples

    x = np.arange(10)
    assert first_samples(x, 1, 4).tolist() == [0, 1, 2, 3]
    assert first_samples(x, 3, 7).tolist() == list(range(6))
    assert first_samples(x, 4, 2).tolist() == [0, 1, 2, 3]  # at least one batch


def test_cache_hit_skips_the_export_and_the_weight_clipping(tmp_path, monkeypatch):
    """A second calibration of the same module with the same settings reads ranges and per-channel weight
    scales from the cache: no float export, no MSE clipping search, and bit-identical IR (codes included)."""
    from quantloop.runtime.fakequant_export import FakeQuantExporter

    cache = str(tmp_path / "cache")
    options = {"cache_dir": cache, "weight_clip": "mse"}
    first = print_module(calibrated(tmp_path, **options), elide_weights_over=None)
    calls = {"export": 0, "weight_scales": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(FakeQuantExporter, "export", counting("export", FakeQuantExporter.export))
    monkeypatch.setattr(q, "weight_scales", counting("weight_scales", q.weight_scales))
    again = print_module(calibrated(tmp_path, **options), elide_weights_over=None)
    assert again == first
    assert calls == {"export": 0, "weight_scales": 0}
    # other weight settings miss the result cache (the ranges still come from the exported model's entry)
    minmax = print_module(calibrated(tmp_path, cache_dir=cache, weight_clip="minmax"), elide_weights_over=None)
    assert calls["export"] == 1 and calls["weight_scales"] == 2
    assert minmax == print_module(calibrated(tmp_path, no_cache=True), elide_weights_over=None)


@pytest.mark.parametrize("scheme", ["int", "pot"])
def test_blockwise_weight_clipping_and_encoding_are_bit_identical(tmp_path, monkeypatch, scheme):
    """Large weights are clipped and encoded a block of channels at a time (bounded memory): the same
    scales and codes as in one piece."""
    whole = print_module(calibrated(tmp_path, weight_clip="mse", scheme=scheme, no_cache=True), elide_weights_over=None)
    monkeypatch.setattr(q, "CHUNK_BYTES", 4)  # one channel per block
    blocks = print_module(calibrated(tmp_path, weight_clip="mse", scheme=scheme, no_cache=True), elide_weights_over=None)
    assert blocks == whole
    w = np.random.default_rng(0).standard_normal((7, 5, 3, 3)).astype(np.float32)
    monkeypatch.setattr(q, "CHUNK_BYTES", 1 << 30)
    one = q.weight_scales(w, 4, "mse", scheme, axis=0)
    monkeypatch.setattr(q, "CHUNK_BYTES", 50)
    assert np.array_equal(q.weight_scales(w, 4, "mse", scheme, axis=0), one)


def test_percentile_observer_is_exact_while_everything_fits():
    from quantloop.passes.calibrate import RangeObserver

    batches = [np.random.default_rng(i).standard_normal((2, 50)).astype(np.float32) for i in range(4)]
    observer = RangeObserver("percentile", 99.0, np.random.default_rng(0), updates=len(batches))
    for b in batches:
        observer.update(b)
    assert observer.range() == pytest.approx(tuple(np.percentile(np.concatenate(batches), [1.0, 99.0])), rel=1e-6)


def test_percentile_observer_weighs_every_batch_alike_beyond_the_cap(monkeypatch):
    """Beyond the cap each batch keeps the same share, so a range that grows batch by batch is estimated
    from all of them alike (a scheme that favours late batches would put the median near the last ones)."""
    import quantloop.passes.calibrate as calibrate

    monkeypatch.setattr(calibrate, "PERCENTILE_SAMPLE_CAP", 4_000)
    rng = np.random.default_rng(1)
    batches = [rng.uniform(0, i + 1, 1_000).astype(np.float32) for i in range(20)]  # 20 000 values, 5x the cap
    observer = calibrate.RangeObserver("percentile", 60.0, np.random.default_rng(0), updates=len(batches))
    for b in batches:
        observer.update(b)
    kept = sum(s.size for s in observer.samples)
    assert kept <= 4_000 + len(batches)
    assert {s.size for s in observer.samples} == {200}
    exact = np.percentile(np.concatenate(batches), [40.0, 60.0])
    assert observer.range() == pytest.approx(tuple(exact), rel=0.05)
    assert (observer.lo, observer.hi) == (min(b.min() for b in batches), max(b.max() for b in batches))
