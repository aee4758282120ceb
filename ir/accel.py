"""The `accel` dialect: layers lowered onto a target, with their mapping and cost.

Attributes (each prints and parses back to identical text):

- `#accel.problem<N = 1, G = 1, C = 32, M = 64, P = 56, Q = 56, R = 1, S = 1, Hstride = 1, Wstride = 1,
  Hdilation = 1, Wdilation = 1>` — Timeloop's conv problem (`quantloop.problem.Problem`). As in the Timeloop
  exercises, P pairs with R, Wstride and Wdilation, Q pairs with S, Hstride and Hdilation.
- `#accel.bits<W = 4 : int, I = 8 : uint, O = 8 : uint>` — bits, scheme and signedness per data space
  (`int` signed, `uint` unsigned, `pot` sign + exponent, `pot2` sign + two exponents, `float` IEEE float32:
  a layer on float PEs, all three data spaces `32 : float`); `quantloop.problem.Bits`.
- `#accel.mapping<DRAM: t[M4 C2 P14] keep[W I O], shared_glb: t[Q8 P4] x[Q7 M2] y[M8] keep[I O], ...>` —
  per storage level (outer to inner) the temporal loops outer to inner, the spatial fan-out to the next
  inner level on X and Y, and the kept data spaces; `quantloop.mapping.Mapping`. Loops of factor 1 are not printed.
- `#accel.cost<...>` — the mapper's result: energy, cycles, utilization, MAC energy, leakage, energy and
  memory use per (level, data space), whether the mapping is proven optimal, mappings considered.
- `#accel.target<"eyeriss", "<sha256>">` — the module's target (name and content hash).

Op `accel.layer`: one conv / depthwise / gemm layer with its problem and bits, the original operator
attributes the backend needs, and after `accel-map` its `mapping` and `cost`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.dialects.utils import EnumAttribute
from xdsl.ir import Attribute, Data, Dialect, Operation, SpacedOpaqueSyntaxAttribute
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from quantloop.bits import FLOAT_SCHEME, PSUM_MODES, legal_text, legal_widths
from quantloop.mapping import LevelMapping, Mapping
from quantloop.problem import DATASPACES, DIMS, Bits, Problem, ProblemShape, non_positive_field
from quantloop.errors import QuantloopError
from quantloop.ir.ops import Activation, ActivationAttr
from quantloop.ir.syntax import CustomSyntaxOp, print_wrapped
from quantloop.ir.types import Pot2Type, PotType, _IntegerStorage, float_text

#: The text order of `#accel.problem`'s stride fields (H before W; the dataclass lists W first).
STRIDE_KEYS: tuple[str, ...] = ("Hstride", "Wstride", "Hdilation", "Wdilation")
SHORT_DATASPACE: dict[str, str] = {"Weights": "W", "Inputs": "I", "Outputs": "O"}
LONG_DATASPACE: dict[str, str] = {v: k for k, v in SHORT_DATASPACE.items()}
SCHEMES: tuple[str, ...] = ("int", "uint", "pot", "pot2", FLOAT_SCHEME)
TARGET_ATTR = "accel.target"
HOST_ATTR = "accel.host"


def finite_text(value: float) -> str:
    """`ir.types.float_text` of a finite number (accel attributes hold no inf / nan)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot print the non-finite number {value!r} in an accel attribute")
    return float_text(value)


def _parse_float(parser: AttrParser) -> float:
    return float(parser.parse_number())


def _parse_uint(parser: AttrParser, what: str) -> int:
    return parser.parse_integer(allow_boolean=False, allow_negative=False, context_msg=f" for {what}")


def _parse_bool(parser: AttrParser) -> bool:
    if parser.parse_optional_keyword("true") is not None:
        return True
    parser.parse_keyword("false", " (true or false)")
    return False


