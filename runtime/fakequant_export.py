"""Calibrated qnn module -> float ONNX model with exact fake quantization at the chosen bit-widths.

Every value the accelerator holds in b bits carries exactly the float values its codes stand for:

- Weights (`!qnn.uniform` per tensor / per axis, `!qnn.pot`, `!qnn.pot2` constants, which hold codes)
  are stored as float initializers of their dequantized codes, read directly by Conv / Gemm / MatMul.
- Activations typed `!qnn.uniform` (model inputs and op results) get a quantize-dequantize right after
  the op that writes them, built from elementary ops: `Div scale, Round (half to even),
  Clip [qmin − zp, qmax − zp], Cast int32, Cast float, Mul scale` — the arithmetic of ONNX QuantizeLinear / DequantizeLinear and of
  :func:`quantloop.ir.quantization.fake_quant`, bit for bit, at every width 2..16. Ops that only move
  values (maxpool, reshape, flatten, identity, dropout) and keep their input's type need none.
  `qdq=True` emits QuantizeLinear + DequantizeLinear instead for 4, 8 and 16 bits. onnxruntime's CPU
  provider runs those exactly too, but only with graph optimizations disabled: at its default level the
  QDQ transformers fuse DQ→Add→Q and similar patterns into integer kernels (other numerics), and reject
  4-bit QDQ around MaxPool and Clip. The elementary form has no such patterns, so it is the default.
  (Float Conv / Gemm outputs themselves may still differ between optimization levels in the last bits,
  as the kernels sum in another order.)
- Biases stay float: the accelerator adds them as int32 at the accumulator scale w_scale · in_scale,
  far finer than any activation scale.
- `qnn.quantize` / `qnn.dequantize` (QDQ models) become the fake quantization of their result / an Identity.

`FakeQuantExporter.raw_names[v]` names the tensor before value `v`'s fake quantization and
`names[v]` the one after, so tests can compare every step against :mod:`quantloop.ir.quantization`.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from xdsl.dialects.builtin import IntegerType, ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from quantloop.errors import QuantloopError
from quantloop.runtime.onnx_export import EMITTERS, OnnxExporter
from quantloop.runtime.onnx_types import STORAGE_ONNX
from quantloop.ir.types import quant_params
from quantloop.ir import (
    ConstantOp,
    DequantizeOp,
    IntType,
    QuantizeOp,
    UniformPerAxisType,
    UniformType,
    is_float,
    op_label,
)
from quantloop.ir.ops import MOVES_VALUES
from quantloop.ir import quantization as q

QDQ_BITS = (4, 8, 16)


def export_fakequant_onnx(
    module: ModuleOp, graph_name: str = "quantloop_fakequant", qdq: bool = False
) -> onnx.ModelProto:
    """The calibrated module as a float ONNX model whose quantized values are exact (see module doc)."""
    return FakeQuantExporter(module, qdq=qdq).export(graph_name)


EXTERNAL_MIN_BYTES = 1024  #: smaller weights stay inside the model
EXTERNAL_ALIGN = 4096


def weight_values(constant: ConstantOp) -> np.ndarray:
    """Float32 values a quantized constant's codes stand for (floats and `!qnn.int` constants, which
    still hold their float weights, pass through)."""
    from quantloop.ir.quantization import weight_quantization

    if is_float(constant.output) or isinstance(constant.output.type.element_type, IntType):
        return np.asarray(constant.array, np.float32)
    return weight_quantization(constant).decode(constant.array)


class FakeQuantExporter(OnnxExporter):
    def __init__(self, module: ModuleOp, qdq: bool = False, uncalibrated_as_float: bool = False,
                 weights_file: BinaryIO | None = None, weights_location: str = "") -> None:
        """`weights_file`: weights of at least `EXTERNAL_MIN_BYTES` are written there straight from the
        module's arrays (the model refers to them as ONNX external data at `weights_location`, relative
        to where the model is saved), so they are never copied into the model's protobuf."""
        super().__init__(module)
        self.qdq = qdq
        self.uncalibrated_as_float = uncalibrated_as_float
        self.weights_file, self.weights_location = weights_file, weights_location
        self.raw_names: dict[SSAValue, str] = {}

    def onnx_type(self, value: SSAValue) -> int:
        return TensorProto.FLOAT

    def graph_input(self, arg: SSAValue) -> onnx.ValueInfoProto:
        info = super().graph_input(arg)
        self.fake_quantize(arg)
        return info

    def emit_op(self, op: Operation) -> None:
        emitter = FAKEQUANT_EMITTERS.get(type(op))
        if emitter is None:
            super().emit_op(op)
        else:
            emitter(self, op)
        if isinstance(op, ConstantOp):
            return
        for result in op.results:
            if not self._keeps_input_type(op, result):
                self.fake_quantize(result)

    @staticmethod
    def _keeps_input_type(op: Operation, result: SSAValue) -> bool:
        return isinstance(op, MOVES_VALUES) and op.operands[0].type.element_type == result.type.element_type

    def fake_quantize(self, value: SSAValue) -> None:
        """Emit the quantize-dequantize of `value` (if it is quantized) and make it the value's name."""
        if not isinstance(value.type, TensorType) or is_float(value):
            return
        elem = value.type.element_type
        where = op_label(value.owner) if isinstance(value.owner, Operation) else f"input '{self.name(value)}'"
        if isinstance(elem, IntType) and self.uncalibrated_as_float:
            return
        if not isinstance(elem, (UniformType, UniformPerAxisType)):
            raise QuantloopError(
                f"fake-quant export: {where} has element type {elem}, which has no scale; run qnn-calibrate first"
            )
        raw = self.name(value)
        out = self.fresh(f"{raw}_fq")
        if self.qdq and elem.bits in QDQ_BITS:
            qinputs, attrs = self.quant_inputs(elem, raw)
            codes = self.fresh(f"{raw}_q")
            self.node("QuantizeLinear", [raw, *qinputs], [codes], **attrs)
            self.node("DequantizeLinear", [codes, *qinputs], [out], **attrs)
        else:
            self._elementary_fake_quant(elem, raw, out, len(value.type.get_shape()))
        self.raw_names[value] = raw
        self.names[value] = out

    def _elementary_fake_quant(self, elem, raw: str, out: str, rank: int) -> None:
        """`(clip(round(x / s) + zp, qmin, qmax) - zp) * s` as `clip(round(x / s), qmin - zp, qmax - zp) * s`.

        The Cast to int32 and back is exact (|codes| < 2^24) and turns -0 into +0 as integer codes do;
        onnxruntime drops an `Add 0` / `Sub 0`, so those cannot do it.
        """
        scale, zero_point, axis = quant_params(elem)
        shape = [1] * rank
        if axis is not None:
            shape[axis] = scale.size
        scale = np.asarray(scale, np.float32).reshape(shape if axis is not None else ())
        zp = np.asarray(zero_point, np.int64).reshape(scale.shape)
        qmin, qmax = q.qrange(elem.bits, elem.signed)
        s = self.constant(scale, f"{raw}_scale")
        lo = self.constant((qmin - zp).astype(np.float32), f"{raw}_qmin")
        hi = self.constant((qmax - zp).astype(np.float32), f"{raw}_qmax")
        steps = [
            ("Div", [s], {}), ("Round", [], {}), ("Clip", [lo, hi], {}),
            ("Cast", [], {"to": TensorProto.INT32}), ("Cast", [], {"to": TensorProto.FLOAT}), ("Mul", [s], {}),
        ]
        current = raw
        for i, (op_type, operands, attrs) in enumerate(steps):
            target = out if i == len(steps) - 1 else self.fresh(f"{raw}_{op_type.lower()}")
            self.node(op_type, [current, *operands], [target], **attrs)
            current = target

    def quant_inputs(self, elem, base: str) -> tuple[list[str], dict[str, int]]:
        if (elem.bits, elem.signed) not in STORAGE_ONNX:
            raise QuantloopError(f"fake-quant export: no ONNX storage type for {elem}")
        return super().quant_inputs(elem, base)


