"""Parameterised targets: a target file as a template with declared parameters and PE types.

A target file may carry two keys beside the schema's (`targets/schema.py`):

* `parameters: {name: {default, min, max} | {default, choices} | {default, kind: grid, min, max}}`:
  what a target spec may set (`eyeriss?pe=16x16&glb_kib=256&pe_type=lightpe1`). A `grid` value is
  `RxC` (two integers); `pe_type` chooses an entry of `pe_types`.
* `pe_types: {name: {energy_pj, area_um2, clock_mhz, schemes, max_weight_bits, word_bits, ...}}`:
  the processing elements the array can be built with. The chosen one's entries (all but
  `word_bits` and `psum_bits`) replace the keys of `compute`, and its name becomes `compute.pe_type`.

Any string value of the form `${expression}` is replaced by the expression evaluated over the
parameters (`pe[0]`, `glb_kib * 1024 * 8 // 64`, `max(16, word_bits)`), where `word_bits` is the
chosen PE type's operand width and `psum_bits` the width of its partial sums (default
`2 * word_bits`, an integer accumulator; an `fp32` PE accumulates in 32 bits). Only arithmetic, comparisons, conditionals, indexing of grids and
`min` / `max` are allowed. The resolved data is then validated by the schema as any target, so an
invalid combination is the schema's one-line error, prefixed with the spec.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from quantloop.errors import QuantloopError

TEMPLATE_KEYS = ("parameters", "pe_types")
PE_TYPE_PARAMETER = "pe_type"
_EXPR = re.compile(r"^\$\{(.+)\}$", re.S)
_GRID = re.compile(r"^(\d+)x(\d+)$")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Div: operator.truediv, ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_CALLS = {"min": min, "max": max}


def split_spec(text: str) -> tuple[str, dict[str, str]]:
    """`'eyeriss?pe=16x16&glb_kib=256'` -> `('eyeriss', {'pe': '16x16', 'glb_kib': '256'})`."""
    base, sep, query = text.partition("?")
    if not sep:
        return text, {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise QuantloopError(f"target {text!r}: expected NAME?key=value&key=value") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise QuantloopError(f"target {text!r}: parameter {key} given twice")
        values[key] = value
    return base, values


def canonical_query(values: Mapping[str, str]) -> str:
    return "&".join(f"{k}={values[k]}" for k in sorted(values))


def _parameter_value(name: str, decl: Mapping[str, Any], raw: Any) -> Any:
    """A parameter's value from its text (or its default), checked against its declaration."""
    kind = decl.get("kind", "choice" if "choices" in decl else "int")
    text = str(raw).strip()
    if kind == "choice":
        choices = [str(c) for c in decl["choices"]]
        if text not in choices:
            raise ValueError(f"parameter {name}: {text!r} is not one of {', '.join(choices)}")
        return text
    if kind == "grid":
        match = _GRID.match(text.lower())
        if match is None:
            raise ValueError(f"parameter {name}: {text!r} is not ROWSxCOLS, e.g. 16x16")
        value = (int(match.group(1)), int(match.group(2)))
    elif kind in ("int", "float"):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"parameter {name}: {text!r} is not {'an integer' if kind == 'int' else 'a number'}") from None
    else:
        raise ValueError(f"parameters.{name}.kind: {kind!r} is not int, float, grid or choice")
    for part in value if isinstance(value, tuple) else (value,):
        if "min" in decl and part < decl["min"]:
            raise ValueError(f"parameter {name}: {text} is below the minimum {decl['min']}")
        if "max" in decl and part > decl["max"]:
            raise ValueError(f"parameter {name}: {text} is above the maximum {decl['max']}")
    return value


def _evaluate(node: ast.AST, names: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"unknown name {node.id!r} (known: {', '.join(sorted(names))})")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError(f"{ast.unparse(node)!r}: arithmetic needs numbers")  # no 'x' * 10**9 strings
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, names)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return _COMPARE[type(node.ops[0])](_evaluate(node.left, names), _evaluate(node.comparators[0], names))
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, names) else node.orelse, names)
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, names)[_evaluate(node.slice, names)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS and not node.keywords:
        return _CALLS[node.func.id](*(_evaluate(a, names) for a in node.args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed (arithmetic, comparisons, min/max, indexing only)")


def _substitute(data: Any, names: Mapping[str, Any], path: str) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, names, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, names, f"{path}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str):
        match = _EXPR.match(data.strip())
        if match:
            try:
                value = _evaluate(ast.parse(match.group(1).strip(), mode="eval"), names)
            except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, SyntaxError) as err:
                raise ValueError(f"{path}: {data}: {err}") from None
            return value
    return data


def is_template(data: object) -> bool:
    return isinstance(data, dict) and any(k in data for k in TEMPLATE_KEYS)


def parameter_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: decl.get("default") for name, decl in (data.get("parameters") or {}).items()}


def resolve(data: object, values: Mapping[str, str], source: str) -> object:
    """The target data with `values` (parameter texts) applied; the data itself when it is no template.

    Errors are one line: `<source>: <what>`."""
    if not is_template(data):
        if values:
            raise QuantloopError(f"{source}: this target declares no parameters (given: {', '.join(sorted(values))})")
        return data
    assert isinstance(data, dict)
    declared = data.get("parameters") or {}
    pe_types = data.get("pe_types") or {}
    if not isinstance(declared, dict) or not isinstance(pe_types, dict):
        raise QuantloopError(f"{source}: parameters and pe_types must be mappings")
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise QuantloopError(f"{source}: unknown parameter {unknown[0]} (known: {', '.join(sorted(declared)) or 'none'})")
    try:
        names: dict[str, Any] = {}
        for name, decl in declared.items():
            if not isinstance(decl, dict) or "default" not in decl:
                raise ValueError(f"parameters.{name}: expected a mapping with a default")
            names[name] = _parameter_value(name, decl, values.get(name, decl["default"]))
        resolved = {k: v for k, v in data.items() if k not in TEMPLATE_KEYS}
        chosen = names.get(PE_TYPE_PARAMETER)
        if pe_types:
            if chosen not in pe_types:
                raise ValueError(f"parameter {PE_TYPE_PARAMETER}: {chosen!r} is not one of {', '.join(pe_types)}")
            pe = dict(pe_types[chosen])
            names["word_bits"] = pe.pop("word_bits", 8)
            names["psum_bits"] = pe.pop("psum_bits", 2 * names["word_bits"])
            compute = dict(resolved.get("compute") or {})
            compute.update(pe)
            compute["pe_type"] = chosen
            resolved["compute"] = compute
        return _substitute(resolved, names, "")
    except ValueError as err:
        raise QuantloopError(f"{source}: {err}") from None


__all__ = ["split_spec", "canonical_query", "resolve", "is_template", "parameter_defaults", "TEMPLATE_KEYS"]
