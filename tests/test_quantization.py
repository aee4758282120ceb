import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

from quantloop.ir import quantization as q


def test_qrange_by_hand():
    assert q.qrange(4, True) == (-8, 7)
    assert q.qrange(4, True, narrow_range=True) == (-7, 7)
    assert q.qrange(8, False) == (0, 255)
    assert q.qrange(2, True) == (-2, 1)
    assert q.qrange(16, True) == (-32768, 32767)
    with pytest.raises(ValueError, match="9 bits"):
        q.qrange(9, True)


def test_quantize_rounds_half_to_even_and_clips():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 100.0, -100.0], np.float32)
    np.testing.assert_array_equal(q.quantize(x, 1.0, 0, 4, True), [0, 2, 2, 0, -2, 7, -8])
    np.testing.assert_array_equal(q.quantize(x, 1.0, 0, 4, True, narrow_range=True), [0, 2, 2, 0, -2, 7, -7])
    np.testing.assert_array_equal(q.quantize(x, 0.5, 3, 4, False), [4, 6, 8, 2, 0, 15, 0])


def test_weight_scales_minmax_by_hand():
    w = np.array([[0.5, -0.875, 0.3125], [1.75, 0.375, -0.625]], np.float32)
    scales = q.weight_scales(w, 4)
    np.testing.assert_array_equal(scales, [0.125, 0.25])  # max|w| / 7
    codes = q.weight_encode(w, scales, 4)
    # 2.5 -> 2, 1.5 -> 2, -2.5 -> -2 (half to even)
    np.testing.assert_array_equal(codes, [[4, -7, 2], [7, 2, -2]])
    np.testing.assert_array_equal(q.weight_decode(codes, scales, 4), [[0.5, -0.875, 0.25], [1.75, 0.5, -0.5]])
    np.testing.assert_allclose(q.weight_scales(np.array([[0.07, -0.035]]), 4), [0.01], rtol=1e-6)


def test_weight_scales_along_other_axis_and_zero_channel():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[:, 1] = 2.54
    np.testing.assert_allclose(q.weight_scales(w, 8, axis=1), [1.0, 0.02], rtol=1e-6)


def test_mse_clipping_beats_minmax_with_an_outlier():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 500)).astype(np.float32)
    w[:, 0] = 20.0
    for scheme, bits in [("int", 4), ("pot", 4), ("pot2", 6)]:
        mm = q.weight_scales(w, bits, "minmax", scheme)
        mse = q.weight_scales(w, bits, "mse", scheme)
        err = lambda s: np.square(q.weight_fake_quant(w, s, bits, scheme) - w).sum(axis=1)
        assert (err(mse) <= err(mm)).all()
        if scheme == "int":  # power-of-two levels are scale-invariant up to placement: little to gain
            assert err(mse).sum() < 0.7 * err(mm).sum()
            assert (mse < 0.7 * mm).all()


def test_activation_params_by_hand():
    scale, zp = q.activation_params(0.0, 6.0, 8, signed=False)
    assert zp == 0 and scale == pytest.approx(6 / 255)
    scale, zp = q.activation_params(-2.0, 1.0, 8, signed=True)
    assert zp == 0 and scale == pytest.approx(2 / 127)
    scale, zp = q.activation_params(-1.0, 3.0, 8, signed=False, symmetric=False)
    assert scale == pytest.approx(4 / 255) and zp == 64  # rint(1 / (4/255)) = rint(63.75)
    scale, zp = q.activation_params(0.5, 3.0, 4, signed=True, symmetric=False)  # widened to [0, 3]
    assert scale == pytest.approx(3 / 15) and zp == -8
    assert q.activation_params(0.0, 0.0, 8, signed=False) == (1.0, 0)


def test_tensor_range():
    x = np.arange(10001, dtype=np.float32)
    assert q.tensor_range(x) == (0.0, 10000.0)
    lo, hi = q.tensor_range(x, "percentile", 99.0)
    assert (lo, hi) == pytest.approx((100.0, 9900.0))
    with pytest.raises(ValueError, match="percentile 20"):
        q.tensor_range(x, "percentile", 20)


@pytest.mark.parametrize("kind", ["normal", "relu", "relu6", "few values"])
@pytest.mark.parametrize("percentile", [99.99, 99.9, 99.0, 90.0, 100.0])
def test_percentile_range_equals_numpy_to_the_last_bit(kind, percentile, monkeypatch):
    """Large tensors take the tail-selection path (`_percentile_pair`); it must give np.percentile's floats.
    For 99.x the tails are thin and the fast path must answer (the fallback is watched); 90 % and 100 %
    take the np.percentile fallback."""
    rng = np.random.default_rng(len(kind) * 100 + int(percentile))
    x = 3 * rng.standard_normal(300_001)
    x = {"normal": x, "relu": np.maximum(x, 0), "relu6": np.clip(x, 0, 6), "few values": np.round(x)}[kind]
    x = x.astype(np.float32)
    expected = tuple(float(v) for v in np.percentile(x, [100.0 - percentile, percentile]))
    fallbacks = []
    fallback = q._np_percentile_pair
    monkeypatch.setattr(q, "_np_percentile_pair", lambda *a: fallbacks.append(a) or fallback(*a))
    assert q.tensor_range(x, "percentile", percentile) == expected
    assert bool(fallbacks) == (percentile in (90.0, 100.0))


