"""Calibrated qnn module -> float ONNX model with exact fake quantization at the chosen bit-widths.

Every value the accelerator holds in b bits carries exactly the float values its codes stand for:

- Weights (`!qnn.uniform` per tensor / per axis, `!qnn.pot`, `!qnn.pot2` constants, which hold codes)
  are stored as float initializers of their dequantized codes, read directly by Conv / Gemm / MatMul.
- Activations typed `!qnn.uniform` (model inputs and op results) get a quantize-dequantize right after
  the op that writes them: `QuantizeLinear` + `DequantizeLinear` for 4, 8 and 16 bits (onnxruntime's CPU
  provider runs int4/uint4/int8/uint8/int16/uint16 and matches numpy bit for bit), otherwise
  `Div, Round (half to even), Add zp, Clip [qmin, qmax], Sub zp, Mul`, which is the same arithmetic in
  float32. Ops that only move values (maxpool, reshape, flatten, identity, dropout) and keep their
  input's type need none.
- Biases stay float: the accelerator adds them as int32 at the accumulator scale w_scale · in_scale,
  far finer than any activation scale.
- `qnn.quantize` / `qnn.dequantize` (QDQ models) become the fake quantization of their result / an Identity.

`FakeQuantExporter.raw_names[v]` names the tensor before value `v`'s fake quantization and
`names[v]` the one after, so tests can compare every step against :mod:`quantloop.ir.quantization`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_export import EMITTERS, IR_VERSION, OPSET, OnnxExporter
from quantloop.frontend.quant_types import STORAGE_ONNX, quant_params
from quantloop.ir import (
    ConstantOp,
    DequantizeOp,
    DropoutOp,
    FlattenOp,
    IdentityOp,
    MaxPoolOp,
    QuantizeOp,
    ReshapeOp,
    UniformPerAxisType,
    UniformType,
    is_float,
    op_label,
)
from quantloop.ir import quantization as q

QDQ_BITS = (4, 8, 16)
MOVES_VALUES = (MaxPoolOp, ReshapeOp, FlattenOp, IdentityOp, DropoutOp)


def export_fakequant_onnx(module: ModuleOp, graph_name: str = "quantloop_fakequant") -> onnx.ModelProto:
    """The calibrated module as a float ONNX model whose quantized values are exact (see module doc)."""
    return FakeQuantExporter(module).export(graph_name)


def weight_values(constant: ConstantOp) -> np.ndarray:
    """Float32 values a quantized constant's codes stand for (floats pass through)."""
    from quantloop.ir.quantization import weight_quantization

    if is_float(constant.output):
        return np.asarray(constant.array, np.float32)
    return weight_quantization(constant).decode(constant.array)


class FakeQuantExporter(OnnxExporter):
    def __init__(self, module: ModuleOp) -> None:
        super().__init__(module)
        self.raw_names: dict[SSAValue, str] = {}

    def onnx_type(self, value: SSAValue) -> int:
        return TensorProto.FLOAT

    def export(self, graph_name: str) -> onnx.ModelProto:
        block = self.function.body.block
        inputs = []
        for arg in block.args:
            inputs.append(self.value_info(arg, self.name(arg)))
            self.fake_quantize(arg)
        outputs: list[onnx.ValueInfoProto] = []
        for op in block.ops:
            if isinstance(op, func.ReturnOp):
                for value in op.operands:
                    name = self.name(value)
                    if any(o.name == name for o in outputs) or name in {i.name for i in inputs}:
                        alias = self.fresh(f"{name}_out")
                        self.node("Identity", [name], [alias])
                        name = alias
                    outputs.append(self.value_info(value, name))
                continue
            emitter = FAKEQUANT_EMITTERS.get(type(op)) or EMITTERS.get(type(op))
            if emitter is None:
                raise QuantloopError(f"export: {op_label(op)} has no ONNX export")
            emitter(self, op)
            if isinstance(op, ConstantOp):
                continue
            for result in op.results:
                if not self._keeps_input_type(op, result):
                    self.fake_quantize(result)
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quantloop")
        model.ir_version = IR_VERSION
        return model

    @staticmethod
    def _keeps_input_type(op: Operation, result: SSAValue) -> bool:
        return isinstance(op, MOVES_VALUES) and op.operands[0].type == result.type

    def fake_quantize(self, value: SSAValue) -> None:
        """Emit the quantize-dequantize of `value` (if it is quantized) and make it the value's name."""
        if not isinstance(value.type, TensorType) or is_float(value):
            return
        elem = value.type.element_type
        where = op_label(value.owner) if isinstance(value.owner, Operation) else f"input '{self.name(value)}'"
        if not isinstance(elem, (UniformType, UniformPerAxisType)):
            raise QuantloopError(
                f"fake-quant export: {where} has element type {elem}, which has no scale; run qnn-calibrate first"
            )
        raw = self.name(value)
        out = self.fresh(f"{raw}_fq")
        if elem.bits in QDQ_BITS:
            qinputs, attrs = self.quant_inputs(elem, raw)
            codes = self.fresh(f"{raw}_q")
            self.node("QuantizeLinear", [raw, *qinputs], [codes], **attrs)
            self.node("DequantizeLinear", [codes, *qinputs], [out], **attrs)
        else:
            self._elementary_fake_quant(elem, raw, out, len(value.type.get_shape()))
        self.raw_names[value] = raw
        self.names[value] = out

    def _elementary_fake_quant(self, elem, raw: str, out: str, rank: int) -> None:
        scale, zero_point, axis = quant_params(elem)
        shape = [1] * rank
        if axis is not None:
            shape[axis] = scale.size
        scale = np.asarray(scale, np.float32).reshape(shape if axis is not None else ())
        zp = np.asarray(zero_point, np.float32).reshape(scale.shape)
        qmin, qmax = q.qrange(elem.bits, elem.signed)
        s = self.constant(scale, f"{raw}_scale")
        z = self.constant(zp, f"{raw}_zero_point")
        lo = self.constant(np.array(qmin, np.float32), "qmin")
        hi = self.constant(np.array(qmax, np.float32), "qmax")
        steps = [("Div", [s]), ("Round", []), ("Add", [z]), ("Clip", [lo, hi]), ("Sub", [z]), ("Mul", [s])]
        current = raw
        for i, (op_type, operands) in enumerate(steps):
            target = out if i == len(steps) - 1 else self.fresh(f"{raw}_{op_type.lower()}")
            self.node(op_type, [current, *operands], [target])
            current = target

    def quant_inputs(self, elem, base: str) -> tuple[list[str], dict[str, int]]:
        if (elem.bits, elem.signed) not in STORAGE_ONNX:
            raise QuantloopError(f"fake-quant export: no ONNX storage type for {elem}")
        return super().quant_inputs(elem, base)


def _constant(ex: FakeQuantExporter, op: ConstantOp) -> None:
    name = ex.name(op.output)
    ex.initializers.append(numpy_helper.from_array(weight_values(op), name))


def _quantize(ex: FakeQuantExporter, op: QuantizeOp) -> None:
    ex.node("Identity", [ex.name(op.input)], [ex.name(op.output)], op)


def _dequantize(ex: FakeQuantExporter, op: DequantizeOp) -> None:
    ex.node("Identity", [ex.name(op.input)], [ex.name(op.output)], op)


FAKEQUANT_EMITTERS = {ConstantOp: _constant, QuantizeOp: _quantize, DequantizeOp: _dequantize}
