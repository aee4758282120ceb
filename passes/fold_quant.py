"""`qnn-fold-quant`: fold a quantized model's quantize / dequantize structure into quantized operand types.

A QDQ or QONNX model arrives as `qnn.dequantize → f32 → op → f32 → qnn.quantize`. Every qnn op reads a
quantized operand as the real values its codes stand for and writes a quantized result as the
quantization of its real result, so both ends fold into the op's types without changing a value:

- A `qnn.dequantize` of a runtime value: every op that reads its result reads the quantized value
  instead (except `qnn.quantize`, which then requantizes, and the function's return).
- A `qnn.dequantize` of a quantized constant (the model's weight codes): the weight operand of
  conv2d / gemm / matmul reads the constant itself, so the layer keeps the model's codes, scales, zero
  points and bits. Any other reader (a BatchNorm parameter, an Add operand) reads a float constant of
  the dequantized values, computed as DequantizeLinear does: `float32(q − zp) · scale`.
- An op whose float result is read only by `qnn.quantize` ops of one and the same type takes that type
  as its result type, and the quantize ops disappear.
- An op that only moves values (maxpool, reshape, flatten, identity, dropout) of a per-tensor quantized
  input keeps that type on its result (no requantization happens).
- Backwards too: when such an op's result is quantized (per tensor) and its float input is read by it
  alone, the op writing that input takes the type (quantizing before or after moving values is the same,
  as quantization is monotone), so the value is quantized once, as the model does (ReduceMean with
  keepdims=0 imports as global_avgpool + reshape, and the model's QuantizeLinear follows the reshape);
  left float, calibration would quantize it a second time at a scale of its own.

What stays: quantize ops of the model's float inputs (and requantizations), and dequantize ops that
feed the return. Tensors the model leaves in float stay f32, for `qnn-assign-bits` and calibration.
Run it after `qnn-canonicalize` and before `qnn-assign-bits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import Float32Type, ModuleOp, TensorType, f32
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.transforms.dead_code_elimination import region_dce

from quantloop.ir import quantization as q
from quantloop.ir.ops import MOVES_VALUES, WEIGHT_OPERAND, ConstantOp, DequantizeOp, QuantizeOp
from quantloop.ir.types import UniformPerAxisType, UniformType, quant_params


def dequantized_values(constant: ConstantOp) -> np.ndarray:
    """The float32 values of a uniform quantized constant, exactly as ONNX DequantizeLinear computes them."""
    return q.dequantize(constant.array, *quant_params(constant.output.type.element_type))


def _is_float(value: SSAValue) -> bool:
    return isinstance(value.type, TensorType) and isinstance(value.type.element_type, Float32Type)


def _quantized_constant(value: SSAValue) -> ConstantOp | None:
    owner = value.owner
    if isinstance(owner, ConstantOp) and isinstance(value.type.element_type, (UniformType, UniformPerAxisType)):
        return owner
    return None


def _fold_dequantize(dq: DequantizeOp) -> None:
    constant = _quantized_constant(dq.input)
    float_twin: ConstantOp | None = None
    for use in list(dq.output.uses):
        user, index = use.operation, use.index
        if constant is not None:
            if WEIGHT_OPERAND.get(type(user)) == index:
                user.operands[index] = dq.input
                continue
            if float_twin is None:
                float_twin = ConstantOp(dequantized_values(constant), TensorType(f32, dq.output.type.get_shape()),
                                        name=constant.node_name)
                float_twin.output.name_hint = dq.output.name_hint
                Rewriter.insert_op(float_twin, InsertPoint.before(dq))
            user.operands[index] = float_twin.output
        elif not isinstance(user, (QuantizeOp, DequantizeOp, ReturnOp)):
            user.operands[index] = dq.input


def _fold_quantize(op: Operation) -> bool:
    """Give `op`'s float result the type of the quantize ops that read it (when they all agree)."""
    if len(op.results) != 1 or not _is_float(op.results[0]):
        return False
    result = op.results[0]
    readers = [use.operation for use in result.uses]
    if not readers or not all(isinstance(r, QuantizeOp) for r in readers):
        return False
    types = {r.output.type for r in readers}
    if len(types) != 1:
        return False
    (quantized_type,) = types
    name = readers[0].output.name_hint or result.name_hint
    new = Rewriter.replace_value_with_new_type(result, quantized_type)
    new.name_hint = name
    for reader in readers:
        reader.output.replace_all_uses_with(new)
        Rewriter.erase_op(reader)
    return True


def _keep_moved_type(op: Operation) -> None:
    """An op that only moves values (maxpool, reshape, flatten, ...) of a per-tensor quantized input
    writes values of that same quantization: its float result takes the input's type."""
    if not isinstance(op, MOVES_VALUES) or not _is_float(op.results[0]):
        return
    elem = op.operands[0].type.element_type
    if isinstance(elem, UniformType):
        name = op.results[0].name_hint
        new = Rewriter.replace_value_with_new_type(op.results[0], TensorType(elem, op.results[0].type.get_shape()))
        new.name_hint = name


def _quantize_before_move(op: Operation) -> None:
    """See the module docstring: the writer of a moved value takes the moved result's per-tensor type."""
    if not isinstance(op, MOVES_VALUES) or not isinstance(op.results[0].type.element_type, UniformType):
        return
    source = op.operands[0]
    writer = source.owner
    if (not _is_float(source) or not source.has_one_use() or not isinstance(writer, Operation)
            or isinstance(writer, (QuantizeOp, DequantizeOp, ConstantOp)) or len(writer.results) != 1):
        return
    name = source.name_hint
    new = Rewriter.replace_value_with_new_type(source, TensorType(op.results[0].type.element_type, source.type.get_shape()))
    new.name_hint = name


@dataclass(frozen=True)
class FoldQuantPass(ModulePass):
    """Fold a QDQ / QOperator / QONNX model's quantize-dequantize into its layers' types (keeps its own bits)."""

    name = "qnn-fold-quant"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in [o for o in op.walk() if isinstance(o, FuncOp)]:
            body = list(function.body.block.ops)
            for inner in body:
                if isinstance(inner, DequantizeOp):
                    _fold_dequantize(inner)
            for inner in list(function.body.block.ops):
                if not isinstance(inner, (QuantizeOp, DequantizeOp, ConstantOp, ReturnOp)):
                    _fold_quantize(inner) or _keep_moved_type(inner)
            for inner in reversed(list(function.body.block.ops)):  # last first: a chain of moves passes the type back
                _quantize_before_move(inner)
            region_dce(function.body)
            function.update_function_type()
