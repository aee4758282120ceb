"""Quantized element types of the `qnn` dialect, spelled like MLIR's `quant` dialect.

Legal storage widths:
- `!qnn.int`, `!qnn.uniform` (per tensor and per axis): 2..8 and 16 bits.
- `!qnn.pot` (sign + exponent, a multiply is a shift): 2..8 bits.
- `!qnn.pot2` (sign + two exponents, a multiply is two shifts and an add): 3..8 bits
  ((bits - 1) // 2 bits per exponent field; see `quantloop.ir.quantization`).
"""

from __future__ import annotations

from typing import ClassVar

import math
from collections.abc import Sequence

import numpy as np

from xdsl.dialects.builtin import (
    ArrayAttr,
    FloatData,
    IntAttr,
    TensorType,
    AnyFloat,
    IntegerType,
    Signedness,
)
from xdsl.ir import Attribute, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from quantloop.bits import LEGAL_BITS, POT2_BITS, POT_BITS

INT_BITS = LEGAL_BITS  # the legal widths live in quantloop.bits


def float_text(value: float) -> str:
    """Shortest text that parses back to exactly `value` and that the MLIR lexer reads as a float."""
    text = repr(float(value))
    mantissa, exp_mark, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + exp_mark + exponent


def _parse_bits_field(parser: AttrParser) -> int:
    """`bits = <b>`, the first parameter of `!qnn.int`, `!qnn.pot` and `!qnn.pot2`."""
    parser.parse_keyword("bits")
    parser.parse_punctuation("=")
    return parser.parse_integer(allow_boolean=False, allow_negative=False)


def _check_bits(type_name: str, bits: int, legal: tuple[int, ...]) -> None:
    if bits not in legal:
        raise VerifyException(
            f"{type_name}: bit-width {bits} is not a legal storage width "
            f"(legal: {', '.join(str(b) for b in sorted(legal))})"
        )


def _storage_spelling(bits: int, signed: bool) -> str:
    return f"{'i' if signed else 'u'}{bits}"


def _parse_storage_spelling(parser: AttrParser) -> tuple[int, bool]:
    pos = parser.pos
    word = parser.parse_identifier(" storage type such as i8 or u4")
    if len(word) < 2 or word[0] not in "iu" or not word[1:].isdigit():
        parser.raise_error(f"expected a storage type such as i8 or u4, got '{word}'", pos, parser.pos)
    return int(word[1:]), word[0] == "i"


def _parse_float(parser: AttrParser) -> float:
    value = parser.parse_number()
    return float(value)


def _verified(cls: type[ParametrizedAttribute], parser: AttrParser, start: int, params: list[Attribute]) -> list[Attribute]:
    """Verify parsed parameters now, so a bad value is reported at its line in the source."""
    try:
        cls.new(params)
    except VerifyException as err:
        parser.raise_error(str(err), start, parser.pos)
    return params


def _parse_bool_keyword(parser: AttrParser) -> bool:
    if parser.parse_optional_keyword("true") is not None:
        return True
    parser.parse_keyword("false", " true or false")
    return False


class _IntegerStorage:
    """`bits` and `signed` of the types whose storage is an iN or uN integer (parameters bits_attr, signed_attr)."""

    __slots__ = ()

    @property
    def bits(self) -> int:
        return self.bits_attr.data  # type: ignore[attr-defined]

    @property
    def signed(self) -> bool:
        return bool(self.signed_attr.data)  # type: ignore[attr-defined]


@irdl_attr_definition
class IntType(_IntegerStorage, ParametrizedAttribute, TypeAttribute):
    """A bit-width chosen but not yet calibrated: `!qnn.int<bits = 4, signed = true>`."""

    name = "qnn.int"

    bits_attr: IntAttr
    signed_attr: IntAttr

    def __init__(self, bits: int, signed: bool) -> None:
        super().__init__(IntAttr(bits), IntAttr(int(bool(signed))))

    def verify(self) -> None:
        _check_bits("!qnn.int", self.bits, INT_BITS)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<bits = {self.bits}, signed = {'true' if self.signed else 'false'}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        start = parser.pos
        with parser.in_angle_brackets():
            bits = _parse_bits_field(parser)
            parser.parse_punctuation(",")
            parser.parse_keyword("signed")
            parser.parse_punctuation("=")
            signed = _parse_bool_keyword(parser)
        return _verified(cls, parser, start, [IntAttr(bits), IntAttr(int(signed))])


def _check_zero_point(type_name: str, bits: int, signed: bool, zero_point: int) -> None:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= zero_point <= high:
        raise VerifyException(
            f"{type_name}: zero point {zero_point} is outside the range {low}..{high} "
            f"of {_storage_spelling(bits, signed)}"
        )


