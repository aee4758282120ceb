"""The custom assembly format every qnn and accel op shares, derived from the op's IRDL definition.

    %y = qnn.conv2d %x, %w, %b {strides = [2, 2], group = 32, act = clip, act_min = 0.0, name = "c1"}
        : (tensor<1x32x8x8xf32>, tensor<32x1x3x3xf32>, tensor<32xf32>) -> tensor<1x32x4x4xf32>

Operands, then the properties (those equal to their definition's default are left out; `name`
comes last), then discardable attributes after `attributes`, then the function type, which moves
to its own line when the op would not fit in `WRAP_COLUMN` characters. In the property dictionary
i64 arrays print as `[1, 2]`, i64 integers and f64 floats without their type, enum attributes as
their bare value; anything else in its generic spelling. An op with more than one optional or
variadic operand group prints those groups as `name(%a, %b)`. A new op gets this format by
deriving from `CustomSyntaxOp`; `PROPERTIES_ON_OWN_LINES` puts every dialect-attribute property
on a line of its own (for ops with long mapping / cost attributes).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, FloatAttr, IntegerAttr, StringAttr, UnitAttr, f64, i64
from xdsl.dialects.utils import EnumAttribute
from xdsl.ir import Attribute, BuiltinAttribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation, OptionalDef, VarOperandDef, VarResultDef
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.printer import Printer
from xdsl.utils.base_printer import BasePrinter

from quantloop.ir.types import float_text

#: Lines that would pass this column are wrapped where the syntax allows (properties, function types, long lists).
WRAP_COLUMN = 200
#: Properties printed after all others (the ONNX node name reads best at the end).
LAST_PROPERTIES = ("name",)


def print_wrapped(printer: BasePrinter, items: Sequence[str], width: int = WRAP_COLUMN, indent: int = 2) -> None:
    """`a, b, c` continuing on indented lines whenever the next item would pass column `width`."""
    with printer.indented(indent):
        for i, item in enumerate(items):
            if i:
                printer.print_string(",")
                printer.print_string("\n" if printer._current_column + 2 + len(item) > width else " ")  # room for ", "
            printer.print_string(item)


def _rendered(printer: Printer, emit: Callable[[], None]) -> str:
    """What `emit` prints, captured instead of written (the printer's position is left as it was)."""
    stream, column, line = printer.stream, printer._current_column, printer._current_line
    printer.stream = buffer = io.StringIO()
    try:
        emit()
    finally:
        printer.stream, printer._current_column, printer._current_line = stream, column, line
    return buffer.getvalue()


def _constraint_class(definition) -> type[Attribute] | None:
    constraint = getattr(definition, "constr", None)
    cls = getattr(constraint, "attr", None)
    return cls if isinstance(cls, type) else None


def _print_value(printer: Printer, value: Attribute, definition) -> None:
    """A property's value; `[1, 2]` only where the definition says DenseArrayBase (else it parses as an ArrayAttr)."""
    if isinstance(value, DenseArrayBase) and value.elt_type == i64 and _constraint_class(definition) is DenseArrayBase:
        printer.print_string("[" + ", ".join(str(v) for v in value.get_values()) + "]")
    elif isinstance(value, IntegerAttr) and value.type == i64:
        printer.print_string(str(value.value.data))
    elif isinstance(value, FloatAttr) and value.type == f64 and math.isfinite(value.value.data):
        printer.print_string(float_text(value.value.data))
    elif isinstance(value, EnumAttribute):
        printer.print_identifier_or_string_literal(str(value.data.value))
    else:
        _print_generic(printer, value)


def _print_generic(printer: Printer, value: Attribute) -> None:
    """The attribute's generic spelling, with the elements of a long `array<T: ...>` wrapped."""
    if not isinstance(value, DenseArrayBase):
        printer.print_attribute(value)
        return
    text = _rendered(printer, lambda: printer.print_attribute(value))
    head, colon, body = text.partition(": ")
    if not colon:
        printer.print_string(text)
        return
    printer.print_string(head + ": ")
    print_wrapped(printer, body.removesuffix(">").split(", "))
    printer.print_string(">")


def _parse_value(parser: Parser, key: str, definition) -> Attribute:
    cls = _constraint_class(definition)
    if cls is not None and issubclass(cls, EnumAttribute):
        pos = parser.pos
        word = parser.parse_identifier_or_str_literal(f" (the value of {key})")
        values = {str(v.value): v for v in cls.enum_type}
        if word not in values:
            parser.raise_error(f"{key} '{word}' is not one of {', '.join(values)}", pos, parser.pos)
        return cls(values[word])
    if cls is DenseArrayBase and parser.parse_optional_punctuation("[") is not None:
        values: list[int] = []
        if parser.parse_optional_punctuation("]") is None:
            values = [parser.parse_integer(allow_boolean=False)]
            while parser.parse_optional_punctuation(",") is not None:
                values.append(parser.parse_integer(allow_boolean=False))
            parser.parse_punctuation("]")
        return DenseArrayBase.from_list(i64, values)
    return parser.parse_attribute()


class CustomSyntaxOp(IRDLOperation):
    """Base of ops that print and parse in the format described in this module."""

    PROPERTIES_ON_OWN_LINES: ClassVar[bool] = False

    # ------------------------------------------------------------------------------------------ print

    def _printed_properties(self) -> list[tuple[str, Attribute]]:
        definitions = self.get_irdl_definition().properties
        shown = [
            (key, value)
            for key, value in self.properties.items()
            if key != "operandSegmentSizes"
            and not (key in definitions and definitions[key].default_value == value)
        ]
        order = {key: i for i, key in enumerate(definitions)}
        return sorted(shown, key=lambda kv: (kv[0] in LAST_PROPERTIES, order.get(kv[0], len(order)), kv[0]))

    def _print_operands(self, printer: Printer) -> None:
        definitions = self.get_irdl_definition().operands
        keyword_groups = sum(isinstance(d, VarOperandDef) for _, d in definitions) > 1
        items: list[Callable[[], None]] = []
        for field, definition in definitions:
            value = getattr(self, field)
            if not isinstance(definition, VarOperandDef):
                items.append(lambda v=value: printer.print_operand(v))
                continue
            values = [] if value is None else [value] if isinstance(value, SSAValue) else list(value)
            if keyword_groups and values:

                def group(name=field, vs=values) -> None:
                    printer.print_string(name)
                    with printer.in_parens():
                        printer.print_list(vs, printer.print_operand)

                items.append(group)
            elif not keyword_groups:
                items.extend(lambda v=v: printer.print_operand(v) for v in values)
        if items:
            printer.print_string(" ")
            printer.print_list(items, lambda emit: emit())

    def _print_properties(self, printer: Printer) -> None:
        shown = self._printed_properties()
        if not shown:
            return
        definitions = self.get_irdl_definition().properties

        def entry(kv: tuple[str, Attribute]) -> None:
            printer.print_identifier_or_string_literal(kv[0])
            printer.print_string(" = ")
            _print_value(printer, kv[1], definitions.get(kv[0]))

        own_lines = [] if not self.PROPERTIES_ON_OWN_LINES else [
            kv for kv in shown if not isinstance(kv[1], BuiltinAttribute | EnumAttribute)
        ]
        inline = [kv for kv in shown if kv not in own_lines]
        printer.print_string(" {")
        print_wrapped(printer, [_rendered(printer, lambda kv=kv: entry(kv)) for kv in inline], indent=2)
        with printer.indented(2):
            for i, kv in enumerate(own_lines):
                printer.print_string("," if inline or i else "")
                printer.print_string("\n")
                entry(kv)
        printer.print_string("}")

    def _print_attributes(self, printer: Printer) -> None:
        """Discardable attributes in their generic spelling, after `attributes` (as MLIR prints them)."""
        if not self.attributes:
            return
        def entry(key: str, value: Attribute) -> None:
            printer.print_identifier_or_string_literal(key)
            if not isinstance(value, UnitAttr):
                printer.print_string(" = ")
                _print_generic(printer, value)

        printer.print_string(" attributes {")
        with printer.indented(2):
            for i, (key, value) in enumerate(self.attributes.items()):
                if i:
                    text = _rendered(printer, lambda: entry(key, value))
                    long = "\n" not in text and printer._current_column + 2 + len(text) > WRAP_COLUMN
                    printer.print_string(",\n" if long else ", ")
                entry(key, value)
        printer.print_string("}")

    def _print_signature(self, printer: Printer) -> None:
        """` : (inputs) -> outputs`, on a line of its own (and `-> outputs` on the next) when long."""
        inputs = _rendered(printer, lambda: printer.print_function_type(self.operand_types, ()))
        inputs = inputs.removesuffix(" -> ()")
        whole = _rendered(printer, lambda: printer.print_function_type(self.operand_types, self.result_types))
        outputs = whole[len(inputs):]
        with printer.indented(2):
            if self.PROPERTIES_ON_OWN_LINES or printer._current_column + 3 + len(whole) > WRAP_COLUMN:
                printer.print_string("\n: ")
            else:
                printer.print_string(" : ")
            printer.print_string(inputs, indent=0)
            if printer._current_column + len(outputs) > WRAP_COLUMN:
                printer.print_string("\n" + outputs.lstrip())
            else:
                printer.print_string(outputs, indent=0)

    def print(self, printer: Printer) -> None:
        self._print_operands(printer)
        self._print_properties(printer)
        self._print_attributes(printer)
        self._print_signature(printer)

    # ------------------------------------------------------------------------------------------ parse

    @classmethod
    def _parse_operands(cls, parser: Parser) -> list[tuple[str | None, list[UnresolvedOperand]]]:
        definitions = cls.get_irdl_definition().operands
        groups = [f for f, d in definitions if isinstance(d, VarOperandDef)]
        keywords = groups if len(groups) > 1 else []
        items: list[tuple[str | None, list[UnresolvedOperand]]] = []

        def item() -> bool:
            operand = parser.parse_optional_unresolved_operand()
            if operand is not None:
                items.append((None, [operand]))
                return True
            for keyword in keywords:
                if parser.parse_optional_keyword(keyword) is not None:
                    items.append((keyword, parser.parse_comma_separated_list(
                        parser.Delimiter.PAREN, parser.parse_unresolved_operand)))
                    return True
            return False

        if item():
            while parser.parse_optional_punctuation(",") is not None:
                if not item():
                    parser.raise_error(f"{cls.name}: expected an operand")
        return items

    @classmethod
    def _group_operands(
        cls, parser: Parser, items: list[tuple[str | None, list[UnresolvedOperand]]], start: int
    ) -> list[list[int] | int]:
        """Operand indices per operand definition (an int for a single operand, a list for a group)."""
        definitions = cls.get_irdl_definition().operands
        plain = [i for i, (name, _) in enumerate(items) if name is None]
        singles = [f for f, d in definitions if not isinstance(d, VarOperandDef)]
        groups = [f for f, d in definitions if isinstance(d, VarOperandDef)]
        flat_positions: dict[int, int] = {}
        position = 0
        for i, (_, operands) in enumerate(items):
            flat_positions[i] = position
            position += len(operands)
        layout: list[list[int] | int] = []
        if len(groups) <= 1:
            spare = len(plain) - len(singles)
            if spare < 0 or (groups and spare > 1 and isinstance(dict(definitions)[groups[0]], OptionalDef)):
                parser.raise_error(f"{cls.name}: wrong number of operands ({len(plain)})", start, parser.pos)
            if not groups and spare:
                parser.raise_error(f"{cls.name}: {len(plain)} operands, expected {len(singles)}", start, parser.pos)
            index = 0
            for field, definition in definitions:
                if isinstance(definition, VarOperandDef):
                    layout.append(list(range(index, index + spare)))
                    index += spare
                else:
                    layout.append(index)
                    index += 1
            return layout
        if len(plain) != len(singles):
            parser.raise_error(f"{cls.name}: {len(plain)} operands, expected {len(singles)}", start, parser.pos)
        named = {name: i for i, (name, _) in enumerate(items) if name is not None}
        plain_iter = iter(plain)
        for field, definition in definitions:
            if isinstance(definition, VarOperandDef):
                if field in named:
                    i = named[field]
                    layout.append(list(range(flat_positions[i], flat_positions[i] + len(items[i][1]))))
                else:
                    layout.append([])
            else:
                layout.append(flat_positions[next(plain_iter)])
        return layout

    @classmethod
    def _group_results(cls, parser: Parser, types: list[Attribute], pos: int) -> list[Attribute | list[Attribute]]:
        """Result types per result definition (one variadic group takes what the single ones leave)."""
        definitions = cls.get_irdl_definition().results
        variadic = [f for f, d in definitions if isinstance(d, VarResultDef)]
        spare = len(types) - (len(definitions) - len(variadic))
        if len(variadic) > 1 or spare < 0 or (not variadic and spare):
            parser.raise_error(f"{cls.name}: {len(types)} result types do not fit its results", pos, parser.pos)
        grouped: list[Attribute | list[Attribute]] = []
        index = 0
        for _, definition in definitions:
            if isinstance(definition, VarResultDef):
                grouped.append(types[index : index + spare])
                index += spare
            else:
                grouped.append(types[index])
                index += 1
        return grouped

    @classmethod
    def parse(cls, parser: Parser) -> CustomSyntaxOp:
        op_def = cls.get_irdl_definition()
        start = parser.pos
        items = cls._parse_operands(parser)
        layout = cls._group_operands(parser, items, start)
        properties: dict[str, Attribute] = {}
        if parser.parse_optional_punctuation("{") is not None:

            def entry() -> None:
                pos = parser.pos
                key = parser.parse_identifier_or_str_literal(" (a property name)")
                if key in properties:
                    parser.raise_error(f"{cls.name}: property '{key}' given twice", pos, parser.pos)
                parser.parse_punctuation("=")
                properties[key] = _parse_value(parser, key, op_def.properties.get(key))

            if parser.parse_optional_punctuation("}") is None:
                entry()
                while parser.parse_optional_punctuation(",") is not None:
                    entry()
                parser.parse_punctuation("}")
        for key, definition in op_def.properties.items():
            if key not in properties and not isinstance(definition, OptionalDef) and definition.default_value is not None:
                properties[key] = definition.default_value
        attributes = parser.parse_optional_attr_dict_with_keyword()
        parser.parse_punctuation(":")
        type_pos = parser.pos
        function_type = parser.parse_function_type()
        unresolved = [operand for _, operands in items for operand in operands]
        inputs = function_type.inputs.data
        if len(inputs) != len(unresolved):
            parser.raise_error(
                f"{cls.name}: {len(unresolved)} operands but {len(inputs)} operand types", type_pos, parser.pos
            )
        values = parser.resolve_operands(unresolved, inputs, start)
        operands = [[values[i] for i in entry] if isinstance(entry, list) else values[entry] for entry in layout]
        return cls.build(
            operands=operands,
            result_types=cls._group_results(parser, list(function_type.outputs.data), type_pos),
            properties=properties,
            attributes=attributes.data if isinstance(attributes, DictionaryAttr) else {},
        )


def upgrade_string_enums(root: Operation) -> None:
    """Text written before these properties were enums spelled them as strings (`act = "relu"` in the
    generic form): turn every such string naming a valid value into the enum attribute, in place."""
    for op in root.walk():
        if not isinstance(op, CustomSyntaxOp):
            continue
        definitions = op.get_irdl_definition().properties
        for key, value in list(op.properties.items()):
            cls = _constraint_class(definitions.get(key))
            if isinstance(value, StringAttr) and cls is not None and issubclass(cls, EnumAttribute):
                members = {str(m.value): m for m in cls.enum_type}
                if value.data in members:
                    op.properties[key] = cls(members[value.data])