def test_pot_codes_by_hand():
    x = np.array([0.9, 0.74, 0.76, -0.3, 0.01, 0.0078125, 1.5, -7.0, 0.0], np.float32)
    codes = q.pot_encode(x, 1.0, "pot", 4)
    # 0.74 < 0.75 (midpoint of 1/2 and 1) -> 1/2; 1/128 is the midpoint of 0 and 1/64 -> 0 (tie to smaller)
    np.testing.assert_array_equal(codes, [1, 2, 1, -3, 7, 0, 1, -1, 0])
    np.testing.assert_array_equal(q.pot_decode(codes, 2.0, "pot", 4), [2, 1, 2, -0.5, 2 / 64, 0, 2, -2, 0])
    assert q.max_level("pot", 4) == 1.0


def test_pot2_codes_by_hand():
    # 8 bits: sign + two 3-bit exponent fields; field f means 2^-(f-1), 0 means absent
    x = np.array([1.0, 0.75, -0.3, 2.0, 1.5, 0.0], np.float32)
    codes = q.pot_encode(x, 1.0, "pot2", 8)
    expected = [(1 << 3) | 0, (2 << 3) | 3, -((3 << 3) | 5), (1 << 3) | 1, (1 << 3) | 2, 0]
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(q.pot_decode(codes, 1.0, "pot2", 8), [1, 0.75, -0.3125, 2, 1.5, 0])
    assert q.max_level("pot2", 8) == 2.0
    with pytest.raises(ValueError, match="pot2 quantization: 2 bits"):
        q.pot_encode(x, 1.0, "pot2", 2)


finite = st.floats(-1024.0, 1024.0, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(1, 64), elements=finite),
    bits=st.sampled_from(q.UNIFORM_BITS),
    signed=st.booleans(),
    scale=st.floats(0.0009765625, 8.0, width=32),
    zp_frac=st.floats(0, 1),
)
def test_uniform_round_trip_error_within_half_step(x, bits, signed, scale, zp_frac):
    qmin, qmax = q.qrange(bits, signed)
    zp = int(round(qmin + zp_frac * (qmax - qmin))) if not signed else 0
    codes = q.quantize(x, scale, zp, bits, signed)
    assert codes.min() >= qmin and codes.max() <= qmax
    back = q.dequantize(codes, scale, zp)
    np.testing.assert_array_equal(back, q.fake_quant(x, scale, zp, bits, signed))
    s = np.float32(scale)
    inside = (x >= (qmin - zp) * s) & (x <= (qmax - zp) * s)
    err = np.abs(back.astype(np.float64) - x)[inside]
    assert (err <= s / 2 * (1 + 1e-5) + 1e-6 * np.abs(x[inside])).all()


@settings(max_examples=100, deadline=None)
@given(
    w=hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 20)), elements=finite),
    bits=st.sampled_from([2, 3, 4, 5, 6, 7, 8]),
    scheme=st.sampled_from(["int", "pot", "pot2"]),
    clip=st.sampled_from(["minmax", "mse"]),
)
@example(w=np.array([[6.4e-39, -1e-40]], np.float32), bits=8, scheme="int", clip="minmax")  # subnormal channel
@example(w=np.array([[3e-37, 1e-38]], np.float32), bits=4, scheme="pot", clip="minmax")
def test_weight_codes_in_range_and_nearest(w, bits, scheme, clip):
    if scheme == "pot2" and bits < 3:
        bits = 3
    scales = q.weight_scales(w, bits, clip, scheme)
    codes = q.weight_encode(w, scales, bits, scheme)
    lo, hi = q.qrange(bits, True, narrow_range=True)
    assert codes.min() >= lo and codes.max() <= hi
    back = q.weight_decode(codes, scales, bits, scheme)
    assert (q.weight_encode(back, scales, bits, scheme) == codes).all()
    if scheme != "int":
        levels, _ = q._level_table(scheme, bits)
        grid = np.concatenate([-levels[::-1], levels])[None, None, :] * scales[:, None, None]
        best = np.abs(grid - w[:, :, None]).min(axis=2)
        assert (np.abs(back - w) <= best + 1e-6 * np.abs(w) + 1e-7).all()
    if clip == "minmax":
        assert (np.abs(back) <= np.abs(w).max(axis=1, keepdims=True) * (1 + 1e-6)).all()


def _run_single_node(node, inputs, outputs, initializers, feed):
    graph = helper.make_graph([node], "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_matches_onnxruntime_quantizelinear(signed):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=4096) * 40).astype(np.float32)
    x[:64] = (np.arange(64, dtype=np.float32) - 32.0) * np.float32(0.3) + np.float32(0.15)  # near ties
    scale, zp = np.float32(0.3), (0 if signed else 100)
    elem = TensorProto.INT8 if signed else TensorProto.UINT8
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    init = [
        helper.make_tensor("s", TensorProto.FLOAT, [], [float(scale)]),
        helper.make_tensor("z", elem, [], [zp]),
    ]
    got = _run_single_node(
        node,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info("y", elem, [x.size])],
        init,
        {"x": x},
    )
    np.testing.assert_array_equal(got.astype(np.int32), q.quantize(x, scale, zp, 8, signed))
