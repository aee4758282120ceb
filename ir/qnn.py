"""The `qnn` dialect: a graph of CNN ops whose tensor element types carry quantization.

A model is a builtin `ModuleOp` holding one `func.func @main`; its arguments are the model
inputs and its `func.return` returns the outputs. This module is the public entry point:
types, ops, the dialect object, a context, and text printing / parsing.
"""

from __future__ import annotations

import io

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Attribute, Dialect
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from quantloop.errors import QuantloopError
from quantloop.ir.accel import ACCEL
from quantloop.ir.builder import MainBuilder, main_func
from quantloop.ir.syntax import upgrade_string_enums
from quantloop.ir.ops import (
    ACTIVATIONS,
    QNN_OPS,
    Activation,
    ActivationAttr,
    QnnOp,
    AddOp,
    AvgPoolOp,
    BatchNormOp,
    ClipOp,
    ConcatOp,
    ConstantOp,
    Conv2dOp,
    DequantizeOp,
    DropoutOp,
    FlattenOp,
    GemmOp,
    GlobalAvgPoolOp,
    HOST_OP_TYPES,
    HostOp,
    HostOpTypeAttr,
    IdentityOp,
    MatMulOp,
    MaxPoolOp,
    QuantizeOp,
    ReluOp,
    ReshapeOp,
    SoftmaxOp,
    broadcast_shapes,
    conv_output_size,
    matmul_shape,
    op_kind,
    op_label,
)
from quantloop.ir.types import (
    QUANTIZED_TYPES,
    IntType,
    Pot2Type,
    PotType,
    QuantizedType,
    UniformPerAxisType,
    UniformType,
    element_type,
    float_text,
    is_float,
    is_quantized,
    is_signed,
    storage_bits,
    with_element,
)
from quantloop.ir.weights import DenseWeightsAttr, Weights

QNN = Dialect(
    "qnn",
    list(QNN_OPS),
    [IntType, UniformType, UniformPerAxisType, PotType, Pot2Type, DenseWeightsAttr, ActivationAttr, HostOpTypeAttr],
)

#: Dialects every quantloop context loads (accel too, see `make_context`); others are passed to
#: `make_context`.
DEFAULT_DIALECTS: list[Dialect] = [Builtin, Func, QNN]


def make_context(*extra_dialects: Dialect) -> Context:
    """A context with builtin, func, qnn and accel plus `extra_dialects` loaded."""
    ctx = Context()
    seen: set[str] = set()
    for dialect in [*DEFAULT_DIALECTS, ACCEL, *extra_dialects]:
        if dialect.name not in seen:
            ctx.load_dialect(dialect)
            seen.add(dialect.name)
    return ctx


class QnnPrinter(Printer):
    """xDSL printer that elides large `#qnn.dense` weights and prints per-axis types as aliases.

    `alias_per_axis`: per-axis types print as `!qnn_q<N>`; `alias_definitions()` gives the
    `!qnn_q<N> = !qnn.uniform<...>` lines that must precede the module text.
    """

    def __init__(self, *, elide_weights_over: int | None = 16, alias_per_axis: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.elide_weights_over = elide_weights_over
        self.alias_per_axis = alias_per_axis
        self._aliases: dict[UniformPerAxisType, str] = {}

    def print_attribute(self, attribute: Attribute) -> None:
        if isinstance(attribute, UniformPerAxisType):
            if self.alias_per_axis:
                alias = self._aliases.setdefault(attribute, f"!qnn_q{len(self._aliases)}")
                self.print_string(alias)
            else:
                self.print_string("!qnn.uniform")
                attribute.print_parameters(self)
            return
        super().print_attribute(attribute)

    def alias_definitions(self) -> str:
        lines = []
        for attr, alias in self._aliases.items():
            text = io.StringIO()
            printer = QnnPrinter(stream=text, alias_per_axis=False)
            printer.print_string(f"{alias} = ")  # through the printer, so long scale lists wrap in time
            printer.print_attribute(attr)
            lines.append(text.getvalue() + "\n")
        return "".join(lines)


def print_module(module: ModuleOp, elide_weights_over: int | None = 16, alias_per_axis: bool = True) -> str:
    """The module as MLIR text. Constants with more than `elide_weights_over` values print as
    `#qnn.dense<elided>` (None keeps every weight, so the text can be parsed and run again)."""
    body = io.StringIO()
    printer = QnnPrinter(stream=body, elide_weights_over=elide_weights_over, alias_per_axis=alias_per_axis)
    printer.print_op(module)
    aliases = printer.alias_definitions()
    return (aliases + "\n" if aliases else "") + body.getvalue() + "\n"


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).strip().splitlines() if line.strip())


