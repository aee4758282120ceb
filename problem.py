"""One convolution layer in Timeloop's 8-dim form, and the bit-widths of its three data spaces.

Dims are always in the fixed order `DIMS` = N, G, C, M, P, Q, R, S (arrays use this order).
Timeloop pairing (as in the exercises' problem shape): P pairs with R and Wstride/Wdilation,
Q pairs with S and Hstride/Hdilation, so an input tile of p × r spans
`(p − 1)·Wstride + (r − 1)·Wdilation + 1` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantloop.bits import FLOAT_ACCUMULATOR_BITS, FLOAT_SCHEME, PSUM_MODES, VALUE_SCHEMES, is_float_bits, parse_bits
from quantloop.errors import QuantloopError

DIMS: tuple[str, ...] = ("N", "G", "C", "M", "P", "Q", "R", "S")
DIM_INDEX: dict[str, int] = {d: i for i, d in enumerate(DIMS)}
DATASPACES: tuple[str, ...] = ("Weights", "Inputs", "Outputs")

#: Which dims index which data space. Inputs are indexed by P, Q, R, S through the sliding window.
DATASPACE_DIMS: dict[str, frozenset[str]] = {
    "Weights": frozenset("GCMRS"),
    "Inputs": frozenset("NGCPQRS"),
    "Outputs": frozenset("NGMPQ"),
}

#: bool[3, 8]: RELEVANT[ds, dim] is True when `dim` indexes data space `ds`.
RELEVANT = np.array([[d in DATASPACE_DIMS[ds] for d in DIMS] for ds in DATASPACES], dtype=bool)
#: The dims that index a data space only through the sliding window (a tile's extent is not their product).
_WINDOWED: dict[str, frozenset[str]] = {"Weights": frozenset(), "Inputs": frozenset("PQRS"), "Outputs": frozenset()}


def window_extent(outputs, taps, stride, dilation):
    """Input extent read by `outputs` consecutive outputs of a `taps`-tap window:
    (outputs − 1)·stride + (taps − 1)·dilation + 1."""
    return (outputs - 1) * stride + (taps - 1) * dilation + 1

#: The largest dim or stride a layer may have, and the largest MAC count / tensor size: far beyond any real
#: CNN layer, small enough that every tile, access count and energy stays exact in int64 / float64 and that
#: factorising a dim is instant.
MAX_DIM = (1 << 31) - 1
MAX_VOLUME = 1 << 50


#: The coefficients of the sliding window (P with Wstride/Wdilation, Q with Hstride/Hdilation).
STRIDES: tuple[str, ...] = ("Wstride", "Hstride", "Wdilation", "Hdilation")
#: Every field of a problem's shape: the 8 dims, then the strides and dilations.
SHAPE_KEYS: tuple[str, ...] = DIMS + STRIDES


def non_positive_field(shape: "ProblemShape") -> str | None:
    """The one positivity rule of a shape: a message naming the first field that is not a positive integer."""
    for key in SHAPE_KEYS:
        value = getattr(shape, key)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            return f"{key} must be a positive integer, got {value!r}"
    return None


def _shape_fields(cls: type) -> type:
    """Declare one int field per `SHAPE_KEYS` entry (default 1) ahead of `cls`'s own fields, and make `cls` a
    frozen dataclass: the list of a problem's fields is written once, in `SHAPE_KEYS`."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    cls.__annotations__ = {**{key: "int" for key in SHAPE_KEYS}, **own}
    for key in SHAPE_KEYS:
        setattr(cls, key, 1)
    return dataclass(frozen=True)(cls)


