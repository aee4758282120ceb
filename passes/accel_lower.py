"""`accel-lower{target=eyeriss}`: every qnn.conv2d / qnn.gemm / qnn.matmul becomes an `accel.layer`.

Problem (Timeloop's conv problem, see `quantloop.ir.accel`):
- conv: G = group, C and M per group, P/Q = output width/height, R/S = kernel width/height,
  Wstride/Wdilation from the width axis and Hstride/Hdilation from the height axis (P pairs with R
  and Wstride, as in the Timeloop exercises). Depthwise (C per group = 1, group > 1) is kind
  `depthwise`. Padding does not change the problem (Timeloop ignores it); it stays in `pads`.
- gemm / matmul: a 1×1 conv with N = rows of the (transposed) left operand, C = inner size,
  M = columns; a matmul's leading dims fold into N, a batched right operand puts its batch into G.

Bits come from the element types: weights from the weight operand, Inputs from the input,
Outputs from the result (`!qnn.int` / `!qnn.uniform` → `int` or `uint`, `!qnn.pot` → `pot`,
`!qnn.pot2` → `pot2`). A layer left all in f32 runs on float PEs (`#accel.bits<W = 32 : float, ...>`) when
the target's PEs execute float (the `fp32` PE type); elsewhere a float operand is an error that says to
run qnn-assign-bits first, and a layer mixing float and quantized operands is refused.

Partial sums: option `psum` (`quantloop compile --psum-bits`, `CompileOptions.psum_bits`) is recorded
in every layer's `#accel.bits` (`psum = outputs`, printed only when not the default) and so reaches the
mapper, the cost, the emitted Timeloop files and the mapper cache key: "accumulator" (default) stores
them at the accumulator width (`quantloop.problem.Bits.psum`), "outputs" at the Outputs width, as the
quantization fork of Timeloop that Klhufek et al. used.

A bit-width wider than the word of any storage level is an error naming the layer, the level and
both widths (the cost model's rule, from the fork: even a level that bypasses the data space). Every other op of the function (pools, add, reshape, concat,
softmax, relu, quantize...) stays a qnn op and is marked `accel.host` (see `host_ops`); constants
and the return stay as they are. The module gets `accel.target = #accel.target<name, hash>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import Float32Type, ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from quantloop.bits import FLOAT_BITS, FLOAT_SCHEME, PSUM_MODES
from quantloop.errors import QuantloopError
from quantloop.ir.accel import (
    SourceOp,
    SourceOpAttr,
    HOST_ATTR,
    TARGET_ATTR,
    BitsAttr,
    LayerBits,
    LayerOp,
    OperandBits,
    ProblemAttr,
    ProblemShape,
    TargetAttr,
    TargetRef,
)
from quantloop.ir.ops import ConstantOp, Conv2dOp, GemmOp, MatMulOp
from quantloop.ir.types import IntType, Pot2Type, PotType, UniformPerAxisType, UniformType, element_type


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _operand_bits(value: SSAValue, layer: str, what: str) -> OperandBits:
    elem = element_type(value)
    if isinstance(elem, Float32Type):
        return OperandBits(FLOAT_BITS[0], FLOAT_SCHEME)
    if isinstance(elem, PotType):
        return OperandBits(elem.bits, "pot")
    if isinstance(elem, Pot2Type):
        return OperandBits(elem.bits, "pot2")
    if isinstance(elem, (IntType, UniformType, UniformPerAxisType)):
        return OperandBits(elem.bits, "int" if elem.signed else "uint")
    raise QuantloopError(
        f"accel-lower: layer '{layer}': {what} have element type {elem}, neither quantized nor float32; "
        "run qnn-assign-bits (or pass --bits) before accel-lower"
    )


def _conv_problem(op: Conv2dOp) -> tuple[str, ProblemShape]:
    n, _, _, _ = _shape(op.input)
    m, cg, kh, kw = _shape(op.weight)
    _, _, oh, ow = _shape(op.output)
    g = op.group
    (sh, sw), (dh, dw) = op.strides, op.dilations
    shape = ProblemShape(N=n, G=g, C=cg, M=m // g, P=ow, Q=oh, R=kw, S=kh, Hstride=sh, Wstride=sw, Hdilation=dh, Wdilation=dw)
    return ("depthwise" if g > 1 and cg == 1 else "conv"), shape


def _gemm_problem(op: GemmOp) -> ProblemShape:
    a = _shape(op.a)
    rows, inner = (a[1], a[0]) if op.trans_a else (a[0], a[1])
    cols = _shape(op.output)[1]
    return ProblemShape(N=rows, C=inner, M=cols)


def _matmul_problem(op: MatMulOp, layer: str) -> ProblemShape:
    a, b, out = _shape(op.a), _shape(op.b), _shape(op.output)
    inner = a[-1]
    cols = 1 if len(b) == 1 else b[-1]
    if len(b) <= 2:
        rows = math.prod(a[:-1]) if len(a) > 1 else 1
        return ProblemShape(N=rows, C=inner, M=cols)
    batch = out[:-2]
    if len(a) < 3 or tuple(a[:-2]) != tuple(batch):
        raise QuantloopError(
            f"accel-lower: layer '{layer}': a batched qnn.matmul whose left operand {list(a)} does not carry the "
            f"full batch {list(batch)} of the right operand {list(b)} is not supported"
        )
    return ProblemShape(N=a[-2], G=math.prod(batch), C=inner, M=cols)


def check_bits_fit(arch, layer: str, bits: LayerBits) -> None:
    """The cost model's rule (`costmodel.checks.check_bits`), with the layer named in the message."""
    from quantloop.costmodel.checks import check_bits

    try:
        check_bits(arch, BitsAttr(bits).to_costmodel())
    except QuantloopError as err:
        raise QuantloopError(f"accel-lower: layer '{layer}': {err}") from err


