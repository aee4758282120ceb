"""Bit-packing of integer codes into memory words, the layout ``weights.bin`` uses.

A word of ``word_bits`` holds ``opw = word_bits // bits`` values; a value never straddles two words.
Value ``i`` of a word sits at bit offset ``i * bits`` (little-endian within the word); the top
``padding_bits_per_word(bits, word_bits) = word_bits % bits`` bits of every word are zero, and so are the
unused slots of the last word. Words are stored as ``word_bits / 8`` little-endian bytes. Signed values
are stored in b-bit two's complement.

Packing is vectorised: the codes are laid out as a (words, opw) matrix; when a word splits into
8/16/32/64-bit lanes that each hold whole values, each lane is assembled with a few shifts over all lanes
at once; otherwise every value slot is ORed into the lanes it touches, one slot at a time over all words.
Large inputs are processed in chunks of words to bound memory.

Float32 values (layers on float PEs) are stored as their raw IEEE-754 bit patterns, 32 bits per value in
the same layout (`pack_float32` / `unpack_float32`): one per 32-bit word, two per 64-bit word.
"""

from __future__ import annotations

import numpy as np

from quantloop.bits import FLOAT_BITS, LEGAL_BITS
from quantloop.problem import values_per_word as _values_per_word


_STORED_BITS = LEGAL_BITS + FLOAT_BITS
"""Integer codes of the legal widths, and 32-bit patterns (float32 values, `pack_float32`)."""


def _check(bits: int, word_bits: int) -> int:
    if bits not in _STORED_BITS:
        raise ValueError(f"packing: {bits} bits per value is not supported (legal: {_STORED_BITS})")
    if word_bits < 8 or word_bits > 512 or word_bits % 8:
        raise ValueError(f"packing: a word of {word_bits} bits is not supported (8..512, a multiple of 8)")
    if bits > word_bits:
        raise ValueError(f"packing: {bits}-bit values do not fit in a {word_bits}-bit word")
    return _values_per_word(word_bits=word_bits, bits=bits)


def values_per_word(*, bits: int, word_bits: int) -> int:
    """The cost model's values per word (`quantloop.problem.values_per_word`), for a packable pair."""
    return _check(bits, word_bits)


def padding_bits_per_word(bits: int, word_bits: int) -> int:
    _check(bits, word_bits)
    return word_bits % bits


