"""`qnn-assign-bits`: give every weight and activation a bit-width (`!qnn.int<bits = b, signed = s>`).

Rules:
- Weights (constants feeding the weight operand of conv2d / gemm / matmul) are signed,
  `w` bits. Biases and other constants stay float; calibration quantizes biases.
- Activations: each op result gets the activation bit-width of the op that produces it, so a
  layer's "activations" entry sets the bits of the tensor it writes, which is the input of the
  layers that read it. Signedness follows the values: unsigned after relu, clip / fused act with
  a lower bound >= 0, softmax, and after ops that keep a non-negative input non-negative
  (pools, add of two non-negative tensors, reshape, flatten, concat, identity, dropout);
  signed otherwise.
- Ops that only move values (maxpool, reshape, flatten, identity, dropout) pass their input's
  integer type through unchanged unless the bits file names them.
- Model inputs are signed with `input-bits` bits (default 8: the first layer's input is kept at
  8 bits, as most mixed-precision work does).
- Values that already carry a quantized type (QDQ / QONNX models) keep it; dequantize results
  and float values read by a `qnn.quantize` stay f32.

Options: `bits=w8a8` (uniform default: w<weight bits>a<activation bits>[o<bits of the values the network
returns>]), `file=bits.json` with
per-layer entries keyed by op name, `{"conv1": {"weights": 4, "activations": 8, "scheme": "pot"}, ...}`
(any key may be left out; unlisted layers get the default; `scheme` (int / pot / pot2) is the layer's
weight scheme, which `qnn-calibrate` then encodes instead of its `scheme` option), `input-bits=8`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from quantloop.bits import SCHEMES, check_width, parse_bits
from quantloop.errors import QuantloopError
from quantloop.ir.quantization import SCHEME_ATTR
from quantloop.ir.qnn import (
    AddOp,
    AvgPoolOp,
    ClipOp,
    ConcatOp,
    ConstantOp,
    Conv2dOp,
    DequantizeOp,
    DropoutOp,
    FlattenOp,
    GemmOp,
    GlobalAvgPoolOp,
    IdentityOp,
    IntType,
    MaxPoolOp,
    QuantizeOp,
    ReluOp,
    ReshapeOp,
    SoftmaxOp,
    is_float,
    is_quantized,
    is_signed,
    op_label,
)
from quantloop.ir.ops import MOVES_VALUES, WEIGHT_OPERAND
from quantloop.ir.types import UniformPerAxisType, UniformType

KEEPS_NONNEGATIVE = (MaxPoolOp, AvgPoolOp, GlobalAvgPoolOp, ReshapeOp, FlattenOp, IdentityOp, DropoutOp, ConcatOp, AddOp)


@dataclass(frozen=True)
class BitsEntry:
    weights: int | None = None
    activations: int | None = None
    scheme: str | None = None  # the weights' scheme (int / pot / pot2); None: calibration's default


def parse_bits_spec(spec: str) -> tuple[int, int, int]:
    """`w4a8` -> (4, 8, 8); `w4a8o16` -> (4, 8, 16): weights, activations, network outputs.

    Inside the graph a layer's outputs are the next layer's inputs, so they take the activation width;
    `o` is the width of the values the network returns (the layers producing them store their Outputs
    at `o` bits, as `map`/`cost` read `o` for one layer). Partial sums are the target's (`--psum-bits`)."""
    parsed = parse_bits(spec)
    where = f"bits {spec!r}"
    w, a = check_width(parsed.weights, where), check_width(parsed.activations, where)
    return w, a, a if parsed.outputs is None else check_width(parsed.outputs, where)


def load_bits_file(path: str | Path) -> dict[str, BitsEntry]:
    """Per-layer bits from JSON: `{"conv1": {"weights": 4, "activations": 8}, ...}`."""
    from quantloop.files import load_json

    return parse_bits_table(load_json(path, "bits file"), str(path))


