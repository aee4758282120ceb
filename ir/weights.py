"""`#qnn.dense<...>`: weights kept as a numpy array, never converted to Python lists.

Text forms: `#qnn.dense<"0x<hex, little-endian>">` for float32 data,
`#qnn.dense<"0x..." : i8>` for other dtypes, and `#qnn.dense<elided>` when the printer elides
large constants (the shape always comes from the constant's result type).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from xdsl.ir import Data
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer

_DTYPE_SPELLING = {
    np.dtype("float32"): "f32",
    np.dtype("float64"): "f64",
    np.dtype("float16"): "f16",
    np.dtype("int8"): "i8",
    np.dtype("int16"): "i16",
    np.dtype("int32"): "i32",
    np.dtype("int64"): "i64",
    np.dtype("uint8"): "u8",
    np.dtype("uint16"): "u16",
    np.dtype("uint32"): "u32",
}
_SPELLING_DTYPE = {v: k for k, v in _DTYPE_SPELLING.items()}


class Weights:
    """An immutable numpy array (or nothing, when elided from printed IR), hashable for xDSL."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None) -> None:
        if array is not None:
            array = np.asarray(array)
            if array.dtype not in _DTYPE_SPELLING:
                raise ValueError(f"#qnn.dense: unsupported dtype {array.dtype}")
            array = array.view()
            array.flags.writeable = False
        self.array = array

    @property
    def elided(self) -> bool:
        return self.array is None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Weights):
            return NotImplemented
        if self.array is None or other.array is None:
            return self.array is None and other.array is None
        return (
            self.array.dtype == other.array.dtype
            and self.array.size == other.array.size
            and np.array_equal(
                self.array.reshape(-1), other.array.reshape(-1), equal_nan=self.array.dtype.kind == "f"
            )
        )

    def __hash__(self) -> int:
        if self.array is None:
            return hash(None)
        return hash((self.array.dtype.str, self.array.size))

    def __repr__(self) -> str:
        if self.array is None:
            return "Weights(elided)"
        return f"Weights({self.array.dtype}, size={self.array.size})"


@irdl_attr_definition
class DenseWeightsAttr(Data[Weights]):
    """Constant data of a `qnn.constant`; `.array` is the numpy array (None when elided)."""

    name = "qnn.dense"

    ELIDED: ClassVar[str] = "elided"

    def __init__(self, array: np.ndarray | Weights | None) -> None:
        super().__init__(array if isinstance(array, Weights) else Weights(array))

    @classmethod
    def elided_attr(cls) -> DenseWeightsAttr:
        return cls(None)

    @property
    def array(self) -> np.ndarray | None:
        return self.data.array

    @property
    def elided(self) -> bool:
        return self.data.elided

    @property
    def size(self) -> int | None:
        return None if self.data.array is None else int(self.data.array.size)

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Weights:
        with parser.in_angle_brackets():
            if parser.parse_optional_keyword(cls.ELIDED) is not None:
                return Weights(None)
            pos = parser.pos
            text = parser.parse_str_literal(' hex data "0x..." or `elided`')
            dtype = np.dtype("float32")
            if parser.parse_optional_punctuation(":") is not None:
                spelling_pos = parser.pos
                spelling = parser.parse_identifier(" element dtype such as f32 or i8")
                if spelling not in _SPELLING_DTYPE:
                    parser.raise_error(
                        f"#qnn.dense: unknown dtype '{spelling}' (known: {', '.join(_SPELLING_DTYPE)})",
                        spelling_pos,
                        parser.pos,
                    )
                dtype = _SPELLING_DTYPE[spelling]
            if not text.startswith("0x"):
                parser.raise_error('#qnn.dense: data must be a hex string starting with "0x"', pos, parser.pos)
            try:
                raw = bytes.fromhex(text[2:])
            except ValueError:
                parser.raise_error("#qnn.dense: data is not valid hex", pos, parser.pos)
            if len(raw) % dtype.itemsize:
                parser.raise_error(
                    f"#qnn.dense: {len(raw)} bytes is not a whole number of {_DTYPE_SPELLING[dtype]} values",
                    pos,
                    parser.pos,
                )
        return Weights(np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False))

    def print_parameter(self, printer: Printer) -> None:
        array = self.data.array
        limit = getattr(printer, "elide_weights_over", None)
        if array is None or (limit is not None and array.size > limit):
            printer.print_string(f"<{self.ELIDED}>")
            return
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        suffix = "" if array.dtype == np.float32 else f" : {_DTYPE_SPELLING[array.dtype]}"
        printer.print_string(f'<"0x{np.ascontiguousarray(little).tobytes().hex()}"{suffix}>')
