"""Quantization numerics: scales, zero points, integer codes, and their inverses (pure numpy).

Conventions (shared by the qnn types, the calibration pass, the packer and the fake-quant export):

* Uniform codes: ``q = clip(round_half_even(x / scale) + zp, qmin, qmax)`` computed in float32, exactly as
  ONNX ``QuantizeLinear`` defines it; ``x' = (q - zp) * scale`` as ``DequantizeLinear``.
  ``signed`` b-bit codes span ``[-2^(b-1), 2^(b-1) - 1]``; with ``narrow_range`` the most negative code is
  dropped so the range is symmetric ``[-(2^(b-1) - 1), 2^(b-1) - 1]``. Unsigned codes span ``[0, 2^b - 1]``.
* Weights: symmetric, signed, narrow range, one scale per output channel (axis 0), zero point 0.
* Activations: symmetric, zero point 0. Unsigned when the producer is a ReLU / ReLU6 (the range starts at
  0, so no code is wasted on negative values); signed otherwise. An asymmetric variant
  (``symmetric=False``) is available for callers that want a zero point.
* Power-of-two codes (papers 003/004, LightPE-1/2) are stored as signed b-bit two's-complement integers
  whose sign is the value's sign and whose magnitude indexes exponents; 0 is the zero code:

  - ``pot``: magnitude ``m`` in ``1 .. 2^(b-1) - 1`` means ``2^-(m-1) * scale``, so b = 4 gives
    ``±{1, 1/2, ..., 1/64} * scale`` and 0 (LightPE-1 stores ``±2^-m`` with one sign and 3 exponent bits;
    we give up one exponent for an exact zero).
  - ``pot2``: ``k = (b - 1) // 2`` bits per term; magnitude ``(f1 << k) | f2`` with term ``f`` meaning
    ``0`` when ``f = 0`` and ``2^-(f-1)`` otherwise; value ``(t(f1) + t(f2)) * scale`` with ``f1 <= f2``
    (canonical: the larger term first). b = 8 gives LightPE-2's ``±(2^-m1 + 2^-m2)``, m in 0..6, plus 0.
    Legal bits: 3..8 (for even b one bit is unused).

  Encoding picks the nearest representable level (ties go to the smaller magnitude); the scale maps the
  largest level to the clipping value of the channel.

Calibrated weight constants hold codes; :func:`weight_quantization` reads back how they decode (from the
`!qnn.uniform` type, or for scale-less `!qnn.pot` / `!qnn.pot2` types from the constant's
``qnn.scales`` / ``qnn.axis`` attributes). Everything else here is numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from quantloop.bits import LEGAL_BITS as UNIFORM_BITS
from quantloop.bits import POT2_BITS, POT_BITS
from quantloop.options import DEFAULT_PERCENTILE

Scheme = Literal["int", "pot", "pot2"]
SCALES_ATTR = "qnn.scales"
AXIS_ATTR = "qnn.axis"
SCHEME_ATTR = "qnn.weight_scheme"
"""On a weight constant between `qnn-assign-bits` and `qnn-calibrate`: the scheme a bits file chose for
its layer (calibration encodes it, and drops the attribute: the type then says it)."""
MIN_SCALE = np.float32(np.finfo(np.float32).tiny)  # scales never underflow to 0 or subnormals
_MSE_COARSE = np.linspace(0.05, 1.0, 20)
_MSE_FINE = np.linspace(-0.05, 0.05, 21)


def qrange(bits: int, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """Smallest and largest integer code of a b-bit uniform type."""
    if bits not in UNIFORM_BITS:
        raise ValueError(f"uniform quantization: {bits} bits is not a legal storage width {UNIFORM_BITS}")
    if signed:
        qmax = (1 << (bits - 1)) - 1
        return (-qmax if narrow_range else -qmax - 1), qmax
    return (1 if narrow_range else 0), (1 << bits) - 1


def _checked_scale(scale: np.ndarray | float) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"quantization: scales must be positive and finite, got {s.ravel()[:8]}")
    return s


def _broadcast(param: np.ndarray | float, ndim: int, axis: int | None) -> np.ndarray:
    arr = np.asarray(param)
    if axis is None or arr.ndim == 0:
        return arr
    shape = [1] * ndim
    shape[axis] = arr.size
    return arr.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    bits: int,
    signed: bool,
    axis: int | None = None,
    narrow_range: bool = False,
) -> np.ndarray:
    """Integer codes of ``x`` (int32): float32 ``x / scale``, round half to even, add zero point, clip."""
    qmin, qmax = qrange(bits, signed, narrow_range)
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(_checked_scale(scale), x.ndim, axis)
    z = _broadcast(np.asarray(zero_point, dtype=np.float32), x.ndim, axis)
    q = np.rint(x / s) + z
    return np.clip(q, qmin, qmax).astype(np.int32)


def dequantize(
    q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, axis: int | None = None
) -> np.ndarray:
    """Float32 values of integer codes: ``(q - zp) * scale`` as DequantizeLinear computes it."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), q.ndim, axis)
    return (q.astype(np.int64) - z).astype(np.float32) * s