def packed_size_words(count: int, bits: int, word_bits: int) -> int:
    """Words needed for ``count`` values: ``ceil(count / floor(word_bits / bits))``."""
    opw = _check(bits, word_bits)
    return -(-int(count) // opw)


def _value_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _lane_layout(bits: int, word_bits: int) -> tuple[int, int] | None:
    """(lane_bits, values_per_lane) when every word is a row of equal lanes of whole values, else None.

    Smaller lanes first: fewer bytes to shift. A lane boundary must not cut a value, so either the word is
    one lane or ``bits`` divides the lane.
    """
    for lane_bits in (8, 16, 32, 64):
        if word_bits % lane_bits or lane_bits < bits:
            continue
        if word_bits == lane_bits or lane_bits % bits == 0:
            return lane_bits, lane_bits // bits
    return None


_CHUNK_VALUES = 1 << 20


def _chunk_words(opw: int) -> int:
    return max(1, _CHUNK_VALUES // opw)


def pack(values: np.ndarray, bits: int, word_bits: int, signed: bool) -> bytes:
    """Pack integer codes (any shape, C order) into ``packed_size_words`` little-endian words."""
    opw = _check(bits, word_bits)
    flat = np.asarray(values).ravel()
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"packing: values must be integers, got {flat.dtype}")
    lo, hi = _value_range(bits, signed)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        kind = "signed" if signed else "unsigned"
        raise ValueError(
            f"packing: values span [{flat.min()}, {flat.max()}], outside the {kind} {bits}-bit range [{lo}, {hi}]"
        )
    words = packed_size_words(flat.size, bits, word_bits)
    word_bytes = word_bits // 8
    out = np.empty(words * word_bytes, dtype=np.uint8)
    step = _chunk_words(opw)
    for first in range(0, words, step):
        chunk = flat[first * opw : (first + step) * opw]
        packed = _pack_words(chunk, bits, word_bits, opw)
        out[first * word_bytes : first * word_bytes + packed.size] = packed
    return out.tobytes()


def _pack_words(chunk: np.ndarray, bits: int, word_bits: int, opw: int) -> np.ndarray:
    words = -(-chunk.size // opw)
    codes = np.zeros(words * opw, dtype=np.uint32)
    codes[: chunk.size] = chunk.astype(np.int32).view(np.uint32) & np.uint32((1 << bits) - 1)
    layout = _lane_layout(bits, word_bits)
    if layout is not None:
        lane_bits, per_lane = layout
        dtype = np.dtype(f"<u{lane_bits // 8}")
        lanes = codes.astype(dtype).reshape(-1, per_lane)
        acc = lanes[:, 0].copy()
        for i in range(1, per_lane):
            acc |= lanes[:, i] << dtype.type(i * bits)
        return acc.view(np.uint8)
    return _pack_slots(codes.reshape(words, opw), bits, word_bits)


def _slot_pieces(bits: int, word_bits: int, lane_bits: int):
    """For every value slot of a word: (slot, lane, shift in lane, bits taken, bits already taken)."""
    for slot in range(word_bits // bits):
        done = 0
        while done < bits:
            pos = slot * bits + done
            take = min(lane_bits - pos % lane_bits, bits - done)
            yield slot, pos // lane_bits, pos % lane_bits, take, done
            done += take


def _widest_lane(word_bits: int) -> int:
    return next(lane for lane in (64, 32, 16, 8) if word_bits % lane == 0)


def _pack_slots(grid: np.ndarray, bits: int, word_bits: int) -> np.ndarray:
    """Words whose values may cross lane boundaries: OR every slot's pieces into its lanes."""
    lane_bits = _widest_lane(word_bits)
    dtype = np.dtype(f"<u{lane_bits // 8}")
    rows = np.ascontiguousarray(grid.T)
    lanes = np.zeros((word_bits // lane_bits, grid.shape[0]), dtype=dtype)
    for slot, lane, shift, take, done in _slot_pieces(bits, word_bits, lane_bits):
        piece = ((rows[slot] >> np.uint32(done)) & np.uint32((1 << take) - 1)).astype(dtype)
        lanes[lane] |= piece << dtype.type(shift)
    return np.ascontiguousarray(lanes.T).view(np.uint8).ravel()


def unpack(data: bytes, count: int, bits: int, word_bits: int, signed: bool) -> np.ndarray:
    """The first ``count`` codes of packed ``data`` as int32 (sign-extended when ``signed``)."""
    opw = _check(bits, word_bits)
    words = packed_size_words(count, bits, word_bits)
    word_bytes = word_bits // 8
    need = words * word_bytes
    if len(data) < need:
        raise ValueError(f"unpacking: {count} values of {bits} bits need {need} bytes, got {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8, count=need)
    out = np.empty(count, dtype=np.int32)
    step = _chunk_words(opw)
    for first in range(0, words, step):
        chunk = raw[first * word_bytes : (first + step) * word_bytes]
        codes = _unpack_words(chunk, bits, word_bits, opw)[: count - first * opw]
        if signed:
            codes = (codes.view(np.uint32) << np.uint32(32 - bits)).view(np.int32) >> (32 - bits)
        out[first * opw : first * opw + codes.size] = codes
    return out


def _unpack_words(raw: np.ndarray, bits: int, word_bits: int, opw: int) -> np.ndarray:
    words = raw.size * 8 // word_bits
    layout = _lane_layout(bits, word_bits)
    if layout is not None:
        lane_bits, per_lane = layout
        dtype = np.dtype(f"<u{lane_bits // 8}")
        lanes = raw.view(dtype)
        mask = dtype.type((1 << bits) - 1)
        codes = np.empty((lanes.size, per_lane), dtype=np.int32)
        for i in range(per_lane):
            codes[:, i] = (lanes >> dtype.type(i * bits)) & mask
        return codes.ravel()
    lane_bits = _widest_lane(word_bits)
    lanes = np.ascontiguousarray(raw.view(f"<u{lane_bits // 8}").reshape(words, word_bits // lane_bits).T)
    rows = np.zeros((opw, words), dtype=np.uint32)
    for slot, lane, shift, take, done in _slot_pieces(bits, word_bits, lane_bits):
        piece = (lanes[lane] >> shift) & ((1 << take) - 1)
        rows[slot] |= piece.astype(np.uint32) << np.uint32(done)
    return rows.T.ravel().view(np.int32)


def pack_float32(values: np.ndarray, word_bits: int) -> bytes:
    """Float32 values (any shape, C order) as their IEEE-754 bit patterns, 32 bits per value, packed as `pack`
    packs 32-bit codes."""
    patterns = np.ascontiguousarray(values, dtype="<f4").ravel().view(np.int32)
    return pack(patterns, FLOAT_BITS[0], word_bits, signed=True)


def unpack_float32(data: bytes, count: int, word_bits: int) -> np.ndarray:
    """Inverse of `pack_float32`: the first ``count`` float32 values, bit for bit."""
    return unpack(data, count, FLOAT_BITS[0], word_bits, signed=True).view(np.float32)
