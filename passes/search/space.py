"""The search space of `qnn-search-bits`: per compute layer weight bits and activation bits.

A layer's *activation bits* are the bits of the tensor it writes (its output after the fused
activation), exactly as in `qnn-assign-bits`' per-layer file: they are the input bits of the
layers that read it. Other tensors follow from those:
- the model input keeps `input_bits` (8, assign-bits' default);
- ops that only move values (maxpool, reshape, flatten, identity, dropout) keep their input's
  bits and codes (no re-quantization);
- every other op (add, avg / global pools, concat, relu, clip, softmax) writes at the widest
  bits among its inputs (a residual add never narrows its wider operand); the bits file names
  such ops with that width so that `--bits-file` reproduces the candidate exactly (unnamed
  ones get the default activation bits, as assign-bits gives them).

The genes of a candidate are `[w_0, a_0, w_1, a_1, ...]` in layer order, then, only when the target
executes more than one weight scheme (int plus shift-add PEs, `engine.target_schemes`), one scheme
gene per layer `[s_0, s_1, ...]` (indices into `schemes`): the bits file carries each layer's
scheme and `qnn-calibrate` encodes each layer's weights with it. Single-scheme targets have no
scheme genes at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from quantloop.errors import QuantloopError
from quantloop.ir.builder import main_func
from quantloop.ir.ops import (
    MOVES_VALUES,
    ConstantOp,
    Conv2dOp,
    GemmOp,
    MatMulOp,
    QuantizeOp,
    DequantizeOp,
)
from quantloop.ir.types import INT_BITS, IntType, element_type

COMPUTE = (Conv2dOp, GemmOp, MatMulOp)
DEFAULT_BITS = 8
_RANGE = re.compile(r"^\s*(\d+)\s*(?:\.\.|-|:)\s*(\d+)\s*$")


def parse_bits_range(text: str) -> tuple[int, ...]:
    """`2..8` -> (2, 3, ..., 8): the legal storage widths in that closed range; `4,6,8` lists them."""
    if "," in text:
        try:
            widths = tuple(sorted({int(part) for part in text.split(",")}))
        except ValueError:
            raise QuantloopError(f"--bits-range '{text}': expected LOW..HIGH or a list such as 4,6,8") from None
        illegal = [b for b in widths if b not in INT_BITS]
        if illegal:
            legal = ", ".join(map(str, sorted(INT_BITS)))
            raise QuantloopError(f"--bits-range '{text}': {illegal[0]} is not a legal bit-width ({legal})")
        return widths
    match = _RANGE.match(text)
    if match is None:
        raise QuantloopError(f"--bits-range '{text}': expected LOW..HIGH (such as 2..8) or a list such as 4,6,8")
    low, high = int(match[1]), int(match[2])
    if low > high:
        raise QuantloopError(f"--bits-range '{text}': {low} is larger than {high}")
    widths = tuple(b for b in sorted(INT_BITS) if low <= b <= high)
    if not widths or low < min(INT_BITS):
        legal = ", ".join(map(str, sorted(INT_BITS)))
        raise QuantloopError(f"--bits-range '{text}': bit-widths must be among {legal}")
    return widths


@dataclass(frozen=True)
class ComputeLayer:
    """One conv / gemm / matmul, with the ONNX names of its tensors in the exported float model."""

    name: str
    weight: str
    bias: str | None
    input: str
    output: str
    weight_shape: tuple[int, ...]
    channel_axis: int

    @property
    def weight_count(self) -> int:
        return int(np.prod(self.weight_shape))


@dataclass(frozen=True)
class Quantizer:
    """A fake-quantization point on an activation tensor: its ONNX name, signedness, bits rule.

    `rule` is ("input",), ("layer", i), or ("max", (tensor, ...)) / ("default",).
    """

    tensor: str
    signed: bool
    rule: tuple


@dataclass
class SearchSpace:
    """Everything a candidate's bits are resolved against; built once per search."""

    model: onnx.ModelProto
    layers: list[ComputeLayer]
    quantizers: list[Quantizer]
    named_ops: dict[str, str]
    widths: tuple[int, ...]
    schemes: tuple[str, ...] = ("int",)
    input_bits: int = DEFAULT_BITS
    aliases: dict[str, str] = field(default_factory=dict)
    quantizer_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.quantizer_index = {q.tensor: i for i, q in enumerate(self.quantizers)}

    @property
    def per_layer_schemes(self) -> bool:
        """Whether candidates carry a scheme gene per layer (the target executes several schemes)."""
        return len(self.schemes) > 1

    @property
    def n_genes(self) -> int:
        n = len(self.layers)
        return 2 * n + (n if self.per_layer_schemes else 0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Gene bounds as indices into `widths` (and `schemes` for the scheme genes)."""
        upper = np.full(self.n_genes, len(self.widths) - 1)
        if self.per_layer_schemes:
            upper[2 * len(self.layers) :] = len(self.schemes) - 1
        return np.zeros(self.n_genes, dtype=int), upper

    def encode(self, weights: list[int], activations: list[int], scheme: "str | Sequence[str]" = "int") -> np.ndarray:
        """Genes of a candidate; `scheme` is one scheme for every layer or one per layer."""
        n = len(self.layers)
        genes = np.empty(self.n_genes, dtype=int)
        genes[0 : 2 * n : 2] = [self.widths.index(b) for b in weights]
        genes[1 : 2 * n : 2] = [self.widths.index(b) for b in activations]
        if self.per_layer_schemes:
            per_layer = [scheme] * n if isinstance(scheme, str) else list(scheme)
            genes[2 * n :] = [self.schemes.index(s) for s in per_layer]
        return genes

    def uniform(self, w: int, a: int, scheme: str = "int") -> np.ndarray:
        return self.encode([w] * len(self.layers), [a] * len(self.layers), scheme)

    def decode(self, genes) -> "Config":
        genes = np.asarray(genes).round().astype(int)
        n = len(self.layers)
        weights = tuple(self.widths[i] for i in genes[0 : 2 * n : 2])
        activations = tuple(self.widths[i] for i in genes[1 : 2 * n : 2])
        if self.per_layer_schemes:
            return Config(weights, activations, tuple(self.schemes[i] for i in genes[2 * n :]))
        return Config(weights, activations, self.schemes[0])

    def tensor_bits(self, config: "Config") -> dict[str, int]:
        """Bits of every quantized activation tensor under `config` (quantizers are in graph order)."""
        bits: dict[str, int] = {}
        for q in self.quantizers:
            kind = q.rule[0]
            if kind == "input":
                bits[q.tensor] = self.input_bits
            elif kind == "layer":
                bits[q.tensor] = config.activations[q.rule[1]]
            elif kind == "max":
                bits[q.tensor] = max(bits[t] for t in q.rule[1])
            else:
                bits[q.tensor] = DEFAULT_BITS
        return bits

    def source_tensor(self, tensor: str) -> str:
        """The quantized tensor whose codes `tensor` carries (itself, or the input of pass-through ops)."""
        return self.aliases.get(tensor, tensor)

    def layer_bits(self, config: "Config") -> list[tuple[int, int, int]]:
        """(weight, input, output) bits of every compute layer."""
        bits = self.tensor_bits(config)
        return [
            (config.weights[i], bits[self.source_tensor(layer.input)], bits[layer.output])
            for i, layer in enumerate(self.layers)
        ]

    def config_from_table(self, table: Mapping[str, Any], where: str) -> "Config":
        """The candidate a bits file describes (`qnn-assign-bits` entries: weights / activations per
        compute layer, default 8; named ops must carry the bits the candidate gives them)."""
        weights, activations, schemes = [], [], []
        for layer in self.layers:
            entry = table.get(layer.name)
            w = getattr(entry, "weights", None) if entry is not None else None
            a = getattr(entry, "activations", None) if entry is not None else None
            s = getattr(entry, "scheme", None) if entry is not None else None
            weights.append(DEFAULT_BITS if w is None else w)
            activations.append(DEFAULT_BITS if a is None else a)
            schemes.append(self.schemes[0] if s is None else s)
        for bits in (*weights, *activations):
            if bits not in self.widths:
                raise QuantloopError(f"{where}: {bits}-bit values are outside the searchable widths {list(self.widths)}")
        outside = [s for s in schemes if s not in self.schemes]
        if outside:
            raise QuantloopError(f"{where}: scheme {outside[0]} is outside the target's schemes {list(self.schemes)}")
        config = Config(tuple(weights), tuple(activations), tuple(schemes) if self.per_layer_schemes else schemes[0])
        derived = self.tensor_bits(config)
        for name, tensor in self.named_ops.items():
            entry = table.get(name)
            given = getattr(entry, "activations", None) if entry is not None else None
            if given is not None and given != derived[tensor]:
                raise QuantloopError(f"{where}: op '{name}' at {given} bits: its inputs give it {derived[tensor]}")
        unknown = sorted(set(table) - {l.name for l in self.layers} - set(self.named_ops))
        if unknown:
            raise QuantloopError(f"{where}: no layer named {', '.join(unknown)} in the model")
        return config

    def bits_file(self, config: "Config") -> dict[str, dict[str, Any]]:
        """The `--bits-file` table that makes qnn-assign-bits give exactly these bits (and, where the
        space has scheme genes, each layer's weight scheme)."""
        table: dict[str, dict[str, Any]] = {}
        for i, layer in enumerate(self.layers):
            table[layer.name] = {"weights": config.weights[i], "activations": config.activations[i]}
            if self.per_layer_schemes:
                table[layer.name]["scheme"] = config.layer_scheme(i)
        bits = self.tensor_bits(config)
        for name, tensor in self.named_ops.items():
            table[name] = {"activations": bits[tensor]}
        return table


@dataclass(frozen=True)
class Config:
    """One candidate: weight and activation bits per compute layer, and the weight scheme — one
    name for every layer, or a tuple with one per layer (a tuple whose entries are all equal is
    stored as that one name, so equal candidates compare and cache equal)."""

    weights: tuple[int, ...]
    activations: tuple[int, ...]
    scheme: str | tuple[str, ...] = "int"

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, str):
            schemes = tuple(self.scheme)
            object.__setattr__(self, "scheme", schemes[0] if len(set(schemes)) == 1 else schemes)

    def layer_scheme(self, index: int) -> str:
        return self.scheme if isinstance(self.scheme, str) else self.scheme[index]

    @property
    def calibration_scheme(self) -> str:
        """`qnn-calibrate`'s scheme option for this candidate: its one scheme, or int when layers
        differ (the bits file then names every layer's scheme, which wins)."""
        return self.scheme if isinstance(self.scheme, str) else "int"

    def label(self) -> str:
        if len(set(self.weights)) == 1 and len(set(self.activations)) == 1:
            text = f"w{self.weights[0]}a{self.activations[0]}"
        else:
            text = "mixed"
        if isinstance(self.scheme, tuple):
            return f"{text}:mixed-scheme"
        return text if self.scheme == "int" else f"{text}:{self.scheme}"


def _weight_axis(op) -> int:
    if isinstance(op, Conv2dOp):
        return 0
    if isinstance(op, GemmOp):
        return 0 if op.trans_b else 1
    return len(op.b.type.get_shape()) - 1


def build_space(module: ModuleOp, widths: tuple[int, ...], schemes: tuple[str, ...] = ("int",)) -> SearchSpace:
    """The space of a canonicalized float qnn module (not modified: a clone is assigned w8a8 to learn
    which tensors are signed, and exported to float ONNX with every tensor named)."""
    from quantloop.runtime.onnx_export import OnnxExporter
    from quantloop.ir import make_context
    from quantloop.passes.assign_bits import AssignBitsPass

    assigned = module.clone()
    for op in assigned.walk():
        if isinstance(op, (QuantizeOp, DequantizeOp)):
            raise QuantloopError(
                "qnn-search-bits: the model is already quantized (QDQ / QONNX); the search needs a float model"
            )
    AssignBitsPass(bits=f"w{DEFAULT_BITS}a{DEFAULT_BITS}").apply(make_context(), assigned)
    exporter = OnnxExporter(assigned)
    model = exporter.export("quantloop_search")
    names = exporter.names
    main = main_func(assigned)

    layers: list[ComputeLayer] = []
    quantizers: list[Quantizer] = []
    named_ops: dict[str, str] = {}
    aliases: dict[str, str] = {}
    seen: set[str] = set()
    for arg in main.body.block.args:
        quantizers.append(Quantizer(names[arg], element_type(arg).signed, ("input",)))
    for op in main.body.block.ops:
        if isinstance(op, (ConstantOp, func.ReturnOp)):
            continue
        out = op.results[0]
        elem = element_type(out)
        if not isinstance(elem, IntType):
            raise QuantloopError(f"qnn-search-bits: {op.name} result has type {elem}, which the search cannot quantize")
        tensor = names[out]
        if isinstance(op, COMPUTE):
            x, w, b = (op.input, op.weight, op.bias) if isinstance(op, Conv2dOp) else (op.a, op.b, getattr(op, "c", None))
            if not isinstance(w.owner, ConstantOp):
                raise QuantloopError(f"qnn-search-bits: layer '{op.node_name}' has weights that are not a constant")
            name = op.node_name or f"{op.name.split('.')[-1]}_{len(layers) + 1}"
            if name in seen:
                raise QuantloopError(f"qnn-search-bits: two layers are named '{name}'; the bits file needs unique names")
            seen.add(name)
            bias = names[b] if b is not None and isinstance(b.owner, ConstantOp) else None
            layers.append(
                ComputeLayer(name, names[w], bias, names[x], tensor, tuple(w.type.get_shape()), _weight_axis(op))
            )
            quantizers.append(Quantizer(tensor, elem.signed, ("layer", len(layers) - 1)))
        elif isinstance(op, MOVES_VALUES):
            aliases[tensor] = aliases.get(names[op.operands[0]], names[op.operands[0]])
        else:
            inputs = tuple(
                aliases.get(names[v], names[v]) for v in op.operands if not isinstance(v.owner, ConstantOp)
            )
            if op.node_name:
                named_ops[op.node_name] = tensor
                quantizers.append(Quantizer(tensor, elem.signed, ("max", inputs)))
            else:
                quantizers.append(Quantizer(tensor, elem.signed, ("default",)))
    if not layers:
        raise QuantloopError("qnn-search-bits: the model has no conv / gemm / matmul layer to search bits for")
    return SearchSpace(model, layers, quantizers, named_ops, widths, schemes, aliases=aliases)
