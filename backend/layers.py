"""What the backend needs of each mapped layer, read once from the accel module.

Every `accel.layer` must carry a mapping (run `accel-map` first). Its cost is re-evaluated with the cost
model from the problem, bits and mapping — the per-level tile sizes, reads, fills and updates the
schedule prints come from that evaluation; the mapper's own `#accel.cost` adds whether the mapping is
proven optimal and how many mappings were considered.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from quantloop.bits import FLOAT_SCHEME
from quantloop.backend.weights import QuantizedWeights, WeightLayer, quantize_bias, uniform_codes
from quantloop.mapping import Mapping
from quantloop.costmodel.model import CostResult, evaluate
from quantloop.problem import DATASPACE_DIMS, DATASPACES, DIMS, Bits, Problem
from quantloop.errors import QuantloopError
from quantloop.ir import accel
from quantloop.ir import quantization as q
from quantloop.ir.ops import ConstantOp
from quantloop.ir.types import UniformType, element_type
from quantloop.targets.arch import Arch


@dataclass(frozen=True)
class OperandInfo:
    """Bits, scheme and signedness of one data space (accel's `uint` is scheme int, unsigned)."""

    bits: int
    scheme: str  # int | pot | pot2 | float
    signed: bool


@dataclass(frozen=True)
class LayerRecord:
    """One mapped layer: its problem, bits, mapping, re-evaluated cost, mapper statistics (None when the
    module carries no `#accel.cost`) and its constant weights (None when the weight operand is computed at
    run time; `weight_producer` then names the op that computes it)."""

    name: str
    kind: str
    problem: Problem
    bits: Bits
    operands: dict[str, OperandInfo]
    mapping: Mapping
    cost: CostResult
    optimal: bool | None
    mappings_considered: int | None
    weights: WeightLayer | None
    weight_producer: str | None = None


def tile_sizes(problem: Problem, mapping: Mapping) -> list[dict[str, int]]:
    """Values of each data space held by one instance of each level: the footprint of every loop at
    that level and below (temporal, fan-out, inner levels); inputs with the sliding-window halo."""
    sizes = []
    for l in range(len(mapping.levels)):
        ext = {d: 1 for d in DIMS}
        for lvl in mapping.levels[l:]:
            for loops in (lvl.temporal, lvl.spatial_x, lvl.spatial_y):
                for d, f in loops:
                    ext[d] *= f
        width, height = problem.input_window(ext["P"], ext["Q"], ext["R"], ext["S"])
        sizes.append(
            {
                "Weights": prod(ext[d] for d in DATASPACE_DIMS["Weights"]),
                "Inputs": ext["N"] * ext["G"] * ext["C"] * width * height,
                "Outputs": prod(ext[d] for d in DATASPACE_DIMS["Outputs"]),
            }
        )
    return sizes


def _operand_info(ob: accel.OperandBits) -> OperandInfo:
    scheme = "int" if ob.scheme in ("int", "uint") else ob.scheme
    return OperandInfo(ob.bits, scheme, ob.signed)


def canonical_weight_view(op: accel.LayerOp, shape: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """(canonical dims, extents, names of the model's axes) of a layer's weight tensor of ``shape``.

    The canonical view is a pure reshape of the model's layout (no reordering), so tiles keep the
    model's element order.
    """
    p = op.problem.data
    if op.kind.data in ("conv", "depthwise"):
        return ("G", "M", "C", "S", "R"), (p.G, p.M, p.C, p.S, p.R), ("M", "C/g", "kH", "kW")
    trans_b = op.trans_b is not None and bool(op.trans_b.value.data)
    if len(shape) == 2 and trans_b:
        return ("M", "C"), (p.M, p.C), ("N", "K")
    if len(shape) == 1:
        return ("C",), (p.C,), ("K",)
    if len(shape) == 2:
        return ("C", "M"), (p.C, p.M), ("K", "N")
    batch = tuple(f"B{i}" for i in range(len(shape) - 2))
    return ("G", "C", "M"), (p.G, p.C, p.M), (*batch, "K", "N")


def _constant(value) -> Operation | None:
    owner = value.owner
    return owner if isinstance(owner, ConstantOp) else None


def quantized_constant(constant) -> QuantizedWeights:
    """Codes and quantization parameters of a calibrated weight constant (``ir.quantization.weight_quantization``).

    Calibrated constants hold their codes; a float constant with a quantized type is encoded here.
    """
    wq = q.weight_quantization(constant)
    array = constant.array
    narrow = wq.narrow_range
    if np.issubdtype(array.dtype, np.integer):
        codes = array
        # A quantized model's own codes may use the most negative code, which narrow range excludes.
        narrow = narrow and not (codes.size and codes.min() < q.qrange(wq.bits, wq.signed, True)[0])
    elif wq.scheme == "int":
        codes = uniform_codes(array, wq.scales, wq.zero_points, wq.bits, wq.signed, wq.axis, wq.narrow_range)
    else:
        codes = wq.encode(array)
    return QuantizedWeights(codes, wq.bits, wq.scheme, wq.signed, wq.scales, wq.zero_points, wq.axis, bool(narrow))


def _input_scale(op: accel.LayerOp) -> float | None:
    elem = element_type(op.input)
    return float(elem.scale) if isinstance(elem, UniformType) else None


def activation_quantization(op: accel.LayerOp) -> dict | None:
    """Bits, signedness, scale and zero point of the layer's input and output (per-tensor uniform types)."""
    out = {}
    for key, value in (("input", op.input), ("output", op.output)):
        elem = element_type(value)
        if isinstance(elem, UniformType):
            out[key] = {"bits": elem.bits, "signed": elem.signed, "scale": float(elem.scale), "zero_point": elem.zero_point}
    return out or None


def _weight_layer(op: accel.LayerOp, dram_loops) -> WeightLayer | None:
    const = _constant(op.weight)
    if const is None:
        return None
    name = op.label
    is_float = op.bits.data.weights.scheme == FLOAT_SCHEME
    weights = QuantizedWeights.float32(const.array) if is_float else quantized_constant(const)
    dims, extents, layout = canonical_weight_view(op, tuple(weights.codes.shape))
    bias = bias_scales = None
    if op.bias is not None and is_float:
        bias_const = _constant(op.bias)
        if bias_const is None:
            raise QuantloopError(f"layer {name}: the bias must be a constant to be stored")
        bias = np.asarray(bias_const.array, dtype=np.float32).ravel()
    elif op.bias is not None:
        bias_const = _constant(op.bias)
        in_scale = _input_scale(op)
        if bias_const is None or in_scale is None:
            raise QuantloopError(f"layer {name}: the bias must be a constant and the input calibrated to store an int32 bias")
        bias_values = np.asarray(bias_const.array, dtype=np.float32).ravel()
        w_scales = weights.scales
        if w_scales.size not in (1, bias_values.size):
            raise QuantloopError(
                f"layer {name}: {bias_values.size} bias values but {w_scales.size} weight scales; cannot store the bias as int32"
            )
        bias, bias_scales = quantize_bias(bias_values, w_scales, in_scale, name)
    return WeightLayer(name, weights, layout, dims, extents, tuple(dram_loops), bias, bias_scales,
                       activation_quantization(op))


def collect_layers(accel_module: ModuleOp, target: Arch) -> list[LayerRecord]:
    records = []
    for op in accel.layers(accel_module):
        name = op.label
        if op.mapping is None:
            raise QuantloopError(f"layer {name}: has no mapping; run accel-map before writing artefacts")
        mapping = op.mapping.to_costmodel()
        if len(mapping.levels) != target.num_levels:
            raise QuantloopError(
                f"layer {name}: its mapping has {len(mapping.levels)} levels but target {target.name} has {target.num_levels}"
            )
        problem = op.problem.to_costmodel(name)
        bits = op.bits.to_costmodel()
        operands = {ds: _operand_info(op.bits.data.of(ds)) for ds in DATASPACES}
        cost = evaluate(target, problem, mapping, bits, check=False)
        mapper_cost = op.cost.data if op.cost is not None else None
        weights = _weight_layer(op, mapping.levels[0].temporal)
        producer = None
        if weights is None:
            owner = op.weight.owner
            producer = owner.name if isinstance(owner, Operation) else "a function argument"
        records.append(
            LayerRecord(
                name, op.kind.data.value, problem, bits, operands, mapping, cost,
                None if mapper_cost is None else mapper_cost.optimal,
                None if mapper_cost is None else mapper_cost.mappings_considered,
                weights,
                producer,
            )
        )
    return records