def parse_bits_table(table: object, where: str) -> dict[str, BitsEntry]:
    """Per-layer bits from a bits file's content (`where` names it in errors)."""
    if not isinstance(table, Mapping):
        raise QuantloopError(f"{where}: expected an object keyed by layer name, got {type(table).__name__}")
    layers: dict[str, BitsEntry] = {}
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise QuantloopError(f"{where}: layer '{name}' must map to an object like {{\"weights\": 4, \"activations\": 8}}")
        unknown = set(entry) - {"weights", "activations", "scheme"}
        if unknown:
            raise QuantloopError(
                f"{where}: layer '{name}' has unknown keys {sorted(unknown)} (expected 'weights', 'activations', 'scheme')"
            )
        values: dict[str, int | str] = {}
        for key, bits in entry.items():
            if key == "scheme":
                if bits not in SCHEMES:
                    raise QuantloopError(f"{where}: layer '{name}' scheme must be one of {', '.join(SCHEMES)}, got {bits!r}")
                values[key] = bits
                continue
            if not isinstance(bits, int) or isinstance(bits, bool):
                raise QuantloopError(f"{where}: layer '{name}' {key} must be an integer, got {bits!r}")
            values[key] = check_width(bits, f"{where}: layer '{name}' {key}")
        layers[name] = BitsEntry(**values)
    return layers


def _show(choice: tuple[int, str | None]) -> str:
    bits, scheme = choice
    return f"{bits} bits" + ("" if scheme is None else f" ({scheme})")


def _lower_bound(op: Operation) -> float | None:
    """The lower clamp an op applies to its result, if any."""
    if isinstance(op, ReluOp):
        return 0.0
    if isinstance(op, ClipOp):
        return op.min
    if isinstance(op, (Conv2dOp, GemmOp, AddOp)):
        if op.act == "relu":
            return 0.0
        if op.act == "clip":
            return op.act_min
    return None


def _quantized_explicitly(value: SSAValue) -> bool:
    """A float value that a `qnn.quantize` reads (QDQ models) is quantized by that op: leave it float."""
    return any(isinstance(use.operation, QuantizeOp) for use in value.uses)


def _unsigned_quantized(value: SSAValue) -> bool:
    return is_quantized(value) and not is_signed(value)


def _with_elem(value: SSAValue, elem: Attribute) -> Attribute:
    t = value.type
    return TensorType(elem, t.get_shape()) if isinstance(t, TensorType) else t


def _retype(value: SSAValue, elem: Attribute) -> SSAValue:
    name = value.name_hint
    new = Rewriter.replace_value_with_new_type(value, _with_elem(value, elem))
    new.name_hint = name
    return new


def _refuse_model_quantized(op: Operation, entry: BitsEntry, where: str) -> None:
    """Bits for a tensor the model quantizes itself (QDQ / QOperator / QONNX) would be ignored: refuse them."""
    named = []
    if entry.weights is not None and type(op) in WEIGHT_OPERAND:
        named.append(("weights", op.operands[WEIGHT_OPERAND[type(op)]]))
    if entry.activations is not None and op.results:
        named.append(("activations", op.results[0]))
    for what, value in named:
        elem = value.type.element_type if isinstance(value.type, TensorType) else None
        if isinstance(elem, (UniformType, UniformPerAxisType)):
            raise QuantloopError(
                f"{where}: the model quantizes its {what} itself ({elem.bits} bits); "
                "bits are given only to tensors the model leaves in float"
            )


def _network_output_producers(func: FuncOp) -> set[SSAValue]:
    """The values whose width the `o` of a bits spec sets: what the function returns, traced back through
    ops that only move values (reshape, flatten, ...), which pass their input's type through."""
    found: set[SSAValue] = set()
    block = func.body.block
    pending = list(block.last_op.operands) if block.last_op is not None else []
    while pending:
        value = pending.pop()
        if value in found:
            continue
        found.add(value)
        if isinstance(value.owner, MOVES_VALUES) and value.owner.operands:
            pending.append(value.owner.operands[0])
    return found