def fake_quant(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    bits: int,
    signed: bool,
    axis: int | None = None,
    narrow_range: bool = False,
) -> np.ndarray:
    """``dequantize(quantize(x))`` in float32, the value a b-bit tensor carries through the network."""
    return dequantize(quantize(x, scale, zero_point, bits, signed, axis, narrow_range), scale, zero_point, axis)


# ----------------------------------------------------------------------------- power-of-two schemes


def _pot_levels(bits: int) -> np.ndarray:
    if bits not in POT_BITS:
        raise ValueError(f"pot quantization: {bits} bits is not a legal width (2..8)")
    count = (1 << (bits - 1)) - 1
    return np.concatenate([[0.0], 2.0 ** -np.arange(count)])


def _term(field: np.ndarray) -> np.ndarray:
    return np.where(field == 0, 0.0, 2.0 ** -(np.maximum(field, 1) - 1.0))


def _pot2_table(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct magnitudes (scale 1) and the canonical code magnitude of each."""
    if bits not in POT2_BITS:
        raise ValueError(f"pot2 quantization: {bits} bits is not a legal width (3..8)")
    k = (bits - 1) // 2
    f1, f2 = np.meshgrid(np.arange(1 << k), np.arange(1 << k), indexing="ij")
    canonical = ((f2 == 0) | ((f1 >= 1) & (f1 <= f2))).ravel()  # larger term first, an absent term last
    f1, f2 = f1.ravel()[canonical], f2.ravel()[canonical]
    values = _term(f1) + _term(f2)
    codes = (f1 << k) | f2
    order = np.lexsort((codes, values))
    values, codes = values[order], codes[order]
    keep = np.concatenate([[True], np.diff(values) > 0])
    return values[keep], codes[keep]


def _level_table(scheme: Scheme, bits: int) -> tuple[np.ndarray, np.ndarray]:
    if scheme == "pot":
        levels = _pot_levels(bits)
        mags = np.concatenate([[0], np.arange(1, levels.size)])
        order = np.argsort(levels)
        return levels[order], mags[order]
    if scheme == "pot2":
        return _pot2_table(bits)
    raise ValueError(f"power-of-two quantization: unknown scheme {scheme!r} (expected pot or pot2)")


def max_level(scheme: Scheme, bits: int) -> float:
    """Largest representable magnitude at scale 1 (1 for pot, 2 for pot2, qmax for int)."""
    if scheme == "int":
        return float(qrange(bits, True, narrow_range=True)[1])
    return float(_level_table(scheme, bits)[0][-1])


def pot_encode(
    x: np.ndarray, scale: np.ndarray | float, scheme: Scheme, bits: int, axis: int | None = None
) -> np.ndarray:
    """Signed codes (int32) of the nearest ``pot``/``pot2`` level to ``x / scale`` (see module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(_checked_scale(scale), x.ndim, axis)
    r = np.abs(x / s)
    if scheme == "pot":
        mags = _pot_magnitudes(r, bits)
    elif scheme == "pot2":
        mags = _pot2_magnitudes(r, bits)
    else:
        raise ValueError(f"power-of-two quantization: unknown scheme {scheme!r} (expected pot or pot2)")
    return np.where(x < 0, -mags, mags).astype(np.int32)


def _pot_exponents(r: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(exponent e in [emin, 0], is-zero) of the nearest of {0, 2^0, ..., 2^emin} to r >= 0, by exponent
    arithmetic: between 2^(e-1) and 2^e the midpoint is 0.75 * 2^e (frexp's mantissa 0.75); ties go to
    the smaller level."""
    emin = 2 - _pot_levels(bits).size
    mant, exp = np.frexp(r)
    e = np.clip(np.where(mant > 0.75, exp, exp - 1), emin, 0)
    return e, r <= np.float32(2.0 ** (emin - 1))


def _pot_magnitudes(r: np.ndarray, bits: int) -> np.ndarray:
    e, zero = _pot_exponents(r, bits)
    return np.where(zero, 0, 1 - e).astype(np.int32)


@lru_cache(maxsize=None)
def _pot2_lookup(bits: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(log2 of the cells per unit, magnitude code per cell, level per cell). Levels are multiples of
    2^-L, so their midpoints are multiples of 2^-(L+1): within a cell of that width the nearest level is
    constant."""
    levels, mags = _pot2_table(bits)
    k = (bits - 1) // 2
    shift = (1 << k) - 1  # L + 1 with L the finest exponent
    cells = int(round(levels[-1] * 2**shift))
    centers = (np.arange(cells) + 0.5) / 2**shift
    idx = np.searchsorted((levels[1:] + levels[:-1]) / 2, centers)
    return shift, mags[idx], levels[idx].astype(np.float32)


def _pot2_cells(r: np.ndarray, bits: int) -> np.ndarray:
    shift, table, _ = _pot2_lookup(bits)
    t = np.minimum(r * np.float32(2**shift), np.float32(table.size))  # exact: a power-of-two factor
    return np.clip(np.ceil(t) - 1, 0, table.size - 1).astype(np.intp)  # (i, i+1] -> cell i: ties go down


def _pot2_magnitudes(r: np.ndarray, bits: int) -> np.ndarray:
    return _pot2_lookup(bits)[1][_pot2_cells(r, bits)]


def _nearest_level(r: np.ndarray, scheme: Scheme, bits: int) -> np.ndarray:
    """Float32 value of the level nearest to r >= 0 (scale 1), without going through codes."""
    if scheme == "pot":
        e, zero = _pot_exponents(r, bits)
        return np.where(zero, np.float32(0), np.ldexp(np.float32(1), e).astype(np.float32))
    return _pot2_lookup(bits)[2][_pot2_cells(r, bits)]


def pot_decode(
    codes: np.ndarray, scale: np.ndarray | float, scheme: Scheme, bits: int, axis: int | None = None
) -> np.ndarray:
    """Float32 values of ``pot``/``pot2`` codes: ``sign * level(|code|) * scale``."""
    codes = np.asarray(codes)
    lo, hi = qrange(bits, True, narrow_range=True)
    if codes.size and (codes.min() < lo or codes.max() > hi):
        raise ValueError(f"{scheme} decode: codes outside [{lo}, {hi}] for {bits} bits")
    mags = np.abs(codes)
    if scheme == "pot":
        _pot_levels(bits)
        level = _term(mags)
    elif scheme == "pot2":
        _pot2_table(bits)
        k = (bits - 1) // 2
        level = _term(mags >> k) + _term(mags & ((1 << k) - 1))
    else:
        raise ValueError(f"power-of-two quantization: unknown scheme {scheme!r} (expected pot or pot2)")
    s = _broadcast(np.asarray(scale, dtype=np.float32), codes.ndim, axis)
    return (np.sign(codes) * level).astype(np.float32) * s


# ----------------------------------------------------------------------------- weight / activation scales


def _channel_matrix(w: np.ndarray, axis: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def weight_scales(
    w: np.ndarray,
    bits: int,
    clip: Literal["minmax", "mse"] = "minmax",
    scheme: Scheme = "int",
    axis: int = 0,
) -> np.ndarray:
    """Per-channel (along ``axis``) float32 scales for symmetric signed weight quantization.

    ``minmax`` maps each channel's max |w| to the largest level; ``mse`` searches the clipping value
    ``ratio * max|w|`` per channel for the least squared error of the fake-quantized weights: ratios
    0.05, 0.10, ..., 1 first, then steps of 0.005 within ±0.05 of each channel's best (never worse than
    minmax, which is ratio 1). Channels that are all zero, or whose max |w| is below ``top · MIN_SCALE``
    (a scale would be subnormal), get scale 1 and so all-zero codes.
    """
    mat = _channel_matrix(w, axis)
    absmax = np.abs(mat).max(axis=1) if mat.size else np.zeros(mat.shape[0], np.float32)
    top = max_level(scheme, bits)
    # A channel whose scale would fall below float32's normal range (max |w| < top · MIN_SCALE) is
    # quantized as all-zero: clamping its scale up to MIN_SCALE would round codes beyond max |w|.
    representable = absmax >= np.float32(top) * MIN_SCALE
    safe_max = np.where(representable, absmax, np.float32(top))
    base = np.maximum((safe_max / np.float32(top)).astype(np.float32), MIN_SCALE)
    if clip == "minmax":
        return base
    if clip != "mse":
        raise ValueError(f"weight clipping: unknown method {clip!r} (expected minmax or mse)")
    best_ratio, best_err = np.ones_like(base, dtype=np.float64), np.full(base.shape, np.inf)
    for ratios in ([np.full(base.shape, r) for r in _MSE_COARSE], None):
        if ratios is None:
            center = best_ratio.copy()
            ratios = [np.clip(center + d, 0.01, 1.0) for d in _MSE_FINE]
        for ratio in ratios:
            scale = np.maximum((base * ratio).astype(np.float32), MIN_SCALE)
            err = _clip_error(mat, scale, bits, scheme)
            better = err < best_err
            best_ratio = np.where(better, ratio, best_ratio)
            best_err = np.where(better, err, best_err)
    return np.maximum((base * best_ratio).astype(np.float32), MIN_SCALE)


#: `_clip_error` (and the weight encoding in qnn-calibrate) work on at most this many bytes of rows at a time: float32 temporaries of a
#: VGG fully connected layer (400 MB each) would otherwise set the compile's peak memory
CHUNK_BYTES = 32 << 20


def _clip_error(mat: np.ndarray, scale: np.ndarray, bits: int, scheme: Scheme) -> np.ndarray:
    """Per-row squared error of fake-quantizing ``mat`` (rows = channels) at ``scale``, in units where the
    codes are integers (``(code − w/s)² · s²``), computed in place in float32, a block of rows at a time
    (each row's sum is the same either way)."""
    rows = max(1, CHUNK_BYTES // max(1, mat.shape[1] * 4))
    if mat.shape[0] > rows:
        return np.concatenate([
            _clip_error(mat[start : start + rows], scale[start : start + rows], bits, scheme)
            for start in range(0, mat.shape[0], rows)
        ])
    r = mat / scale[:, None]
    if scheme == "int":
        qmax = qrange(bits, True, narrow_range=True)[1]
        approx = np.clip(np.rint(r), -qmax, qmax)
    else:
        np.abs(r, out=r)
        approx = _nearest_level(r, scheme, bits)
    np.subtract(approx, r, out=approx)
    np.square(approx, out=approx)
    return approx.sum(axis=1, dtype=np.float64) * np.square(scale, dtype=np.float64)


def weight_encode(w: np.ndarray, scale: np.ndarray, bits: int, scheme: Scheme = "int", axis: int = 0) -> np.ndarray:
    """Signed integer codes of weights under per-channel ``scale`` (int: narrow range, zero point 0)."""
    if scheme == "int":
        return quantize(w, scale, 0, bits, True, axis=axis, narrow_range=True)
    return pot_encode(w, scale, scheme, bits, axis=axis)


def weight_decode(codes: np.ndarray, scale: np.ndarray, bits: int, scheme: Scheme = "int", axis: int = 0) -> np.ndarray:
    """Float32 weights from codes; the inverse of :func:`weight_encode` on its image."""
    if scheme == "int":
        return dequantize(codes, scale, 0, axis=axis)
    return pot_decode(codes, scale, scheme, bits, axis=axis)


def weight_fake_quant(w: np.ndarray, scale: np.ndarray, bits: int, scheme: Scheme = "int", axis: int = 0) -> np.ndarray:
    return weight_decode(weight_encode(w, scale, bits, scheme, axis), scale, bits, scheme, axis)


def tensor_range(
    x: np.ndarray, method: Literal["minmax", "percentile"] = "minmax", percentile: float = DEFAULT_PERCENTILE
) -> tuple[float, float]:
    """(lo, hi) of a calibration tensor: its extremes, or the ``100-p`` / ``p`` percentiles."""
    x = np.asarray(x, dtype=np.float32).ravel()
    if x.size == 0:
        raise ValueError("activation range: empty calibration tensor")
    if method == "minmax":
        return float(x.min()), float(x.max())
    if method != "percentile":
        raise ValueError(f"activation range: unknown method {method!r} (expected minmax or percentile)")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"activation range: percentile {percentile} is not in (50, 100]")
    return _percentile_pair(x, percentile)


#: `_percentile_pair` selects from the tails when each holds at most this share of the values
_TAIL_SHARE = 0.02


def _percentile_pair(x: np.ndarray, percentile: float) -> tuple[float, float]:
    """`np.percentile(x, [100 - p, p])` (linear interpolation), equal to the last bit, without partitioning
    all of `x`: for high p each percentile lies between two order statistics in a thin tail, so a strided
    sample's quantiles give cuts, only the values beyond a cut are partitioned (values equal to it, e.g. the
    zeros after a ReLU, are counted, not sorted), and numpy interpolates between the two neighbours with
    the same weight. Falls back to `np.percentile` when a tail is not thin or a cut missed."""
    n = x.size
    index = np.array([100.0 - percentile, percentile]) / 100.0 * (n - 1)  # numpy's virtual indexes
    below = np.floor(index).astype(np.int64)
    need = int(below[0]) + 2  # the lower tail must hold order statistics 0 .. below + 1
    if n < 50_000 or need > _TAIL_SHARE * n or below[1] + 1 >= n:
        return _np_percentile_pair(x, percentile)
    sample = np.sort(x[:: max(1, n // 20_000)])
    reach = int(2 * need / n * len(sample)) + 1  # twice the needed share, measured on the sample
    lo_cut, hi_cut = sample[min(len(sample) - 1, reach)], sample[max(0, len(sample) - 1 - reach)]
    pairs = []
    for cut, k, upper in ((lo_cut, int(below[0]), False), (hi_cut, int(below[1]), True)):
        beyond = x[x > cut] if upper else x[x < cut]
        at = int(np.count_nonzero(x == cut))
        # the tail in ascending order: [values below cut], cut × at  |  cut × at, [values above cut]
        first = n - beyond.size - at if upper else 0  # rank of the tail's first value
        ranks = [k - first, k + 1 - first]
        if ranks[0] < 0 or ranks[1] >= beyond.size + at:
            return _np_percentile_pair(x, percentile)
        strict = [r - at if upper else r for r in ranks]  # rank within `beyond`, negative/too big: the cut
        inside = [r for r in strict if 0 <= r < beyond.size]
        part = np.partition(beyond, inside) if inside else beyond
        pairs.append(tuple(part[r] if 0 <= r < beyond.size else cut for r in strict))
    gamma = index - below
    out = [np.quantile(np.array(pair, dtype=x.dtype), np.array([g]))[0] for pair, g in zip(pairs, gamma)]
    return float(out[0]), float(out[1])


def _np_percentile_pair(x: np.ndarray, percentile: float) -> tuple[float, float]:
    lo, hi = np.percentile(x, [100.0 - percentile, percentile])
    return float(lo), float(hi)


def activation_params(
    lo: float, hi: float, bits: int, signed: bool, symmetric: bool = True
) -> tuple[float, int]:
    """(scale, zero_point) covering [lo, hi] with b-bit codes; the range is widened to include 0.

    Symmetric (default): zero point 0; unsigned codes cover [0, hi] (negative inputs clip to 0, as after
    a ReLU), signed ones [-m, m] with m = max(|lo|, |hi|) and the full two's-complement range.
    Asymmetric: the code range [qmin, qmax] spans [min(lo, 0), max(hi, 0)] and 0 maps to an exact code.
    A degenerate range (all zeros) gets scale 1.
    """
    qmin, qmax = qrange(bits, signed)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        m = hi if not signed else max(-lo, hi)
        scale = max(np.float32(m / qmax), MIN_SCALE) if m > 0 else np.float32(1.0)
        return float(scale), 0
    if hi == lo:
        return 1.0, 0 if signed else qmin
    scale = max(np.float32((hi - lo) / (qmax - qmin)), MIN_SCALE)
    zp = int(np.clip(np.rint(qmin - lo / float(scale)), qmin, qmax))
    return float(scale), zp


# ----------------------------------------------------------------------------- calibrated constants


@dataclass(frozen=True)
class WeightQuantization:
    """How a calibrated weight constant's codes map back to floats (see :func:`weight_quantization`)."""

    scheme: str
    bits: int
    signed: bool
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int | None
    narrow_range: bool

    def decode(self, codes: np.ndarray) -> np.ndarray:
        per_tensor = self.axis is None
        scales = self.scales.reshape(()) if per_tensor else self.scales
        if self.scheme == "int":
            return dequantize(codes, scales, self.zero_points.reshape(()) if per_tensor else self.zero_points, self.axis)
        return pot_decode(codes, scales, self.scheme, self.bits, axis=self.axis)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of float values under these parameters (the inverse of :meth:`decode` on its image)."""
        per_tensor = self.axis is None
        scales = self.scales.reshape(()) if per_tensor else self.scales
        if self.scheme == "int":
            zps = self.zero_points.reshape(()) if per_tensor else self.zero_points
            return quantize(values, scales, zps, self.bits, self.signed, self.axis, self.narrow_range)
        return pot_encode(values, scales, self.scheme, self.bits, axis=self.axis)


def weight_quantization(constant) -> WeightQuantization:
    """Scheme, scales and zero points of a calibrated `qnn.constant`: from its `!qnn.uniform` type, or for
    `!qnn.pot` / `!qnn.pot2` (types without a scale) from its `qnn.scales` / `qnn.axis` attributes."""
    from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr

    from quantloop.errors import QuantloopError
    from quantloop.ir.ops import op_label
    from quantloop.ir.types import Pot2Type, PotType, UniformPerAxisType, UniformType

    elem = constant.output.type.element_type
    if isinstance(elem, UniformType):
        return WeightQuantization("int", elem.bits, elem.signed, np.array([elem.scale], np.float32),
                                  np.array([elem.zero_point], np.int64), None, False)
    if isinstance(elem, UniformPerAxisType):
        zps = np.array(elem.zero_points, np.int64)
        return WeightQuantization("int", elem.bits, elem.signed, np.array(elem.scales, np.float32), zps, elem.axis,
                                  bool(elem.signed and not zps.any()))
    if isinstance(elem, (PotType, Pot2Type)):
        scheme = "pot" if isinstance(elem, PotType) else "pot2"
        scales, axis = constant.attributes.get(SCALES_ATTR), constant.attributes.get(AXIS_ATTR)
        if not isinstance(scales, DenseArrayBase) or not isinstance(axis, IntegerAttr):
            raise QuantloopError(
                f"{op_label(constant)}: {scheme} weights need their scales in the attributes "
                f"'{SCALES_ATTR}' (array<f32: ...>) and '{AXIS_ATTR}'; run qnn-calibrate"
            )
        values = np.array(scales.get_values(), np.float32)
        return WeightQuantization(scheme, elem.bits, True, values, np.zeros(values.size, np.int64),
                                  axis.value.data, True)
    raise QuantloopError(f"{op_label(constant)}: element type {elem} is not calibrated; run qnn-calibrate")