def _check_scale(type_name: str, scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise VerifyException(f"{type_name}: scale {scale!r} must be a positive finite number")


@irdl_attr_definition
class UniformType(_IntegerStorage, ParametrizedAttribute, TypeAttribute):
    """Per-tensor affine quantization: `!qnn.uniform<i4:f32, 0.0123:0>` (unsigned: `u8`)."""

    name = "qnn.uniform"

    bits_attr: IntAttr
    signed_attr: IntAttr
    scale_attr: FloatData
    zero_point_attr: IntAttr

    def __init__(self, bits: int, signed: bool, scale: float, zero_point: int) -> None:
        super().__init__(IntAttr(bits), IntAttr(int(bool(signed))), FloatData(float(scale)), IntAttr(zero_point))

    @property
    def scale(self) -> float:
        return self.scale_attr.data

    @property
    def zero_point(self) -> int:
        return self.zero_point_attr.data

    def verify(self) -> None:
        _check_bits("!qnn.uniform", self.bits, INT_BITS)
        _check_scale("!qnn.uniform", self.scale)
        _check_zero_point("!qnn.uniform", self.bits, self.signed, self.zero_point)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(
            f"<{_storage_spelling(self.bits, self.signed)}:f32, {float_text(self.scale)}:{self.zero_point}>"
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        """Parses both spellings; a per-axis one yields 5 parameters, which `new` routes."""
        start = parser.pos
        params = _parse_uniform(parser)
        return _verified(cls, parser, start, params)

    @classmethod
    def new(cls, params: Sequence[Attribute]):  # type: ignore[override]
        if cls is UniformType and len(params) == 5:
            return UniformPerAxisType.new(params)
        return super().new(params)


@irdl_attr_definition
class UniformPerAxisType(_IntegerStorage, ParametrizedAttribute, TypeAttribute):
    """Per-axis affine quantization: `!qnn.uniform<i8:f32:0, {0.1:0, 0.2:0}>`.

    Shares the mnemonic spelling of `!qnn.uniform`; the parser of `!qnn.uniform` tells the two
    apart by the `:axis` after the expressed type, as MLIR's `quant` dialect does, and prints it
    under that name.
    """

    name = "qnn.uniform_per_axis"

    bits_attr: IntAttr
    signed_attr: IntAttr
    axis_attr: IntAttr
    scales_attr: ArrayAttr[FloatData]
    zero_points_attr: ArrayAttr[IntAttr]

    def __init__(
        self, bits: int, signed: bool, axis: int, scales: Sequence[float], zero_points: Sequence[int]
    ) -> None:
        super().__init__(
            IntAttr(bits),
            IntAttr(int(bool(signed))),
            IntAttr(axis),
            ArrayAttr([FloatData(float(s)) for s in scales]),
            ArrayAttr([IntAttr(int(z)) for z in zero_points]),
        )

    @property
    def axis(self) -> int:
        return self.axis_attr.data

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(s.data for s in self.scales_attr.data)

    @property
    def zero_points(self) -> tuple[int, ...]:
        return tuple(z.data for z in self.zero_points_attr.data)

    def verify(self) -> None:
        type_name = "!qnn.uniform (per axis)"
        _check_bits(type_name, self.bits, INT_BITS)
        if self.axis < 0:
            raise VerifyException(f"{type_name}: axis {self.axis} must be non-negative")
        if not self.scales:
            raise VerifyException(f"{type_name}: needs at least one scale")
        if len(self.scales) != len(self.zero_points):
            raise VerifyException(
                f"{type_name}: {len(self.scales)} scales but {len(self.zero_points)} zero points"
            )
        for scale in self.scales:
            _check_scale(type_name, scale)
        for zero_point in self.zero_points:
            _check_zero_point(type_name, self.bits, self.signed, zero_point)

    def print_parameters(self, printer: Printer) -> None:
        from quantloop.ir.syntax import print_wrapped

        printer.print_string(f"<{_storage_spelling(self.bits, self.signed)}:f32:{self.axis}, {{")
        print_wrapped(printer, [f"{float_text(s)}:{z}" for s, z in zip(self.scales, self.zero_points)])
        printer.print_string("}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        """Also accepted under its own name, `!qnn.uniform_per_axis<...>`."""
        start = parser.pos
        params = _parse_uniform(parser)
        if len(params) != 5:
            parser.raise_error("!qnn.uniform_per_axis needs an axis: <i8:f32:AXIS, {scale:zp, ...}>", start, parser.pos)
        return _verified(cls, parser, start, params)


def container(bits: int, signed: bool) -> np.dtype:
    """The numpy dtype that holds b-bit codes in a `#qnn.dense` (sub-byte codes live in 8-bit ints)."""
    if bits <= 8:
        return np.dtype(np.int8 if signed else np.uint8)
    return np.dtype(np.int16 if signed else np.uint16)


def quant_params(elem: Attribute) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(scale as float32, zero point as int64, axis or None) of a uniform element type."""
    if isinstance(elem, UniformType):
        return np.float32(elem.scale), np.int64(elem.zero_point), None
    if isinstance(elem, UniformPerAxisType):
        return np.asarray(elem.scales, np.float32), np.asarray(elem.zero_points, np.int64), elem.axis
    raise TypeError(f"{elem} is not a uniform quantized type")


def _parse_uniform(parser: AttrParser) -> list[Attribute]:
    with parser.in_angle_brackets():
        bits, signed = _parse_storage_spelling(parser)
        parser.parse_punctuation(":")
        parser.parse_keyword("f32", " expressed type f32")
        if parser.parse_optional_punctuation(":") is not None:
            axis = parser.parse_integer(allow_boolean=False, allow_negative=False)
            parser.parse_punctuation(",")

            def pair() -> tuple[float, int]:
                scale = _parse_float(parser)
                parser.parse_punctuation(":")
                return scale, parser.parse_integer(allow_boolean=False)

            pairs = parser.parse_comma_separated_list(parser.Delimiter.BRACES, pair)
            return [
                IntAttr(bits),
                IntAttr(int(signed)),
                IntAttr(axis),
                ArrayAttr([FloatData(s) for s, _ in pairs]),
                ArrayAttr([IntAttr(z) for _, z in pairs]),
            ]
        parser.parse_punctuation(",")
        scale = _parse_float(parser)
        parser.parse_punctuation(":")
        zero_point = parser.parse_integer(allow_boolean=False)
    return [IntAttr(bits), IntAttr(int(signed)), FloatData(scale), IntAttr(zero_point)]


class _PowerOfTwoType:
    """What `!qnn.pot` and `!qnn.pot2` share: one parameter, `<bits = b>`, always signed."""

    bits_attr: IntAttr
    LEGAL_BITS: ClassVar[tuple[int, ...]]

    def __init__(self, bits: int) -> None:
        super().__init__(IntAttr(bits))  # type: ignore[call-arg]

    @property
    def bits(self) -> int:
        return self.bits_attr.data

    @property
    def signed(self) -> bool:
        return True

    def verify(self) -> None:
        _check_bits(f"!{self.name}", self.bits, self.LEGAL_BITS)  # type: ignore[attr-defined]

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<bits = {self.bits}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        start = parser.pos
        with parser.in_angle_brackets():
            bits = _parse_bits_field(parser)
        return _verified(cls, parser, start, [IntAttr(bits)])


@irdl_attr_definition
class PotType(_PowerOfTwoType, ParametrizedAttribute, TypeAttribute):
    """Power-of-two weights, sign + exponent: `!qnn.pot<bits = 4>` (multiply = shift)."""

    name = "qnn.pot"
    LEGAL_BITS = POT_BITS

    bits_attr: IntAttr


@irdl_attr_definition
class Pot2Type(_PowerOfTwoType, ParametrizedAttribute, TypeAttribute):
    """Sum of two powers of two: `!qnn.pot2<bits = 8>` (multiply = two shifts and an add)."""

    name = "qnn.pot2"
    LEGAL_BITS = POT2_BITS

    bits_attr: IntAttr


QuantizedType = IntType | UniformType | UniformPerAxisType | PotType | Pot2Type
QUANTIZED_TYPES = (IntType, UniformType, UniformPerAxisType, PotType, Pot2Type)


def element_type(value_or_type: SSAValue | Attribute) -> Attribute:
    """The element type of a tensor value or tensor type; other types are returned as they are."""
    t = value_or_type.type if isinstance(value_or_type, SSAValue) else value_or_type
    if isinstance(t, TensorType):
        return t.element_type
    return t


def storage_bits(t: SSAValue | Attribute) -> int | None:
    """Bits per stored value; None for floats."""
    elem = element_type(t)
    if isinstance(elem, QUANTIZED_TYPES):
        return elem.bits
    if isinstance(elem, IntegerType):
        return elem.width.data
    return None


def is_signed(t: SSAValue | Attribute) -> bool:
    elem = element_type(t)
    if isinstance(elem, QUANTIZED_TYPES):
        return elem.signed
    if isinstance(elem, IntegerType):
        return elem.signedness.data != Signedness.UNSIGNED
    return True


def is_quantized(t: SSAValue | Attribute) -> bool:
    return isinstance(element_type(t), QUANTIZED_TYPES)


def is_float(t: SSAValue | Attribute) -> bool:
    return isinstance(element_type(t), AnyFloat)


def with_element(tensor_type: TensorType, elem: Attribute) -> TensorType:
    """`tensor_type` with its element type replaced by `elem`."""
    return TensorType(elem, tensor_type.get_shape())