_HEX = set("0123456789abcdefABCDEF")


def _check_strings_closed(text: str, source_name: str) -> None:
    """Every string literal is checked here before xDSL sees it: xDSL 0.74's string regex backtracks
    exponentially on an unterminated string or an invalid escape (`\\q`, a one-digit `\\1`), which would hang
    the parser. MLIR strings never span lines; escapes are \\n \\t \\" \\\\ and two hex digits."""
    for number, line in enumerate(text.splitlines(), start=1):
        if '"' not in line:
            continue
        if "\\" not in line and "//" not in line:
            if line.count('"') % 2:
                raise QuantloopError(
                    f"{source_name}:{number}:{line.rindex(chr(34)) + 1}: string literal is not closed (truncated file?)"
                )
            continue
        inside, start, col = False, 0, 0
        while col < len(line):
            char = line[col]
            if inside:
                if char == "\\":
                    nxt = line[col + 1 : col + 3]
                    if nxt[:1] in ("n", "t", '"', "\\") and nxt[:1]:
                        col += 2
                        continue
                    if len(nxt) == 2 and set(nxt) <= _HEX:
                        col += 3
                        continue
                    raise QuantloopError(f"{source_name}:{number}:{col + 1}: invalid escape in a string literal "
                                         f"(expected \\n, \\t, \\\", \\\\ or two hex digits)")
                if char == '"':
                    inside = False
            elif char == '"':
                inside, start = True, col + 1
            elif line.startswith("//", col):
                break
            col += 1
        if inside:
            raise QuantloopError(f"{source_name}:{number}:{start}: string literal is not closed (truncated file?)")


def parse_module(text: str, source_name: str = "<string>", ctx: Context | None = None) -> ModuleOp:
    """Parse and verify MLIR text; errors become one-line `QuantloopError`s naming source and line."""
    ctx = ctx or make_context()
    _check_strings_closed(text, source_name)
    try:
        module = Parser(ctx, text, name=source_name).parse_module()
    except ParseError as err:
        location = err.span.get_location()
        raise QuantloopError(f"{source_name}:{location.line}:{location.col}: {_one_line(err.msg)}") from err
    except VerifyException as err:
        raise QuantloopError(f"{source_name}: {_first_line(err)}") from err
    except RecursionError:
        raise QuantloopError(f"{source_name}: nested too deeply to parse") from None
    except (ValueError, OverflowError) as err:  # e.g. an integer beyond Python's int-string limit
        raise QuantloopError(f"{source_name}: cannot parse ({_first_line(err)[:120]})") from None
    upgrade_string_enums(module)
    verify_module(module, source_name)
    return module


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(err).__name__


def verify_module(module: ModuleOp, source_name: str = "<module>") -> None:
    """Verify every op; the first failure becomes a one-line `QuantloopError` naming the op."""
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except VerifyException as err:
            message = _first_line(err).removeprefix("Operation does not verify: ")
            if not message.startswith(op.name):
                message = f"{op_label(op)}: {message}"
            raise QuantloopError(f"{source_name}: {message}") from err


__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ActivationAttr",
    "QnnOp",
    "QNN",
    "QNN_OPS",
    "QUANTIZED_TYPES",
    "DEFAULT_DIALECTS",
    "AddOp",
    "AvgPoolOp",
    "BatchNormOp",
    "ClipOp",
    "ConcatOp",
    "ConstantOp",
    "Conv2dOp",
    "DenseWeightsAttr",
    "DequantizeOp",
    "DropoutOp",
    "FlattenOp",
    "GemmOp",
    "GlobalAvgPoolOp",
    "HOST_OP_TYPES",
    "HostOp",
    "IdentityOp",
    "IntType",
    "MatMulOp",
    "MaxPoolOp",
    "Pot2Type",
    "PotType",
    "QnnPrinter",
    "QuantizeOp",
    "QuantizedType",
    "ReluOp",
    "ReshapeOp",
    "SoftmaxOp",
    "UniformPerAxisType",
    "UniformType",
    "MainBuilder",
    "Weights",
    "main_func",
    "broadcast_shapes",
    "conv_output_size",
    "element_type",
    "float_text",
    "is_float",
    "is_quantized",
    "is_signed",
    "make_context",
    "matmul_shape",
    "op_kind",
    "op_label",
    "parse_module",
    "print_module",
    "storage_bits",
    "verify_module",
    "with_element",
]