@_shape_fields
class ProblemShape:
    """The 8 dims and the strides / dilations of a conv / depthwise conv / matmul layer, unchecked.

    One int field per `SHAPE_KEYS` entry (N, G, C, M, P, Q, R, S, Wstride, Hstride, Wdilation, Hdilation),
    each 1 by default. The one data model of a problem: the IR's `#accel.problem` holds a `ProblemShape`
    (it checks positivity in its verifier and prints any size); `Problem` adds a name and the cost model's bounds.
    """

    @property
    def shape_fields(self) -> dict[str, int]:
        """Dims, strides and dilations by name (`SHAPE_KEYS` order)."""
        return {k: getattr(self, k) for k in SHAPE_KEYS}

    @property
    def shape(self) -> "ProblemShape":
        """The bare shape (drops a `Problem`'s name)."""
        return ProblemShape(**self.shape_fields)

    @property
    def dims(self) -> dict[str, int]:
        return {d: int(getattr(self, d)) for d in DIMS}

    @property
    def dim_array(self) -> np.ndarray:
        """int64[8] in `DIMS` order."""
        return np.array([getattr(self, d) for d in DIMS], dtype=np.int64)

    @property
    def macs(self) -> int:
        """Exact (Python integers: never wraps around like an int64 product)."""
        return math.prod(int(getattr(self, d)) for d in DIMS)

    def input_window(self, p, q, r, s):
        """(width, height) of the input tile that p × q outputs read through r × s kernel taps.

        Ints, numpy arrays or CP-SAT expressions: the one place the sliding-window pairing
        (P with R, Wstride, Wdilation; Q with S, Hstride, Hdilation) is written."""
        return window_extent(p, r, self.Wstride, self.Wdilation), window_extent(q, s, self.Hstride, self.Hdilation)

    def dataspace_values(self, ext: dict[str, Any]) -> dict[str, Any]:
        """Values of each data space in a tile of per-dim extents `ext` (ints or numpy arrays by dim name):
        the product of the dims that index it (`DATASPACE_DIMS`), Inputs' P, Q, R, S through the sliding window."""
        w, h = self.input_window(ext["P"], ext["Q"], ext["R"], ext["S"])
        window = {"Weights": 1, "Inputs": w * h, "Outputs": 1}
        return {ds: math.prod((ext[d] for d in DIMS if d in DATASPACE_DIMS[ds] - _WINDOWED[ds]), start=window[ds])
                for ds in DATASPACES}

    def tile_values(self, ext: np.ndarray) -> np.ndarray:
        """Values of [Weights, Inputs, Outputs] in a tile of per-dim extents `ext[..., 8]` (`DIMS` order)."""
        ext = np.asarray(ext)
        values = self.dataspace_values({d: ext[..., DIM_INDEX[d]] for d in DIMS})
        return np.stack([values[ds] for ds in DATASPACES], axis=-1)

    @property
    def input_width(self) -> int:
        """Input extent paired with P and R."""
        return self.input_window(self.P, self.Q, self.R, self.S)[0]

    @property
    def input_height(self) -> int:
        """Input extent paired with Q and S."""
        return self.input_window(self.P, self.Q, self.R, self.S)[1]

    @property
    def tensor_sizes(self) -> dict[str, int]:
        """Number of values (not words) of each data space (exact Python integers)."""
        return self.dataspace_values(self.dims)


@dataclass(frozen=True)
class Problem(ProblemShape):
    """A conv / depthwise conv / matmul layer as Timeloop's conv problem (N=batch, G=groups).

    Depthwise conv: G = channels, C = M = 1. A fully connected layer: P = Q = R = S = 1.
    """

    name: str = ""

    def __post_init__(self) -> None:
        bad = non_positive_field(self)
        if bad:
            raise QuantloopError(f"problem {self.name or '<unnamed>'}: {bad}")
        for key in SHAPE_KEYS:
            value = getattr(self, key)
            object.__setattr__(self, key, int(value))  # Python ints: the size checks below cannot wrap around
            if value > MAX_DIM:
                raise QuantloopError(f"problem {self.name or '<unnamed>'}: {key} = {value} exceeds the largest "
                                     f"supported dimension {MAX_DIM}")
        volumes = {"MACs": self.macs, **self.tensor_sizes}
        for what, volume in volumes.items():
            if volume > MAX_VOLUME:
                raise QuantloopError(f"problem {self.name or '<unnamed>'}: {what} = {volume} exceeds the supported "
                                     f"limit of 2^50; the layer is too large to cost")

    @classmethod
    def of(cls, shape: ProblemShape, name: str = "") -> "Problem":
        """The checked cost-model problem of `shape` (the one conversion from the IR's payload)."""
        return cls(**shape.shape_fields, name=name)

    def with_dims(self, **dims: int) -> "Problem":
        return Problem(**{**self.shape_fields, "name": self.name, **dims})