def _parse_fields(parser: AttrParser, owner: str, parsers: dict[str, Callable[[AttrParser, str], Any]],
                  optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse `key = value, ...` (inside the angle brackets) where every key of `parsers` appears once
    (the keys in `optional` at most once)."""
    values: dict[str, Any] = {}

    def one() -> None:
        pos = parser.pos
        key = parser.parse_identifier(f" (a field of {owner})")
        if key not in parsers:
            parser.raise_error(f"{owner}: unknown field '{key}' (fields: {', '.join(parsers)})", pos, parser.pos)
        if key in values:
            parser.raise_error(f"{owner}: field '{key}' given twice", pos, parser.pos)
        parser.parse_punctuation("=")
        values[key] = parsers[key](parser, key)

    parser.parse_comma_separated_list(parser.Delimiter.NONE, one)
    missing = [k for k in parsers if k not in values and k not in optional]
    if missing:
        parser.raise_error(f"{owner}: missing field(s) {', '.join(missing)}")
    return values


# --------------------------------------------------------------------------------------------- problem


@irdl_attr_definition
class ProblemAttr(Data[ProblemShape]):
    name = "accel.problem"

    def __init__(self, shape: ProblemShape | None = None, **dims: int) -> None:
        super().__init__((shape if shape is not None else ProblemShape(**dims)).shape)

    def verify(self) -> None:
        bad = non_positive_field(self.data)
        if bad:
            raise VerifyException(f"#accel.problem: {bad}")

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> ProblemShape:
        with parser.in_angle_brackets():
            fields = _parse_fields(parser, "#accel.problem", {k: _parse_uint for k in DIMS + STRIDE_KEYS})
        return ProblemShape(**fields)

    def print_parameter(self, printer: Printer) -> None:
        body = ", ".join(f"{k} = {getattr(self.data, k)}" for k in DIMS + STRIDE_KEYS)
        printer.print_string(f"<{body}>")

    def to_costmodel(self, name: str = "") -> Problem:
        return Problem.of(self.data, name)

    @classmethod
    def from_costmodel(cls, problem: ProblemShape) -> ProblemAttr:
        return cls(problem.shape)


# ------------------------------------------------------------------------------------------------ bits


@dataclass(frozen=True)
class OperandBits:
    """Bits and scheme of one data space. `scheme` is int (signed), uint, pot or pot2."""

    bits: int
    scheme: str = "int"

    @property
    def signed(self) -> bool:
        return self.scheme != "uint"

    @property
    def costmodel_scheme(self) -> str:
        """The cost model's scheme name: signedness does not change costs, so uint counts as int."""
        return "int" if self.scheme == "uint" else self.scheme

    def __str__(self) -> str:
        return f"{self.bits} : {self.scheme}"


@dataclass(frozen=True)
class LayerBits:
    """The payload of `#accel.bits`: Weights, Inputs and Outputs, and how wide partial sums are stored
    (`psum`, `quantloop.problem.Bits.psum`; printed only when not the default "accumulator")."""

    weights: OperandBits
    inputs: OperandBits
    outputs: OperandBits
    psum: str = PSUM_MODES[0]

    def of(self, dataspace: str) -> OperandBits:
        return {"Weights": self.weights, "Inputs": self.inputs, "Outputs": self.outputs}[dataspace]


def _parse_operand_bits(parser: AttrParser, key: str) -> OperandBits:
    bits = _parse_uint(parser, f"the bits of {key}")
    parser.parse_punctuation(":")
    scheme = parser.parse_keyword_in(SCHEMES, f" (a scheme: {', '.join(SCHEMES)})")
    return OperandBits(bits, scheme)


def _parse_psum(parser: AttrParser, key: str) -> str:
    return parser.parse_keyword_in(PSUM_MODES, f" (how partial sums are stored: {', '.join(PSUM_MODES)})")


@irdl_attr_definition
class BitsAttr(Data[LayerBits]):
    name = "accel.bits"

    def verify(self) -> None:
        if self.data.psum not in PSUM_MODES:
            raise VerifyException(f"#accel.bits: psum must be one of {', '.join(PSUM_MODES)}, got {self.data.psum!r}")
        for ds in DATASPACES:
            operand = self.data.of(ds)
            if operand.scheme not in SCHEMES:
                raise VerifyException(f"#accel.bits: {ds} scheme must be one of {', '.join(SCHEMES)}, got {operand.scheme!r}")
            if not isinstance(operand.bits, int) or operand.bits < 1:
                raise VerifyException(f"#accel.bits: {ds} bits must be a positive integer, got {operand.bits!r}")
            if ds != "Weights" and operand.scheme in ("pot", "pot2"):
                raise VerifyException(f"#accel.bits: {ds} are uniform integers (int or uint), not {operand.scheme}")
            legal = legal_widths(operand.scheme)
            if operand.bits not in legal:
                raise VerifyException(f"#accel.bits: {ds} {operand.bits} bits is not a legal {operand.scheme} width "
                                      f"(legal: {legal_text(legal)})")
        floats = [ds for ds in DATASPACES if self.data.of(ds).scheme == FLOAT_SCHEME]
        if floats and len(floats) != len(DATASPACES):
            raise VerifyException(f"#accel.bits: {', '.join(floats)} are float but not every data space is: a layer runs "
                                  "all in float (float PEs) or all quantized")

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> LayerBits:
        with parser.in_angle_brackets():
            fields = _parse_fields(
                parser, "#accel.bits",
                {"W": _parse_operand_bits, "I": _parse_operand_bits, "O": _parse_operand_bits, "psum": _parse_psum},
                optional=("psum",),
            )
        return LayerBits(fields["W"], fields["I"], fields["O"], fields.get("psum", PSUM_MODES[0]))

    def print_parameter(self, printer: Printer) -> None:
        b = self.data
        psum = "" if b.psum == PSUM_MODES[0] else f", psum = {b.psum}"
        printer.print_string(f"<W = {b.weights}, I = {b.inputs}, O = {b.outputs}{psum}>")

    def to_costmodel(self) -> Bits:
        """`quantloop.problem.Bits`; its scheme is the weights' (the operand that decides the PE's multiplier)."""
        b = self.data
        return Bits(weights=b.weights.bits, inputs=b.inputs.bits, outputs=b.outputs.bits, scheme=b.weights.costmodel_scheme,
                    psum=b.psum)

    @classmethod
    def from_costmodel(cls, bits: Bits, *, inputs_signed: bool = True, outputs_signed: bool = True) -> BitsAttr:
        """From `quantloop.problem.Bits` (which has no signedness and one scheme, the weights')."""
        for ds in DATASPACES:
            if bits.of(ds) is None:
                raise ValueError(f"#accel.bits needs a bit-width for every data space; {ds} has none in {bits}")
        act = lambda signed: "int" if signed else "uint"  # noqa: E731
        return cls(
            LayerBits(
                OperandBits(bits.weights, bits.scheme),
                OperandBits(bits.inputs, act(inputs_signed)),
                OperandBits(bits.outputs, act(outputs_signed)),
                bits.psum,
            )
        )


# --------------------------------------------------------------------------------------------- mapping

_FACTOR_RE = re.compile(r"^([NGCMPQRS])([0-9]+)$")


def _loops_text(loops: Sequence[tuple[str, int]]) -> str:
    return " ".join(f"{d}{f}" for d, f in loops)


def _parse_loops(parser: AttrParser) -> tuple[tuple[str, int], ...]:
    loops: list[tuple[str, int]] = []
    parser.parse_punctuation("[")
    while parser.parse_optional_punctuation("]") is None:
        pos = parser.pos
        token = parser.parse_identifier(" (a loop such as M4)")
        m = _FACTOR_RE.match(token)
        if not m or int(m.group(2)) < 1:
            parser.raise_error(f"#accel.mapping: expected a loop <dim><factor> such as M4, got '{token}'", pos, parser.pos)
        loops.append((m.group(1), int(m.group(2))))
    return tuple(loops)


def _parse_keep(parser: AttrParser) -> tuple[str, ...]:
    kept: list[str] = []
    parser.parse_punctuation("[")
    while parser.parse_optional_punctuation("]") is None:
        pos = parser.pos
        short = parser.parse_keyword_in(LONG_DATASPACE.keys(), " (a data space: W, I or O)")
        if LONG_DATASPACE[short] in kept:
            parser.raise_error(f"#accel.mapping: data space {short} kept twice", pos, parser.pos)
        kept.append(LONG_DATASPACE[short])
    return tuple(ds for ds in DATASPACES if ds in kept)


def _parse_level(parser: AttrParser) -> LevelMapping:
    pos = parser.pos
    level = parser.parse_identifier_or_str_literal(" (a storage level name)")
    parser.parse_punctuation(":")
    parts: dict[str, Any] = {}
    for key, field, parse in (("t", "temporal", _parse_loops), ("x", "spatial_x", _parse_loops),
                              ("y", "spatial_y", _parse_loops), ("keep", "keep", _parse_keep)):
        if key == "keep":
            parser.parse_keyword("keep", f" (after the loops of level {level})")
            parts[field] = parse(parser)
        elif parser.parse_optional_keyword(key) is not None:
            parts[field] = parse(parser)
    try:  # the mapping's own rules of a level's loops (known dims, factors ≥ 1, a dim once)
        return LevelMapping(**parts, level=level)
    except QuantloopError as error:
        parser.raise_error(f"#accel.mapping: level {level}: {error}", pos, parser.pos)


@irdl_attr_definition
class MappingAttr(Data[Mapping]):
    """`#accel.mapping<...>`: a `quantloop.mapping.Mapping` whose levels carry the target's level names."""

    name = "accel.mapping"

    def verify(self) -> None:
        names = [lvl.level for lvl in self.data.levels]
        if len(set(names)) != len(names):
            raise VerifyException(f"#accel.mapping: level names repeat: {', '.join(names)}")

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Mapping:
        with parser.in_angle_brackets():
            levels = parser.parse_comma_separated_list(parser.Delimiter.NONE, lambda: _parse_level(parser))
        return Mapping(tuple(levels))

    def print_parameter(self, printer: Printer) -> None:
        parts = []
        for lvl in self.data.levels:
            text = [_level_name_text(lvl.level) + ":"]
            for key, loops in (("t", lvl.temporal), ("x", lvl.spatial_x), ("y", lvl.spatial_y)):
                if loops:
                    text.append(f"{key}[{_loops_text(loops)}]")
            text.append(f"keep[{' '.join(SHORT_DATASPACE[ds] for ds in lvl.kept)}]")
            parts.append(" ".join(text))
        printer.print_string("<")
        print_wrapped(printer, parts)
        printer.print_string(">")

    @property
    def levels(self) -> tuple[LevelMapping, ...]:
        """The named levels, outer to inner."""
        return self.data.levels

    def to_costmodel(self) -> Mapping:
        """The mapping by position, as the mapper makes it and the cost model reads it (level names dropped)."""
        return self.data.positional

    @classmethod
    def from_costmodel(cls, mapping: Mapping, level_names: Sequence[str]) -> MappingAttr:
        """From a mapper's `Mapping`, naming its levels (outer to inner) with the target's level names."""
        try:
            return cls(mapping.named(level_names))
        except ValueError as error:
            raise ValueError(f"#accel.mapping: {error}") from None


_BARE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def _level_name_text(name: str) -> str:
    return name if _BARE_NAME_RE.match(name) and name not in ("t", "x", "y", "keep") else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------------------ cost


@dataclass(frozen=True)
class LevelCost:
    """Energy (pJ, all instances) and memory use (bits per instance) of one data space at one level."""

    level: str
    dataspace: str
    energy_pj: float
    capacity_bits: int


@dataclass(frozen=True)
class LayerCost:
    """The payload of `#accel.cost`."""

    energy_pj: float
    cycles: int
    utilization: float
    macs: int
    mac_energy_pj: float
    leakage_pj: float
    optimal: bool
    mappings_considered: int
    per_level: tuple[LevelCost, ...] = ()


def _parse_level_costs(parser: AttrParser, key: str) -> tuple[LevelCost, ...]:
    def one() -> LevelCost:
        level = parser.parse_identifier_or_str_literal(" (a storage level name)")
        parser.parse_punctuation(":")
        ds = LONG_DATASPACE[parser.parse_keyword_in(LONG_DATASPACE.keys(), " (a data space: W, I or O)")]
        parser.parse_punctuation("=")
        energy = _parse_float(parser)
        parser.parse_keyword("pJ")
        bits = _parse_uint(parser, "memory use in bits")
        parser.parse_keyword("b")
        return LevelCost(level, ds, energy, bits)

    return tuple(parser.parse_comma_separated_list(parser.Delimiter.SQUARE, one))


_COST_FIELDS: dict[str, Callable[[AttrParser, str], Any]] = {
    "energy_pj": lambda p, k: _parse_float(p),
    "cycles": _parse_uint,
    "utilization": lambda p, k: _parse_float(p),
    "macs": _parse_uint,
    "mac_energy_pj": lambda p, k: _parse_float(p),
    "leakage_pj": lambda p, k: _parse_float(p),
    "optimal": lambda p, k: _parse_bool(p),
    "mappings_considered": _parse_uint,
    "per_level": _parse_level_costs,
}


@irdl_attr_definition
class CostAttr(Data[LayerCost]):
    """`#accel.cost<energy_pj = ..., ..., per_level = [DRAM: W = 1.5e3 pJ 4096 b, ...]>`.

    `per_level` gives, per (level, data space), the energy over all instances and the utilized
    capacity of one instance in bits (packed words × word bits).
    """

    name = "accel.cost"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> LayerCost:
        with parser.in_angle_brackets():
            fields = _parse_fields(parser, "#accel.cost", _COST_FIELDS)
        return LayerCost(**fields)

    def print_parameter(self, printer: Printer) -> None:
        c = self.data
        levels = [
            f"{_level_name_text(lc.level)}: {SHORT_DATASPACE[lc.dataspace]} = {finite_text(lc.energy_pj)} pJ {lc.capacity_bits} b"
            for lc in c.per_level
        ]
        fields = [
            f"energy_pj = {finite_text(c.energy_pj)}", f"cycles = {c.cycles}", f"utilization = {finite_text(c.utilization)}",
            f"macs = {c.macs}", f"mac_energy_pj = {finite_text(c.mac_energy_pj)}", f"leakage_pj = {finite_text(c.leakage_pj)}",
            f"optimal = {'true' if c.optimal else 'false'}", f"mappings_considered = {c.mappings_considered}",
        ]
        printer.print_string("<")
        print_wrapped(printer, fields)
        printer.print_string(", per_level = [" if fields else "per_level = [")
        print_wrapped(printer, levels)
        printer.print_string("]>")


# ---------------------------------------------------------------------------------------------- target


@dataclass(frozen=True)
class TargetRef:
    name: str
    content_hash: str


@irdl_attr_definition
class TargetAttr(Data[TargetRef]):
    """`#accel.target<"eyeriss", "<sha256 of the target's normalised content>">`."""

    name = "accel.target"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> TargetRef:
        with parser.in_angle_brackets():
            name = parser.parse_str_literal(" (the target name)")
            parser.parse_punctuation(",")
            digest = parser.parse_str_literal(" (the target's content hash)")
        return TargetRef(name, digest)

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string("<")
        printer.print_string_literal(self.data.name)
        printer.print_string(", ")
        printer.print_string_literal(self.data.content_hash)
        printer.print_string(">")


def module_target(module: ModuleOp) -> TargetRef | None:
    attr = module.attributes.get(TARGET_ATTR)
    return attr.data if isinstance(attr, TargetAttr) else None


# ------------------------------------------------------------------------------------------------- op


class LayerKind(StrEnum):
    CONV = "conv"
    DEPTHWISE = "depthwise"
    GEMM = "gemm"


LAYER_KINDS: tuple[str, ...] = tuple(k.value for k in LayerKind)


@irdl_attr_definition
class LayerKindAttr(EnumAttribute[LayerKind], SpacedOpaqueSyntaxAttribute):
    """`#accel<kind conv>`; `kind = conv` in accel.layer's syntax."""

    name = "accel.kind"


class SourceOp(StrEnum):
    """The qnn op an accel.layer was lowered from."""

    CONV2D = "qnn.conv2d"
    GEMM = "qnn.gemm"
    MATMUL = "qnn.matmul"


@irdl_attr_definition
class SourceOpAttr(EnumAttribute[SourceOp], SpacedOpaqueSyntaxAttribute):
    """`#accel<source qnn.conv2d>`; `source = qnn.conv2d` in accel.layer's syntax."""

    name = "accel.source"


def _shape(value_type: Attribute) -> tuple[int, ...] | None:
    return tuple(value_type.get_shape()) if isinstance(value_type, TensorType) else None


@irdl_op_definition
class LayerOp(CustomSyntaxOp):
    """One compute layer on the accelerator: `result = layer(input, weight[, bias])`.

    conv / depthwise: input NCHW, weight [G·M, C, S, R], result [N, G·M, Q, P] (Q, S, Hstride, Hdilation
    follow the image height; P, R, Wstride, Wdilation its width). gemm: rows of the (possibly transposed)
    input are N, its columns C, the result's last dim M; P = Q = R = S = 1. `pads` (ONNX order top, left,
    bottom, right), `strides`, `dilations`, `group`, `act` (+ `act_min`/`act_max` for clip) and the gemm
    attributes (`trans_a`, `trans_b`, `alpha`, `beta`) are the original operator's, for the backend;
    `source` names that operator (qnn.conv2d, qnn.gemm, qnn.matmul). Prints in the qnn ops' custom
    syntax (`quantloop.ir.syntax`), the problem, bits, mapping and cost on lines of their own.
    """

    PROPERTIES_ON_OWN_LINES: ClassVar[bool] = True

    name = "accel.layer"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    layer_name = prop_def(StringAttr, prop_name="name")
    kind = prop_def(LayerKindAttr)
    problem = prop_def(ProblemAttr)
    bits = prop_def(BitsAttr)
    strides = opt_prop_def(DenseArrayBase)
    pads = opt_prop_def(DenseArrayBase)
    dilations = opt_prop_def(DenseArrayBase)
    group = opt_prop_def(IntegerAttr)
    act = prop_def(ActivationAttr, ActivationAttr(Activation.NONE))
    act_min = opt_prop_def(FloatAttr)
    act_max = opt_prop_def(FloatAttr)
    trans_a = opt_prop_def(IntegerAttr)
    trans_b = opt_prop_def(IntegerAttr)
    alpha = opt_prop_def(FloatAttr)
    beta = opt_prop_def(FloatAttr)
    source = opt_prop_def(SourceOpAttr)
    mapping = opt_prop_def(MappingAttr)
    cost = opt_prop_def(CostAttr)

    def __init__(
        self,
        input: Operation | Any,
        weight: Operation | Any,
        bias: Operation | Any | None,
        result_type: Attribute,
        *,
        name: str,
        kind: str,
        problem: ProblemAttr,
        bits: BitsAttr,
        act: str = "none",
        extra: dict[str, Attribute] | None = None,
    ) -> None:
        properties: dict[str, Attribute] = {
            "name": StringAttr(name),
            "kind": LayerKindAttr(LayerKind(kind)),
            "problem": problem,
            "bits": bits,
            "act": ActivationAttr(Activation(act)),
        }
        properties.update(extra or {})
        super().__init__(
            operands=[input, weight, [] if bias is None else [bias]],
            result_types=[result_type],
            properties=properties,
        )

    @property
    def label(self) -> str:
        return self.layer_name.data

    def verify_(self) -> None:
        who = f"accel.layer '{self.label}'"
        kind = self.kind.data.value
        if kind not in LAYER_KINDS:
            raise VerifyException(f"{who}: kind must be one of {', '.join(LAYER_KINDS)}, got '{kind}'")
        p = self.problem.data
        out = _shape(self.output.type)
        if kind in ("conv", "depthwise"):
            expected_in = (p.N, p.G * p.C)
            inp = _shape(self.input.type)
            if inp is None or len(inp) != 4 or inp[:2] != expected_in:
                raise VerifyException(f"{who}: input shape {inp} does not start with N, G·C = {expected_in}")
            wshape = (p.G * p.M, p.C, p.S, p.R)
            if _shape(self.weight.type) != wshape:
                raise VerifyException(f"{who}: weight shape {_shape(self.weight.type)} is not [G·M, C, S, R] = {list(wshape)}")
            oshape = (p.N, p.G * p.M, p.Q, p.P)
            if out != oshape:
                raise VerifyException(f"{who}: result shape {out} is not [N, G·M, Q, P] = {list(oshape)}")
            if kind == "depthwise" and not (p.C == 1 and p.G > 1):
                raise VerifyException(f"{who}: a depthwise layer needs C = 1 and G > 1, got C = {p.C}, G = {p.G}")
        else:
            if (p.P, p.Q, p.R, p.S) != (1, 1, 1, 1):
                raise VerifyException(f"{who}: a gemm layer has P = Q = R = S = 1, got {p}")
            if out is None or math.prod(out[:-1]) != p.G * p.N or (out[-1] if out else 1) != p.M:
                raise VerifyException(f"{who}: result shape {out} does not hold G·N = {p.G * p.N} rows of M = {p.M} columns")
        if self.mapping is not None and self.cost is None:
            raise VerifyException(f"{who}: has a mapping but no cost")
        for ds, value in (("Weights", self.weight), ("Inputs", self.input), ("Outputs", self.output)):
            stored = _stored_as(value.type)
            declared = self.bits.data.of(ds)
            if stored is not None and stored != (declared.bits, declared.scheme):
                raise VerifyException(f"{who}: bits say {ds} are {declared.bits} : {declared.scheme}, but the operand "
                                      f"type stores {stored[0]} : {stored[1]}")


def _stored_as(value_type: Attribute) -> tuple[int, str] | None:
    """(bits, scheme) a tensor's element type stores, or None for a type without a bit-width (float)."""
    elem = value_type.element_type if isinstance(value_type, TensorType) else None
    if isinstance(elem, PotType):
        return elem.bits, "pot"
    if isinstance(elem, Pot2Type):
        return elem.bits, "pot2"
    if isinstance(elem, _IntegerStorage):
        return elem.bits, "int" if elem.signed else "uint"
    return None


ACCEL = Dialect(
    "accel", [LayerOp], [ProblemAttr, BitsAttr, MappingAttr, CostAttr, TargetAttr, LayerKindAttr, SourceOpAttr]
)


def layers(module: Operation) -> list[LayerOp]:
    return [op for op in module.walk() if isinstance(op, LayerOp)]


def host_ops(module: Operation) -> list[Operation]:
    """The ops `accel-lower` left on the host (pools, adds, reshapes, ...), in program order."""
    return [op for op in module.walk() if HOST_ATTR in op.attributes]
