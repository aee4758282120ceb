"""The legal bit-widths and the bits syntax (`w4a8`, `w4a8o16`): their one home.

Every layer asks here: the IR types (`!qnn.int` / `!qnn.pot` / `!qnn.pot2`), quantization, the
weight packer, the ONNX importer (QONNX bit-widths), `qnn-assign-bits`, the cost model's `Bits`
and the command-line `--bits` flags. Light on purpose (standard library only).

Float values (layers left in f32 for float PEs, e.g. the `fp32` PE type) are the scheme `float` at
`FLOAT_BITS` = 32 bits (`w32a32` in the bits syntax), accumulated at `FLOAT_ACCUMULATOR_BITS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantloop.errors import QuantloopError

LEGAL_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16)
"""Storage widths of uniform integer values (weights, activations, outputs)."""
POT_BITS: tuple[int, ...] = tuple(range(2, 9))
"""Widths of power-of-two weights (sign + exponent code)."""
POT2_BITS: tuple[int, ...] = tuple(range(3, 9))
"""Widths of sum-of-two-powers weights."""
SCHEMES: tuple[str, ...] = ("int", "pot", "pot2")
"""Weight quantization schemes."""
FLOAT_SCHEME = "float"
"""IEEE float32 values, unquantized: what float PEs (the `fp32` PE type) execute."""
FLOAT_BITS: tuple[int, ...] = (32,)
"""The width of float values (float32)."""
FLOAT_ACCUMULATOR_BITS = 32
"""Float PEs accumulate in float32 (not max(o, w + a) as an integer accumulator)."""
VALUE_SCHEMES: tuple[str, ...] = SCHEMES + (FLOAT_SCHEME,)
"""Every scheme a layer's weights may be executed in: the quantization schemes and float."""
FLOAT_BITS_TEXT = "w32a32"
"""The bits syntax of float layers."""
PSUM_MODES: tuple[str, ...] = ("accumulator", "outputs")
"""Width of stored partial sums: the accumulator's, or the Outputs width (`quantloop.problem.Bits.psum`)."""

_SYNTAX = re.compile(r"^w(\d+)a(\d+)(?:o(\d+))?$")


@dataclass(frozen=True)
class BitsSpec:
    """`w<weights>a<activations>[o<outputs>]`; `outputs` None when the `o` part is left out."""

    weights: int
    activations: int
    outputs: int | None = None


def parse_bits(text: str) -> BitsSpec:
    """The one parser of the bits syntax: `w4a8` or `w4a8o16` (case and surrounding blanks ignored).

    Syntax only; `check_width` says whether a width is legal (callers name what they check)."""
    match = _SYNTAX.match(text.strip().lower())
    if match is None:
        raise QuantloopError(f"bits {text!r}: expected the form w<bits>a<bits>[o<bits>], e.g. w4a8 or w4a8o16")
    w, a, o = match.groups()
    return BitsSpec(int(w), int(a), None if o is None else int(o))


def legal_widths(scheme: str) -> tuple[int, ...]:
    """The legal widths of a value stored with `scheme`: uniform (int / uint), pot, pot2 or float."""
    return {"pot": POT_BITS, "pot2": POT2_BITS, FLOAT_SCHEME: FLOAT_BITS}.get(scheme, LEGAL_BITS)


def is_float_bits(spec: BitsSpec) -> bool:
    """`w32a32` (outputs 32 or left out): the bits of float layers."""
    return (spec.weights, spec.activations, spec.outputs or spec.activations) == (FLOAT_BITS[0],) * 3


def legal_text(legal: tuple[int, ...] = LEGAL_BITS) -> str:
    return ", ".join(str(b) for b in legal)


def check_width(bits: int, where: str) -> int:
    """`bits` if it is a legal storage width, else the user error naming `where`."""
    if bits not in LEGAL_BITS:
        raise QuantloopError(f"{where}: {bits} bits is not a legal bit-width (legal: {legal_text()})")
    return bits