@dataclass(frozen=True)
class Bits:
    """Bits per value of each data space, and the weight scheme.

    `None` for a data space means stock Timeloop: one value per storage word at every level
    (whatever the word width). An integer b packs ⌊W / b⌋ values into a W-bit word at every
    storage level (quantization fork semantics; a value never straddles two words).
    `scheme` is the weight quantization: "int" (uniform), "pot" (sign + power of two), "pot2"
    (sum of two powers of two), "float" (IEEE float32 at 32 bits, for float PEs).

    `psum` is how wide partial sums (Outputs below the last reduction) are stored: "accumulator"
    (default, as real accumulators hold them: a level's declared `partial_sum_bits`, else
    `accumulator_bits` = max(o, w + a)) or "outputs" (at the Outputs width, the quantization
    fork's convention, kept to reproduce its runs). `PSUM_MODES` lists them.
    """

    weights: int | None = None
    inputs: int | None = None
    outputs: int | None = None
    scheme: str = "int"
    psum: str = "accumulator"

    def __post_init__(self) -> None:
        for ds in ("weights", "inputs", "outputs"):
            b = getattr(self, ds)
            if b is not None and (not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1):
                raise QuantloopError(f"bits: {ds} must be a positive integer or None, got {b!r}")
        if self.scheme not in VALUE_SCHEMES:
            raise QuantloopError(f"bits: scheme must be one of {', '.join(VALUE_SCHEMES)}, got {self.scheme!r}")
        if self.psum not in PSUM_MODES:
            raise QuantloopError(f"bits: partial sums must be one of {', '.join(PSUM_MODES)}, got {self.psum!r}")

    @classmethod
    def parse(cls, text: str, scheme: str = "int") -> "Bits":
        """Parse `w4a8` (weights 4, inputs 8, outputs 8) or `w4a8o16` (outputs 16).

        Without `o`, outputs take the activation width: the next layer reads them as its inputs,
        which is how the core paper's fork was run (its partial sums share the output width).
        `w32a32` is float32 (scheme "float", `quantloop.bits.is_float_bits`).
        """
        spec = parse_bits(text)
        outputs = spec.activations if spec.outputs is None else spec.outputs
        if is_float_bits(spec):  # 32-bit values are float32 (there are no 32-bit integer widths)
            if scheme not in ("int", FLOAT_SCHEME):
                raise QuantloopError(f"bits {text!r}: 32-bit values are float32; scheme {scheme} does not apply")
            scheme = FLOAT_SCHEME
        return cls(weights=spec.weights, inputs=spec.activations, outputs=outputs, scheme=scheme)

    @property
    def accumulator_bits(self) -> int | None:
        """The MAC's accumulator width max(o, w + a) (o alone when w or a is not given; None = stock);
        float PEs accumulate in float32 (`bits.FLOAT_ACCUMULATOR_BITS`)."""
        if self.outputs is None:
            return None
        if self.scheme == FLOAT_SCHEME:
            return FLOAT_ACCUMULATOR_BITS
        if self.weights is None or self.inputs is None:
            return self.outputs
        return max(self.outputs, self.weights + self.inputs)

    def of(self, dataspace: str) -> int | None:
        return {"Weights": self.weights, "Inputs": self.inputs, "Outputs": self.outputs}[dataspace]

    def as_tuple(self) -> tuple[int | None, int | None, int | None]:
        """(Weights, Inputs, Outputs) in `DATASPACES` order."""
        return (self.weights, self.inputs, self.outputs)

    def __str__(self) -> str:
        parts = [f"{n}{'-' if b is None else b}" for n, b in zip("wao", self.as_tuple())]
        return ("".join(parts) + ("" if self.scheme == "int" else f":{self.scheme}")
                + ("" if self.psum == "accumulator" else f" (partial sums at {self.psum} width)"))


def prime_factors(n: int) -> list[int]:
    """Prime factors of `n` with multiplicity, ascending (1 has none); the unit loop bounds are split into.

    Trial division up to √n: at most ~46,000 steps for a dim up to `MAX_DIM`."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        out.append(n)
    return out


def values_per_word(*, word_bits: int, bits: int | None) -> int:
    """Values of `bits` bits held by one `word_bits` word (1 when bits is None: stock Timeloop)."""
    if bits is None or word_bits <= 1:
        return 1
    return max(1, word_bits // bits)
