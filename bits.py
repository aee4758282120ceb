"""The legal bit-widths and the bits syntax (`w4a8`, `w4a8o16`): their one home.

Every layer asks here: the IR types (`!qnn.int` / `!qnn.pot` / `!qnn.pot2`), quantization, the
weight packer, the ONNX importer (QONNX bit-widths), `qnn-assign-bits`, the cost model's `Bits`
and the command-line `--bits` flags. Light on purpose (standard library only).
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
    """The legal widths of a value stored with `scheme`: uniform (int / uint), pot or pot2."""
    return {"pot": POT_BITS, "pot2": POT2_BITS}.get(scheme, LEGAL_BITS)


def legal_text(legal: tuple[int, ...] = LEGAL_BITS) -> str:
    return ", ".join(str(b) for b in legal)


def check_width(bits: int, where: str) -> int:
    """`bits` if it is a legal storage width, else the user error naming `where`."""
    if bits not in LEGAL_BITS:
        raise QuantloopError(f"{where}: {bits} bits is not a legal bit-width (legal: {legal_text()})")
    return bits