def _constant(ex: FakeQuantExporter, op: ConstantOp) -> None:
    if isinstance(op.output.type.element_type, IntegerType):  # shapes, pads, indices of host ops
        EMITTERS[ConstantOp](ex, op)
        return
    name = ex.name(op.output)
    values = weight_values(op)
    if ex.weights_file is None or values.nbytes < EXTERNAL_MIN_BYTES:
        ex.initializers.append(numpy_helper.from_array(values, name))
        return
    f = ex.weights_file
    f.seek(-f.tell() % EXTERNAL_ALIGN, 1)  # aligned as onnx.save_model aligns external tensors
    offset = f.tell()
    np.ascontiguousarray(values, dtype="<f4").tofile(f)
    tensor = ex.initializers.add()
    tensor.name, tensor.data_type = name, TensorProto.FLOAT
    tensor.dims.extend(values.shape)
    for key, value in (("location", ex.weights_location), ("offset", offset), ("length", values.nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    tensor.data_location = TensorProto.EXTERNAL


def _quantize(ex: FakeQuantExporter, op: QuantizeOp) -> None:
    ex.node("Identity", [ex.name(op.input)], [ex.name(op.output)], op)


def _dequantize(ex: FakeQuantExporter, op: DequantizeOp) -> None:
    ex.node("Identity", [ex.name(op.input)], [ex.name(op.output)], op)


FAKEQUANT_EMITTERS = {ConstantOp: _constant, QuantizeOp: _quantize, DequantizeOp: _dequantize}
