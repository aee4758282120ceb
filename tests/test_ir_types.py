"""qnn element types: text round trips, legality checks, helpers."""

from __future__ import annotations

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects.builtin import TensorType, f32, i8
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from quantloop.ir.qnn import (
    IntType,
    Pot2Type,
    PotType,
    QnnPrinter,
    UniformPerAxisType,
    UniformType,
    element_type,
    float_text,
    is_quantized,
    is_signed,
    make_context,
    storage_bits,
    with_element,
)
from quantloop.ir.types import INT_BITS, POT2_BITS, POT_BITS

CTX = make_context()


def text_of(attr, alias_per_axis: bool = False) -> str:
    stream = io.StringIO()
    QnnPrinter(stream=stream, alias_per_axis=alias_per_axis).print_attribute(attr)
    return stream.getvalue()


def parse_type(text: str):
    return Parser(CTX, text).parse_type()


def round_trip(attr) -> None:
    text = text_of(attr)
    parsed = parse_type(text)
    assert parsed == attr
    assert text_of(parsed) == text


def test_spellings_follow_mlir_quant():
    assert text_of(IntType(4, True)) == "!qnn.int<bits = 4, signed = true>"
    assert text_of(UniformType(4, True, 0.0123, 0)) == "!qnn.uniform<i4:f32, 0.0123:0>"
    assert text_of(UniformType(8, False, 0.5, 128)) == "!qnn.uniform<u8:f32, 0.5:128>"
    assert text_of(UniformPerAxisType(8, True, 0, [0.1, 0.2], [0, 0])) == "!qnn.uniform<i8:f32:0, {0.1:0, 0.2:0}>"
    assert text_of(PotType(4)) == "!qnn.pot<bits = 4>"
    assert text_of(Pot2Type(8)) == "!qnn.pot2<bits = 8>"


def test_per_axis_parses_from_uniform_spelling_and_own_name():
    t = parse_type("!qnn.uniform<i8:f32:1, {0.25:-3, 1.0e-07:2}>")
    assert isinstance(t, UniformPerAxisType)
    assert (t.axis, t.scales, t.zero_points) == (1, (0.25, 1e-07), (-3, 2))
    assert parse_type("!qnn.uniform_per_axis<i8:f32:1, {0.25:-3, 1.0e-07:2}>") == t
    per_tensor = parse_type("!qnn.uniform<u4:f32, 2.5e-05:3>")
    assert isinstance(per_tensor, UniformType) and not per_tensor.signed


@pytest.mark.parametrize("value", [0.0123, 1e-05, 1e-300, 3.0, 123456789.123, 5e-324, 2.0**-20, 0.1 + 0.2])
def test_float_text_is_exact_and_lexes_as_float(value):
    text = float_text(value)
    assert float(text) == value
    assert "." in text.split("e")[0]


finite_scales = st.floats(min_value=5e-324, max_value=1e30, allow_nan=False, allow_infinity=False)


@st.composite
def signed_bits(draw, legal=INT_BITS):
    return draw(st.sampled_from(sorted(legal))), draw(st.booleans())


def zero_point(draw, bits, signed):
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return draw(st.integers(low, high))


@st.composite
def uniform_types(draw):
    bits, signed = draw(signed_bits())
    return UniformType(bits, signed, draw(finite_scales), zero_point(draw, bits, signed))


@st.composite
def per_axis_types(draw):
    bits, signed = draw(signed_bits())
    n = draw(st.integers(1, 12))
    scales = draw(st.lists(finite_scales, min_size=n, max_size=n))
    zps = [zero_point(draw, bits, signed) for _ in range(n)]
    return UniformPerAxisType(bits, signed, draw(st.integers(0, 5)), scales, zps)


@given(st.builds(IntType, st.sampled_from(sorted(INT_BITS)), st.booleans()))
def test_int_round_trip(t):
    round_trip(t)


@given(uniform_types())
@settings(max_examples=200)
def test_uniform_round_trip(t):
    round_trip(t)


@given(per_axis_types())
@settings(max_examples=100)
def test_per_axis_round_trip(t):
    round_trip(t)


@given(st.builds(PotType, st.sampled_from(sorted(POT_BITS))))
def test_pot_round_trip(t):
    round_trip(t)


@given(st.builds(Pot2Type, st.sampled_from(sorted(POT2_BITS))))
def test_pot2_round_trip(t):
    round_trip(t)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: IntType(9, True), "!qnn.int: bit-width 9"),
        (lambda: IntType(1, False), "!qnn.int: bit-width 1"),
        (lambda: IntType(32, True), "!qnn.int: bit-width 32"),
        (lambda: UniformType(12, True, 0.1, 0), "!qnn.uniform: bit-width 12"),
        (lambda: UniformType(8, True, 0.0, 0), "scale 0.0 must be a positive"),
        (lambda: UniformType(8, True, math.inf, 0), "scale inf"),
        (lambda: UniformType(4, False, 0.1, 16), "zero point 16 is outside the range 0..15 of u4"),
        (lambda: UniformType(4, True, 0.1, -9), "zero point -9 is outside the range -8..7 of i4"),
        (lambda: UniformPerAxisType(8, True, 0, [0.1], [0, 0]), "1 scales but 2 zero points"),
        (lambda: UniformPerAxisType(8, True, 0, [], []), "at least one scale"),
        (lambda: UniformPerAxisType(8, True, -1, [0.1], [0]), "axis -1"),
        (lambda: UniformPerAxisType(8, True, 0, [0.1, -0.5], [0, 0]), "scale -0.5"),
        (lambda: PotType(9), "!qnn.pot: bit-width 9"),
        (lambda: PotType(16), "!qnn.pot: bit-width 16"),
        (lambda: Pot2Type(2), "!qnn.pot2: bit-width 2"),
    ],
)
def test_illegal_types_raise_with_a_sentence(make, needle):
    with pytest.raises(VerifyException, match=None) as err:
        make()
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "!qnn.int<bits = 10, signed = true>",
        "!qnn.uniform<i8:f32, 0.1:200>",
        "!qnn.uniform<x8:f32, 0.1:0>",
        "!qnn.uniform<i8:f16, 0.1:0>",
        "!qnn.pot<bits = 1>",
        "!qnn.uniform_per_axis<i8:f32, 0.1:0>",
    ],
)
def test_illegal_type_text_is_a_parse_error(text):
    with pytest.raises(ParseError):
        parse_type(text)


def test_helpers():
    t = TensorType(UniformType(4, False, 0.5, 0), [2, 3])
    assert element_type(t) == UniformType(4, False, 0.5, 0)
    assert storage_bits(t) == 4 and not is_signed(t) and is_quantized(t)
    assert storage_bits(TensorType(f32, [1])) is None and is_signed(f32) and not is_quantized(f32)
    assert storage_bits(PotType(5)) == 5 and is_signed(Pot2Type(8))
    assert storage_bits(i8) == 8 and not is_quantized(i8)
    retyped = with_element(t, IntType(8, True))
    assert retyped == TensorType(IntType(8, True), [2, 3])
