"""Tile-ordered weight packing: exact round trips, sizes, and the tile order itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantloop.backend import packing
from quantloop.backend.tiling import TilePlan
from quantloop.backend.weights import (
    QuantizedWeights,
    WeightLayer,
    pack_tiles,
    packed_layer_words,
    quantize_bias,
    unpack,
    unpack_biases,
    uniform_codes,
    unpack_tiles,
    write_weights,
)
from quantloop.errors import QuantloopError
from quantloop.ir import quantization as q

BITS = [2, 3, 4, 5, 6, 7, 8, 16]
CONV_DIMS = ("G", "M", "C", "S", "R")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def layer_and_mapping(draw):
    """A random grouped conv's weights with a random DRAM nest (weight and non-weight dims, any order)."""
    extents = {d: draw(st.integers(1, 6)) for d in CONV_DIMS}
    loops = []
    for dim in CONV_DIMS + ("N", "P", "Q"):
        factor = draw(st.sampled_from(_divisors(extents[dim]))) if dim in extents else draw(st.integers(1, 4))
        loops.append((dim, factor))
    loops = draw(st.permutations(loops))
    return tuple(extents[d] for d in CONV_DIMS), tuple(loops)


def _random_codes(rng, shape, bits, signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(np.int32)


@settings(max_examples=150, deadline=None)
@given(
    layer_and_mapping(),
    st.sampled_from(BITS),
    st.booleans(),
    st.integers(1, 64).map(lambda k: 8 * k),
    st.integers(0, 2**32 - 1),
)
def test_tile_ordered_pack_unpack_is_exact_and_sized_per_tile(case, bits, signed, word_bits, seed):
    extents, loops = case
    if bits > word_bits:
        word_bits = 16
    plan = TilePlan.from_nest(CONV_DIMS, extents, loops)
    codes = _random_codes(np.random.default_rng(seed), extents, bits, signed)
    data = pack_tiles(codes, plan, bits, word_bits, signed)
    assert np.array_equal(unpack_tiles(data, plan, bits, word_bits, signed), codes)
    opw = word_bits // bits
    expected_words = plan.tile_count * -(-plan.tile_size // opw)
    assert len(data) == expected_words * word_bits // 8
    assert packed_layer_words(plan, bits, word_bits) == expected_words
    assert plan.tile_count * plan.tile_size == codes.size


@settings(max_examples=60, deadline=None)
@given(layer_and_mapping(), st.integers(0, 2**32 - 1))
def test_each_tile_is_the_block_its_loop_indices_select(case, seed):
    """Tile t is the sub-block at the loop indices of t (outer loop slowest), in layout order."""
    extents, loops = case
    plan = TilePlan.from_nest(CONV_DIMS, extents, loops)
    array = np.random.default_rng(seed).integers(0, 1000, size=extents)
    tiles = plan.to_tiles(array)
    shape = plan.tile_shape
    for t in range(plan.tile_count):
        index = np.unravel_index(t, [f for _, f in plan.loops]) if plan.loops else ()
        start = {d: 0 for d in CONV_DIMS}
        stride = dict(zip(CONV_DIMS, shape))
        for (dim, factor), i in reversed(list(zip(plan.loops, index))):
            start[dim] += int(i) * stride[dim]
            stride[dim] *= factor
        block = array[tuple(slice(start[d], start[d] + s) for d, s in zip(CONV_DIMS, shape))]
        assert np.array_equal(tiles[t], block.ravel())


def test_non_weight_loops_create_no_tiles():
    plan = TilePlan.from_nest(CONV_DIMS, (1, 64, 64, 3, 3), [("Q", 4), ("C", 16), ("M", 2), ("P", 4)])
    assert plan.loops == (("C", 16), ("M", 2))
    assert plan.tile_count == 32
    assert plan.tile_shape == (1, 32, 4, 3, 3)


def test_a_factor_that_does_not_divide_the_dim_is_rejected():
    with pytest.raises(ValueError, match="does not divide"):
        TilePlan.from_nest(CONV_DIMS, (1, 6, 4, 3, 3), [("M", 4)])


def _layer(name, rng, bits, scheme, signed, loops, groups=1, shape=(8, 4, 3, 3), with_bias=True):
    extents = (groups, shape[0] // groups, *shape[1:])
    w = rng.normal(size=shape).astype(np.float32)
    if scheme == "int":
        scales = q.weight_scales(w, bits) if signed else np.full(shape[0], 0.05, np.float32)
        zps = np.zeros(shape[0], np.int64) if signed else rng.integers(0, 1 << bits, shape[0])
        codes = q.quantize(w, scales, zps, bits, signed, axis=0, narrow_range=signed)
    else:
        scales = q.weight_scales(w, bits, scheme=scheme)
        zps = np.zeros(shape[0], np.int64)
        codes = q.weight_encode(w, scales, bits, scheme)
    weights = QuantizedWeights(codes, bits, scheme, signed or scheme != "int", scales, zps, 0, signed)
    bias = bias_scales = None
    if with_bias:
        bias, bias_scales = quantize_bias(rng.normal(size=shape[0]).astype(np.float32), scales, 0.02)
    return WeightLayer(name, weights, ("M", "C/g", "kH", "kW"), CONV_DIMS, extents, loops, bias, bias_scales), w


@pytest.mark.parametrize("word_bits", [8, 24, 64, 512])
def test_weights_files_round_trip_codes_floats_and_biases(tmp_path, word_bits):
    rng = np.random.default_rng(0)
    layers = [
        _layer("conv_a", rng, 4, "int", True, (("M", 2), ("P", 7), ("C", 2))),
        _layer("conv_b", rng, 3, "int", False, (("C", 4), ("M", 4))),
        _layer("dw", rng, 8, "int", True, (("G", 4),), groups=8, shape=(8, 1, 3, 3), with_bias=False),
        _layer("pot", rng, 4, "pot", True, (("R", 3),)),
        _layer("pot2", rng, 8, "pot2", True, ()),
    ]
    if word_bits >= 16:
        layers.append(_layer("wide", rng, 16, "int", True, (("M", 8),)))
    manifest = write_weights(tmp_path, [layer for layer, _ in layers], word_bits)
    codes = unpack(tmp_path)
    floats = unpack(tmp_path, dequantize=True)
    biases = unpack_biases(tmp_path)
    for layer, _ in layers:
        w = layer.weights
        assert np.array_equal(codes[layer.name], w.codes)
        assert floats[layer.name].dtype == np.float32
        assert np.array_equal(floats[layer.name], w.dequantize())
        if layer.bias is not None:
            assert np.array_equal(biases[layer.name], layer.bias)
        else:
            assert layer.name not in biases
    entries = {e["name"]: e for e in manifest["layers"]}
    assert entries["dw"]["canonical_shape"] == [8, 1, 1, 3, 3]
    assert entries["dw"]["tile_shape"] == [2, 1, 1, 3, 3]
    assert entries["conv_a"]["tile_order"] == [["M", 2], ["C", 2]]
    assert entries["conv_a"]["loop_nest"] == [["M", 2], ["P", 7], ["C", 2]]
    for e in manifest["layers"]:
        assert e["offset"] % (word_bits // 8) == 0
        opw = word_bits // e["bits"]
        assert e["length"] == e["tile_count"] * -(-int(np.prod(e["tile_shape"])) // opw) * word_bits // 8
        assert e["padding_bits_per_word"] == word_bits % e["bits"]
    assert (tmp_path / "weights.bin").stat().st_size == manifest["total_bytes"]
    assert json.loads((tmp_path / "weights.json").read_text()) == manifest


def test_int_dequantize_uses_zero_points_and_pot_decodes():
    codes = np.array([[0, 3], [5, 7]], dtype=np.int32)
    w = QuantizedWeights(codes, 3, "int", False, np.array([0.5, 0.25], np.float32), np.array([1, 2]), 0)
    assert np.array_equal(w.dequantize(), np.array([[-0.5, 1.0], [0.75, 1.25]], np.float32))
    p = QuantizedWeights(np.array([0, 1, -2, 3], np.int32), 3, "pot", True, np.array([2.0], np.float32),
                         np.array([0]), None)
    assert np.array_equal(p.dequantize(), np.array([0.0, 2.0, -1.0, 0.5], np.float32))


def test_bias_codes_use_the_accumulator_scale():
    codes, scales = quantize_bias(np.array([1.0, -0.3], np.float32), np.array([0.1, 0.01], np.float32), 0.5)
    assert np.array_equal(scales, np.array([0.05, 0.005], np.float32))
    assert codes.tolist() == [20, -60]


def test_unpack_errors_name_the_file(tmp_path):
    with pytest.raises(QuantloopError, match="weights.json: not found"):
        unpack(tmp_path)
    (tmp_path / "weights.json").write_text("{")
    with pytest.raises(QuantloopError, match="not valid JSON"):
        unpack(tmp_path)


def test_codes_outside_the_declared_range_are_refused(tmp_path):
    w = QuantizedWeights(np.array([[[[9]]]], np.int32), 4, "int", True, np.ones(1, np.float32), np.zeros(1), 0)
    layer = WeightLayer("bad", w, ("M", "C/g", "kH", "kW"), CONV_DIMS, (1, 1, 1, 1, 1), ())
    with pytest.raises(ValueError, match="outside"):
        write_weights(tmp_path, [layer], 64)


def test_packing_module_agrees_on_the_word_count():
    assert packing.packed_size_words(100, 3, 8) == 50


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(BITS),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, 0, 1]),
    st.integers(0, 2**32 - 1),
)
def test_fast_uniform_codes_equal_the_reference_quantize(bits, signed, narrow, axis, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((5, 4, 3)) * rng.uniform(0.01, 100)).astype(np.float32)
    n = 1 if axis is None else x.shape[axis]
    scales = rng.uniform(1e-3, 1.0, n).astype(np.float32)
    lo, hi = q.qrange(bits, signed, narrow)
    zps = rng.integers(lo, hi + 1, n) if rng.random() < 0.5 else np.zeros(n, np.int64)
    s, z = (scales[0], zps[0]) if axis is None else (scales, zps)
    expected = q.quantize(x, s, z, bits, signed, axis=axis, narrow_range=narrow)
    got = uniform_codes(x, scales, zps, bits, signed, axis, narrow)
    assert np.array_equal(got.astype(np.int32), expected)
    assert got.dtype.itemsize <= 4


def test_a_truncated_weights_bin_is_a_clean_error(tmp_path):
    rng = np.random.default_rng(1)
    layer, _ = _layer("conv", rng, 4, "int", True, (("M", 2),))
    write_weights(tmp_path, [layer], 64)
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[:-16])
    with pytest.raises(QuantloopError, match=r"weights.bin: has \d+ bytes but weights.json describes"):
        unpack(tmp_path)
    with pytest.raises(QuantloopError, match="weights.json describes"):
        unpack_biases(tmp_path)
