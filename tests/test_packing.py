import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantloop.backend.packing import (
    LEGAL_BITS,
    pack,
    packed_size_words,
    padding_bits_per_word,
    unpack,
    values_per_word,
)


def reference_pack(values, bits, word_bits):
    """One Python int per word: the layout written out literally."""
    opw = word_bits // bits
    out = b""
    for start in range(0, len(values), opw):
        word = 0
        for i, v in enumerate(values[start : start + opw]):
            word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
        out += word.to_bytes(word_bits // 8, "little")
    return out


def test_hand_packed_bytes():
    v = np.array([1, 2, 3, -1])
    assert pack(v, 4, 8, signed=True) == bytes([0x21, 0xF3])
    # 3-bit values, two per byte, top 2 bits padding: 1 | 2<<3, 3 | 7<<3
    assert pack(v, 3, 8, signed=True) == bytes([0x11, 0x3B])
    # one 128-bit word: 1 | 2<<3 | 3<<6 | 7<<9 = 0x0ED1
    assert pack(v, 3, 128, signed=True) == bytes([0xD1, 0x0E]) + bytes(14)
    assert pack(np.array([0x1234, 0xFFFF]), 16, 24, signed=False) == bytes([0x34, 0x12, 0, 0xFF, 0xFF, 0])
    assert padding_bits_per_word(3, 8) == 2 and padding_bits_per_word(5, 512) == 2
    assert values_per_word(bits=5, word_bits=512) == 102
    assert packed_size_words(205, 5, 512) == 3


word_widths = st.integers(1, 64).map(lambda k: 8 * k)


@settings(max_examples=300, deadline=None)
@given(
    bits=st.sampled_from(LEGAL_BITS),
    word_bits=word_widths,
    signed=st.booleans(),
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_round_trip(bits, word_bits, signed, shape, seed):
    if bits > word_bits:
        with pytest.raises(ValueError, match="do not fit"):
            pack(np.zeros(shape, np.int32), bits, word_bits, signed)
        return
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = np.random.default_rng(seed).integers(lo, hi + 1, size=shape)
    data = pack(values, bits, word_bits, signed)
    opw = word_bits // bits
    assert len(data) * 8 == packed_size_words(values.size, bits, word_bits) * word_bits
    assert len(data) * 8 == -(-values.size // opw) * word_bits
    assert data == reference_pack(values.ravel().tolist(), bits, word_bits)
    back = unpack(data, values.size, bits, word_bits, signed)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, values.ravel())


@settings(max_examples=50, deadline=None)
@given(bits=st.sampled_from(LEGAL_BITS), word_bits=word_widths, seed=st.integers(0, 2**32 - 1))
def test_padding_bits_are_zero(bits, word_bits, seed):
    if bits > word_bits:
        return
    opw = word_bits // bits
    count = opw * 3 + 1
    values = np.random.default_rng(seed).integers(-(1 << (bits - 1)), 1 << (bits - 1), size=count)
    data = pack(values, bits, word_bits, signed=True)
    words = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").reshape(-1, word_bits)
    assert not words[:, opw * bits :].any()
    assert not words[-1, bits:].any()


def test_large_input_crosses_chunks():
    values = np.random.default_rng(1).integers(-16, 16, size=3_000_001)
    for bits, word_bits in [(5, 512), (5, 64), (8, 24), (16, 64)]:
        data = pack(values, bits, word_bits, signed=True)
        np.testing.assert_array_equal(unpack(data, values.size, bits, word_bits, signed=True), values)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="outside the unsigned 4-bit range"):
        pack(np.array([16]), 4, 8, signed=False)
    with pytest.raises(ValueError, match="outside the signed 4-bit range"):
        pack(np.array([-9]), 4, 8, signed=True)
    with pytest.raises(ValueError, match="9 bits per value"):
        pack(np.array([1]), 9, 64, signed=True)
    with pytest.raises(ValueError, match="word of 12 bits"):
        pack(np.array([1]), 4, 12, signed=True)
    with pytest.raises(ValueError, match="must be integers"):
        pack(np.array([1.0]), 4, 8, signed=True)
    with pytest.raises(ValueError, match="need 16 bytes"):
        unpack(bytes(8), 17, 4, 64, signed=True)