@dataclass(frozen=True)
class AssignBitsPass(ModulePass):
    """Give weights and activations `!qnn.int` types: `bits` (w8a8) or per layer from a JSON `file`."""

    name = "qnn-assign-bits"

    bits: str = "w8a8"
    file: str = ""
    input_bits: int = 8

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self._assign(op, lambda: load_bits_file(self.file) if self.file else {}, self.file)

    def _assign(self, op: ModuleOp, load_table: Callable[[], Mapping[str, BitsEntry]], where: str) -> None:
        default_w, default_a, default_o = parse_bits_spec(self.bits)
        check_width(self.input_bits, "qnn-assign-bits input-bits")
        table = load_table()
        named = {o.node_name: o for o in op.walk() if getattr(o, "node_name", None)}
        unknown = sorted(set(table) - set(named))
        if unknown:
            known = ", ".join(sorted(named)) or "none"
            raise QuantloopError(
                f"{where}: unknown layer names {', '.join(unknown)} (layers in the model: {known})"
            )
        for name, entry in table.items():
            if entry.weights is not None and type(named[name]) not in WEIGHT_OPERAND:
                raise QuantloopError(f"{where}: layer '{name}' ({named[name].name}) has no weights to give bits to")
            _refuse_model_quantized(named[name], entry, f"{where}: layer '{name}'")

        for func in (o for o in op.walk() if isinstance(o, FuncOp)):
            self._assign_function(func, default_w, default_a, default_o, table)

    def _assign_function(
        self, func: FuncOp, default_w: int, default_a: int, default_o: int, table: dict[str, BitsEntry]
    ) -> None:
        nonnegative: set[SSAValue] = set()
        returned = _network_output_producers(func)
        for arg in list(func.body.block.args):
            if is_float(arg) and not _quantized_explicitly(arg):
                _retype(arg, IntType(self.input_bits, True))
        weight_bits: dict[ConstantOp, tuple[tuple[int, str | None], Operation]] = {}
        for o in func.body.walk():
            if type(o) in WEIGHT_OPERAND:
                entry = table.get(o.node_name or "", BitsEntry())
                choice = (entry.weights or default_w, entry.scheme)
                producer = o.operands[WEIGHT_OPERAND[type(o)]].owner
                if isinstance(producer, ConstantOp):
                    if producer in weight_bits and weight_bits[producer][0] != choice:
                        other = weight_bits[producer][1]
                        raise QuantloopError(
                            f"{op_label(o)} and {op_label(other)} share weights but were given "
                            f"{_show(choice)} and {_show(weight_bits[producer][0])}"
                        )
                    weight_bits[producer] = (choice, o)
        for constant, ((bits, scheme), _) in weight_bits.items():
            if is_float(constant.results[0]):
                _retype(constant.results[0], IntType(bits, True))
                if scheme is not None:
                    constant.attributes[SCHEME_ATTR] = StringAttr(scheme)

        for o in list(func.body.walk()):
            if isinstance(o, (ConstantOp, DequantizeOp)) or o.parent_op() is not func or not o.results:
                continue
            for result in list(o.results):
                if not is_float(result) or _quantized_explicitly(result):
                    continue
                entry = table.get(o.node_name or "", BitsEntry()) if hasattr(o, "node_name") else BitsEntry()
                ints = [v.type.element_type for v in o.operands if isinstance(v.type, TensorType)]
                ints = [t for t in ints if isinstance(t, IntType)]
                if self._is_nonnegative(o, nonnegative):
                    nonnegative.add(result)
                if isinstance(o, MOVES_VALUES) and entry.activations is None and ints:
                    elem = IntType(ints[0].bits, ints[0].signed and result not in nonnegative)
                else:
                    default = default_o if result in returned else default_a
                    elem = IntType(entry.activations or default, result not in nonnegative)
                new = _retype(result, elem)
                if result in nonnegative:
                    nonnegative.discard(result)
                    nonnegative.add(new)
        func.update_function_type()

    @staticmethod
    def _is_nonnegative(o: Operation, nonnegative: set[SSAValue]) -> bool:
        bound = _lower_bound(o)
        if bound is not None:
            return bound >= 0
        if isinstance(o, SoftmaxOp):
            return True
        if isinstance(o, KEEPS_NONNEGATIVE):
            inputs = [v for v in o.operands if not isinstance(v.owner, ConstantOp)]
            return bool(inputs) and all(v in nonnegative or _unsigned_quantized(v) for v in inputs)
        return False


@dataclass(frozen=True)
class AssignBitsTablePass(AssignBitsPass):
    """`qnn-assign-bits` with its per-layer table in memory instead of a file (what the search hands
    over). Not registered: pipelines name the file form; this one prints and dumps as qnn-assign-bits."""

    table: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self._assign(op, lambda: parse_bits_table(self.table, "bits table"), "bits table")
