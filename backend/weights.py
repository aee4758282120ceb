"""``weights.bin`` + ``weights.json``: every layer's weight codes bit-packed in the order the mapping streams them.

File layout (all little-endian):

* Layers follow one another in the order of the accel module; each layer's block starts on a DRAM word.
* A layer's weights are split into tiles by its DRAM-level temporal loops over weight dims
  (see :mod:`quantloop.backend.tiling`): tile ``t`` is the ``t``-th tile those loops stream, outer loop
  slowest. Inside a tile the codes keep the model's layout order (row-major over ``(M, C/g, kH, kW)`` for
  a conv restricted to the tile, the stored orientation of a gemm's matrix).
* Packing is PER TILE: every tile starts on a fresh DRAM word and takes ``ceil(tile_size / opw)`` words of
  ``opw = floor(word_bits / bits)`` codes (``backend/packing.py``: code ``i`` of a word at bit ``i·bits``,
  the top ``word_bits mod bits`` bits of a word and the unused slots of a tile's last word are zero).
  So a layer takes ``tile_count · ceil(tile_size / opw)`` words.
* The bias, when the layer has one, follows its weights as int32 codes (then zero bytes up to the next
  word): ``bias_code = round_half_even(bias / bias_scale)`` with ``bias_scale[m] = float32(w_scale[m] ·
  in_scale)``, the accumulator scale of output channel m, clipped to the int32 range; zero point 0.

A layer on float PEs (scheme ``float``) stores its float32 weights' IEEE-754 bit patterns (32 bits per value,
``backend/packing.py``'s ``pack_float32``) in the same tiled layout, with no scales or zero points, and its
bias as float32 values.

``weights.json`` lists per layer the byte offset and length, shape and layout, bits, scheme, signedness,
scales, zero points, quantization axis, word width, codes per word, padding bits per word, tile shape,
tile count, words per tile, tile order (the weight loops) and the full DRAM loop nest the tiles follow,
and the quantization (bits, signedness, scale, zero point) of the layer's input and output activations,
which requantizing the int32 accumulators needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantloop.backend import packing
from quantloop.backend.tiling import TilePlan
from quantloop.bits import FLOAT_BITS, FLOAT_SCHEME
from quantloop.costmodel.weight_memory import packed_weight_words
from quantloop.errors import QuantloopError
from quantloop.ir import quantization as q

FORMAT_VERSION = 1
MANIFEST = "weights.json"
BINARY = "weights.bin"
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class QuantizedWeights:
    """Integer codes of one weight tensor (model layout) and how they map back to floats.

    ``scheme`` int: ``w = (code − zero_point)·scale``; pot / pot2: ``w = decode(code)·scale``
    (:mod:`quantloop.ir.quantization`); float: ``codes`` are the float32 weights themselves (no scales). ``scales``/``zero_points`` have one entry per index of ``axis``
    (or one entry and ``axis`` None for a per-tensor scale).
    """

    codes: np.ndarray
    bits: int
    scheme: str
    signed: bool
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int | None
    narrow_range: bool = False

    @classmethod
    def float32(cls, values: np.ndarray) -> "QuantizedWeights":
        """Unquantized weights of a layer on float PEs."""
        empty = np.zeros(0, dtype=np.float32)
        return cls(np.ascontiguousarray(values, dtype=np.float32), FLOAT_BITS[0], FLOAT_SCHEME, True, empty,
                   empty.astype(np.int64), None)

    def dequantize(self) -> np.ndarray:
        return dequantize_codes(self.codes, self.scheme, self.bits, self.scales, self.zero_points, self.axis)


def dequantize_codes(
    codes: np.ndarray, scheme: str, bits: int, scales: np.ndarray, zero_points: np.ndarray, axis: int | None
) -> np.ndarray:
    """Float32 weights of codes, the same numerics the fake-quant model is built with (float weights are
    their own values)."""
    if scheme == FLOAT_SCHEME:
        return np.asarray(codes, dtype=np.float32)
    scales = np.asarray(scales, dtype=np.float32)
    if axis is None:
        scales = scales.reshape(())
    if scheme == "int":
        zps = np.asarray(zero_points, dtype=np.int64)
        return q.dequantize(codes, scales, zps.reshape(()) if axis is None else zps, axis=axis)
    return q.pot_decode(codes, scales, scheme, bits, axis=axis)


@dataclass(frozen=True)
class WeightLayer:
    """What the weight writer needs of one layer.

    ``canonical_dims``/``canonical_extents`` view the codes (model layout) as problem dims without
    reordering: a conv's ``(G·M, C, S, R)`` tensor as ``G, M, C, S, R``, a gemm's ``(N, K)`` as ``M, C``.
    """

    name: str
    weights: QuantizedWeights
    layout: tuple[str, ...]
    canonical_dims: tuple[str, ...]
    canonical_extents: tuple[int, ...]
    dram_loops: tuple[tuple[str, int], ...]
    bias: np.ndarray | None = None
    bias_scales: np.ndarray | None = None
    activations: dict | None = None

    @property
    def plan(self) -> TilePlan:
        """The canonical view must be a reshape of the codes (same element order)."""
        if int(np.prod(self.canonical_extents)) != self.weights.codes.size:
            raise ValueError(
                f"layer {self.name}: weights of shape {list(self.weights.codes.shape)} are not the canonical "
                f"{dict(zip(self.canonical_dims, self.canonical_extents))}"
            )
        return TilePlan.from_nest(self.canonical_dims, self.canonical_extents, self.dram_loops)


def uniform_codes(
    x: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray,
    bits: int,
    signed: bool,
    axis: int | None,
    narrow_range: bool,
) -> np.ndarray:
    """Exactly ``ir.quantization.quantize`` (float32 divide, round half to even, add zero point, clip), in
    place on one float32 buffer and returned in the narrowest integer dtype: ~8x faster on VGG-16."""
    qmin, qmax = q.qrange(bits, signed, narrow_range)
    x = np.asarray(x, dtype=np.float32)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s = np.asarray(scales, dtype=np.float32).reshape(shape if axis is not None else ())
    buf = np.divide(x, s, dtype=np.float32)
    np.rint(buf, out=buf)
    zps = np.asarray(zero_points)
    if zps.any():
        buf += zps.astype(np.float32).reshape(shape if axis is not None else ())
    np.clip(buf, qmin, qmax, out=buf)
    dtype = np.int8 if qmin >= -128 and qmax <= 127 else np.int16 if qmin >= -(1 << 15) and qmax < (1 << 15) else np.int32
    return buf.astype(dtype)


def quantize_bias(bias: np.ndarray, weight_scales: np.ndarray, input_scale: float,
                  layer: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes, float32 scales) of a bias at the accumulator scale ``w_scale · in_scale``.

    A bias that int32 cannot hold at that scale (or that is not finite) is refused naming `layer`: silently
    saturating it would change the network's outputs."""
    scales = (np.asarray(weight_scales, dtype=np.float32) * np.float32(input_scale)).astype(np.float32)
    scales = np.broadcast_to(scales, np.shape(bias)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    codes = np.rint(np.asarray(bias, dtype=np.float64) / safe.astype(np.float64))
    bad = ~np.isfinite(codes) | (codes < _INT32.min) | (codes > _INT32.max)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise QuantloopError(
            f"layer {layer}: bias value {float(np.ravel(bias)[i]):g} does not fit int32 at the accumulator scale "
            f"{float(np.ravel(safe)[i]):g} (weight scale × input scale); the bias cannot be stored exactly")
    return codes.astype(np.int32), scales


def _word_bytes(word_bits: int) -> int:
    return word_bits // 8


def pack_tiles(codes_canonical: np.ndarray, plan: TilePlan, bits: int, word_bits: int, signed: bool,
               scheme: str = "int") -> bytes:
    """Tile-ordered, per-tile word-aligned packed codes (see the module docstring); float weights (scheme
    float) as their IEEE-754 bit patterns (`packing.pack_float32`)."""
    opw = packing.values_per_word(bits=bits, word_bits=word_bits)
    tiles = plan.to_tiles(codes_canonical)
    words_per_tile = -(-plan.tile_size // opw)
    slots = words_per_tile * opw
    if slots != plan.tile_size:
        padded = np.zeros((plan.tile_count, slots), dtype=tiles.dtype)
        padded[:, : plan.tile_size] = tiles
        tiles = padded
    if scheme == FLOAT_SCHEME:
        return packing.pack_float32(tiles, word_bits)
    return packing.pack(tiles, bits, word_bits, signed)


def unpack_tiles(data: bytes, plan: TilePlan, bits: int, word_bits: int, signed: bool,
                 scheme: str = "int") -> np.ndarray:
    """Inverse of :func:`pack_tiles`: int32 codes (float32 weights for scheme float) in the canonical view."""
    opw = packing.values_per_word(bits=bits, word_bits=word_bits)
    words_per_tile = -(-plan.tile_size // opw)
    slots = words_per_tile * opw
    if scheme == FLOAT_SCHEME:
        flat = packing.unpack_float32(data, plan.tile_count * slots, word_bits)
    else:
        flat = packing.unpack(data, plan.tile_count * slots, bits, word_bits, signed)
    return plan.from_tiles(flat.reshape(plan.tile_count, slots)[:, : plan.tile_size])


def packed_layer_words(plan: TilePlan, bits: int, word_bits: int) -> int:
    """`costmodel.weight_memory.packed_weight_words` for a packable (bits, word) pair: the search's weight
    objective counts with the same rule."""
    packing.values_per_word(bits=bits, word_bits=word_bits)  # rejects what the packer cannot store
    return packed_weight_words(plan.tile_count * plan.tile_size, bits, word_bits, plan.tile_count)


def _check_codes(layer: str, w: QuantizedWeights) -> None:
    if w.scheme == FLOAT_SCHEME:
        if w.codes.dtype != np.float32:
            raise ValueError(f"layer {layer}: float weights must be float32, got {w.codes.dtype}")
        return
    if w.scheme == "int":
        lo, hi = q.qrange(w.bits, w.signed, w.narrow_range)
    else:
        lo, hi = q.qrange(w.bits, True, narrow_range=True)
    codes = w.codes
    if codes.size and (codes.min() < lo or codes.max() > hi):
        raise ValueError(f"layer {layer}: weight codes span [{codes.min()}, {codes.max()}], outside [{lo}, {hi}]")


def write_weights(
    out_dir: Path, layers: Sequence[WeightLayer], word_bits: int, computed: Sequence[dict] = ()
) -> dict:
    """Write ``weights.bin`` and ``weights.json`` into ``out_dir``; return the manifest.

    ``computed`` lists the layers whose weight operand is computed at run time ({name, weight_producer}); they
    have no stored weights and are listed under ``layers_without_stored_weights``.
    """
    out_dir = Path(out_dir)
    with open(out_dir / BINARY, "wb") as binary:
        manifest = _pack_all(binary, layers, word_bits, computed)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def weight_manifest(layers: Sequence[WeightLayer], word_bits: int, computed: Sequence[dict] = ()) -> dict:
    """The manifest `write_weights` would write (sizes and offsets included), writing nothing."""
    return _pack_all(_Discard(), layers, word_bits, computed)


def _pack_all(binary, layers: Sequence[WeightLayer], word_bits: int, computed: Sequence[dict]) -> dict:
    word_bytes = _word_bytes(word_bits)
    entries = []
    offset = 0
    for layer in layers:
        w = layer.weights
        _check_codes(layer.name, w)
        plan = layer.plan
        signed = w.signed or w.scheme != "int"
        data = pack_tiles(w.codes.reshape(plan.extents), plan, w.bits, word_bits, signed, w.scheme)
        binary.write(data)
        entry = _layer_entry(layer, plan, offset, len(data), word_bits, signed)
        offset += len(data)
        if layer.bias is not None:
            is_float = w.scheme == FLOAT_SCHEME
            raw = np.ascontiguousarray(layer.bias, dtype="<f4" if is_float else "<i4").tobytes()
            pad = (-len(raw)) % word_bytes
            binary.write(raw + bytes(pad))
            entry["bias"] = {
                "offset": offset,
                "length": len(raw),
                "count": int(np.size(layer.bias)),
                "dtype": "float32" if is_float else "int32",
            }
            if not is_float:
                entry["bias"].update(
                    scales=[float(s) for s in np.asarray(layer.bias_scales, dtype=np.float32).ravel()], zero_point=0)
            offset += len(raw) + pad
        entries.append(entry)
    manifest = {
        "version": FORMAT_VERSION,
        "binary": BINARY,
        "byte_order": "little",
        "word_bits": word_bits,
        "packing": "per tile: each tile starts on a new word; floor(word_bits/bits) codes per word, code i at "
        "bit i*bits, no code straddles two words, unused bits zero",
        "tile_order": "tiles in the order the DRAM temporal loops over weight dims stream them (outer loop "
        "slowest); loops over dims that do not index Weights re-stream tiles and add none",
        "within_tile_order": "the model's layout order of the tile's elements (row-major over the tensor's axes)",
        "bias": "int32 codes, scale = float32(weight_scale[m] * input_scale), zero point 0; float32 values on "
        "layers of scheme float",
        "float": "layers of scheme float hold float32 values as IEEE-754 bit patterns, 32 bits each, no scales",
        "total_bytes": offset,
        "layers": entries,
        "layers_without_stored_weights": list(computed),
    }
    return manifest


def _layer_entry(layer: WeightLayer, plan: TilePlan, offset: int, length: int, word_bits: int, signed: bool) -> dict:
    w = layer.weights
    return {
        "name": layer.name,
        "offset": offset,
        "length": length,
        "shape": [int(s) for s in w.codes.shape],
        "layout": list(layer.layout),
        "canonical_dims": list(plan.dims),
        "canonical_shape": list(plan.extents),
        "count": int(w.codes.size),
        "bits": w.bits,
        "scheme": w.scheme,
        "signed": signed,
        "narrow_range": w.narrow_range,
        "axis": w.axis,
        "scales": [float(s) for s in np.asarray(w.scales, dtype=np.float32).ravel()],
        "zero_points": [int(z) for z in np.asarray(w.zero_points).ravel()],
        "word_bits": word_bits,
        "values_per_word": packing.values_per_word(bits=w.bits, word_bits=word_bits),
        "padding_bits_per_word": packing.padding_bits_per_word(w.bits, word_bits),
        "tile_shape": list(plan.tile_shape),
        "tile_count": plan.tile_count,
        "tile_words": packing.packed_size_words(plan.tile_size, w.bits, word_bits),
        "tile_order": [[d, f] for d, f in plan.loops],
        "loop_nest": [[d, int(f)] for d, f in layer.dram_loops],
        **({"activations": layer.activations} if layer.activations else {}),
    }


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise QuantloopError(f"{path}: not found; is {out_dir} the output folder of a compile?") from None
    except json.JSONDecodeError as err:
        raise QuantloopError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if manifest.get("version") != FORMAT_VERSION:
        raise QuantloopError(f"{path}: format version {manifest.get('version')!r}, this quantloop reads {FORMAT_VERSION}")
    return manifest


def _entry_codes(entry: dict, blob: memoryview, source: Path) -> np.ndarray:
    end = entry["offset"] + entry["length"]
    if end > len(blob):
        raise QuantloopError(f"{source}: layer {entry['name']} ends at byte {end} but the file has {len(blob)} bytes")
    plan = TilePlan(
        tuple(entry["canonical_dims"]),
        tuple(entry["canonical_shape"]),
        tuple((d, int(f)) for d, f in entry["tile_order"]),
    )
    canonical = unpack_tiles(blob[entry["offset"] : end], plan, entry["bits"], entry["word_bits"], entry["signed"],
                             entry["scheme"])
    return canonical.reshape(entry["shape"])


def unpack(out_dir: str | Path, dequantize: bool = False) -> dict[str, np.ndarray]:
    """Each layer's weights from ``weights.bin`` in the model's own layout (a conv's ``(M, C/g, kH, kW)``).

    Integer codes (int32) by default; with ``dequantize=True`` float32 weights computed with the
    manifest's scales and zero points, the values the fake-quant model ``model.quant.onnx`` holds.
    Layers of scheme float give their float32 weights either way.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    source = out_dir / manifest["binary"]
    blob = memoryview(_read_binary(source, manifest))
    result: dict[str, np.ndarray] = {}
    for entry in manifest["layers"]:
        codes = _entry_codes(entry, blob, source)
        if dequantize:
            axis = entry["axis"]
            result[entry["name"]] = dequantize_codes(
                codes, entry["scheme"], entry["bits"], np.array(entry["scales"], dtype=np.float32),
                np.array(entry["zero_points"]), axis,
            )
        else:
            result[entry["name"]] = codes
    return result


def unpack_biases(out_dir: str | Path, dequantize: bool = False) -> dict[str, np.ndarray]:
    """Each layer's int32 bias codes (or float32 ``code · scale`` with ``dequantize=True``); a float layer's
    float32 bias either way."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    blob = _read_binary(out_dir / manifest["binary"], manifest)
    result: dict[str, np.ndarray] = {}
    for entry in manifest["layers"]:
        bias = entry.get("bias")
        if not bias:
            continue
        if bias["dtype"] == "float32":
            result[entry["name"]] = np.frombuffer(blob, dtype="<f4", count=bias["count"], offset=bias["offset"]).copy()
            continue
        codes = np.frombuffer(blob, dtype="<i4", count=bias["count"], offset=bias["offset"]).astype(np.int32)
        result[entry["name"]] = (
            codes.astype(np.float32) * np.array(bias["scales"], dtype=np.float32) if dequantize else codes
        )
    return result


def _read_binary(path: Path, manifest: dict) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise QuantloopError(f"{path}: not found; weights.json refers to it") from None
    if len(data) != manifest["total_bytes"]:
        raise QuantloopError(f"{path}: has {len(data)} bytes but weights.json describes {manifest['total_bytes']}")
    return data
