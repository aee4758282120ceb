"""One home each for the legal bit-widths, the bits syntax, values per word and the sliding window."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantloop import bits
from quantloop.problem import DIMS, Bits, Problem, values_per_word, window_extent
from quantloop.errors import QuantloopError


def test_every_layer_reads_the_same_legal_widths():
    from quantloop.backend import packing
    from quantloop.ir import quantization, types

    assert types.INT_BITS is bits.LEGAL_BITS and quantization.UNIFORM_BITS is bits.LEGAL_BITS
    assert types.POT_BITS is bits.POT_BITS and quantization.POT2_BITS is bits.POT2_BITS
    assert packing.LEGAL_BITS is bits.LEGAL_BITS


@pytest.mark.parametrize("text, expected", [("w4a8", (4, 8, None)), ("W2A4o16", (2, 4, 16)), (" w8a8o8 ", (8, 8, 8))])
def test_one_parser_for_the_bits_syntax(text, expected):
    from quantloop.passes.assign_bits import parse_bits_spec

    spec = bits.parse_bits(text)
    assert (spec.weights, spec.activations, spec.outputs) == expected
    w, a, o = expected
    assert Bits.parse(text) == Bits(w, a, a if o is None else o)
    assert parse_bits_spec(text) == (w, a, a if o is None else o)


def test_assign_bits_checks_the_output_width():
    from quantloop.passes.assign_bits import parse_bits_spec

    with pytest.raises(QuantloopError, match="17 bits is not a legal bit-width"):
        parse_bits_spec("w4a8o17")


@pytest.mark.parametrize("text", ["int8", "w4", "a8w4", ""])
def test_bad_syntax_is_one_message(text):
    with pytest.raises(QuantloopError, match="expected the form"):
        bits.parse_bits(text)


def test_values_per_word_takes_keywords_only():
    """The two orders (word_bits, bits) and (bits, word_bits) once meant two functions; now neither is positional."""
    from quantloop.backend import packing

    assert values_per_word(word_bits=16, bits=4) == packing.values_per_word(bits=4, word_bits=16) == 4
    with pytest.raises(TypeError):
        values_per_word(16, 4)  # type: ignore[misc]
    with pytest.raises(TypeError):
        packing.values_per_word(4, 16)  # type: ignore[misc]


dims = st.integers(1, 6)


@given(st.tuples(*[dims] * 8), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2))
def test_tile_values_use_the_sliding_window(extent, ws, hs, wd, hd):
    problem = Problem(**dict(zip(DIMS, extent)), Wstride=ws, Hstride=hs, Wdilation=wd, Hdilation=hd)
    n, g, c, m, p, q, r, s = extent
    tiles = problem.tile_values(np.array(extent, dtype=np.int64))
    width, height = window_extent(p, r, ws, wd), window_extent(q, s, hs, hd)
    assert (problem.input_width, problem.input_height) == (width, height)
    assert tiles.tolist() == [g * c * m * r * s, n * g * c * width * height, n * g * m * p * q]
    assert problem.tensor_sizes == dict(zip(("Weights", "Inputs", "Outputs"), tiles.tolist()))