def _layer_attrs(op: Operation) -> dict[str, Attribute]:
    """The original operator's attributes the backend needs (all but the name)."""
    keys = ("strides", "pads", "dilations", "group", "act_min", "act_max", "trans_a", "trans_b", "alpha", "beta")
    return {k: op.properties[k] for k in keys if k in op.properties}


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def lower_op(op: Operation, arch, name: str, psum: str = PSUM_MODES[0]) -> LayerOp:
    """The accel.layer for one qnn.conv2d / gemm / matmul (not inserted); `psum`: how its partial sums
    are stored (`quantloop.problem.Bits.psum`)."""
    if isinstance(op, Conv2dOp):
        kind, shape = _conv_problem(op)
        x, w, bias = op.input, op.weight, op.bias
    elif isinstance(op, GemmOp):
        kind, shape = "gemm", _gemm_problem(op)
        x, w, bias = op.a, op.b, op.c
    elif isinstance(op, MatMulOp):
        kind, shape = "gemm", _matmul_problem(op, name)
        x, w, bias = op.a, op.b, None
    else:
        raise TypeError(f"lower_op: {op.name} is not a compute op")
    operands = {"weights": w, "inputs": x, "outputs": op.results[0]}
    found = {what: _operand_bits(value, name, what) for what, value in operands.items()}
    floats = [what for what, b in found.items() if b.scheme == FLOAT_SCHEME]
    if floats and (len(floats) < len(found) or arch.compute.unsupported(FLOAT_BITS[0], FLOAT_SCHEME) is not None):
        what = floats[0]
        raise QuantloopError(
            f"accel-lower: layer '{name}': {what} have element type {element_type(operands[what])}, not a quantized type; "
            "run qnn-assign-bits (or pass --bits) before accel-lower"
            + ("" if len(floats) < len(found) else f" (the PEs of target {arch.name} do not execute float layers)")
        )
    bits = LayerBits(found["weights"], found["inputs"], found["outputs"], psum)
    check_bits_fit(arch, name, bits)
    extra = _layer_attrs(op)
    extra["source"] = SourceOpAttr(SourceOp(op.name))
    return LayerOp(
        x, w, bias, op.results[0].type, name=name, kind=kind, problem=ProblemAttr(shape), bits=BitsAttr(bits),
        act=getattr(op, "act", "none"), extra=extra,
    )


COMPUTE_OPS = (Conv2dOp, GemmOp, MatMulOp)


@dataclass(frozen=True)
class AccelLowerPass(ModulePass):
    """Lower qnn compute ops to accel.layer for `target` (a built-in name, plug-in name or YAML path)."""

    name = "accel-lower"

    target: str = "eyeriss"
    psum: str = PSUM_MODES[0]
    """How partial sums are stored (`quantloop.problem.Bits.psum`): "accumulator" or "outputs"."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from quantloop.targets.registry import load_target

        if self.psum not in PSUM_MODES:
            raise QuantloopError(f"accel-lower: psum must be one of {', '.join(PSUM_MODES)}, got {self.psum!r}")
        arch = load_target(self.target)
        previous = op.attributes.get(TARGET_ATTR)
        if isinstance(previous, TargetAttr) and previous.data.content_hash != arch.content_hash:
            raise QuantloopError(
                f"accel-lower: the module was already lowered for target {previous.data.name}, not {self.target}"
            )
        taken = {layer.label for layer in op.walk() if isinstance(layer, LayerOp)}
        counter = 0
        for inner in list(op.walk()):
            if isinstance(inner, COMPUTE_OPS):
                counter += 1
                node = inner.properties.get("name")
                base = node.data if isinstance(node, StringAttr) else f"{inner.name.split('.')[-1]}_{counter}"
                Rewriter.replace_op(inner, lower_op(inner, arch, _unique(base, taken), self.psum))
            elif inner.name.startswith("qnn.") and not isinstance(inner, ConstantOp):
                inner.attributes[HOST_ATTR] = UnitAttr()
        op.attributes[TARGET_ATTR] = TargetAttr(TargetRef(self.target, arch.content_hash))
