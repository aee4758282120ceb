"""qnn module -> ONNX (opset 21), float or QDQ, runnable in onnxruntime.

- Fused activations become a Relu / Clip node after the op.
- `!qnn.uniform` values are exact: `qnn.quantize` -> QuantizeLinear, `qnn.dequantize` ->
  DequantizeLinear, quantized `qnn.constant`s -> integer initializers (int8/uint8/int16/uint16,
  int4/uint4 packed by onnx). Storage widths ONNX has no type for (2, 3, 5, 6, 7 bits) need the
  fake-quant export and are refused here.
- Values typed `!qnn.int`, `!qnn.pot` or `!qnn.pot2` (bit-width chosen, not yet calibrated) carry no
  scale: they export as float32, their data unchanged.
- An op that reads or writes quantized values (as `qnn-fold-quant` leaves a conv: quantized input, weights
  and result) means: dequantize the operands, the float op, quantize the result. It exports as exactly that
  (DequantizeLinear, the float op, QuantizeLinear), since ONNX's Conv, Gemm, Add, ... take no integer codes.
  Only ops that move 8-bit codes unchanged (`CODE_MOVES`) run on the codes.

The per-op emitters live in `EMITTERS` (op class -> function); the fake-quant export extends the
exporter by overriding `graph_input` / `emit_op` (and the type hooks) rather than rewriting the walk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    AnyFloat,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Operation, SSAValue

from quantloop.errors import QuantloopError
from quantloop.ir.builder import main_func
from quantloop.ir.ops import MOVES_VALUES
from quantloop.runtime.onnx_types import STORAGE_ONNX
from quantloop.ir.types import quant_params
from quantloop.ir import (
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
    HostOp,
    IdentityOp,
    MatMulOp,
    MaxPoolOp,
    QuantizeOp,
    ReluOp,
    ReshapeOp,
    SoftmaxOp,
    UniformPerAxisType,
    UniformType,
    op_label,
)

OPSET = 21
IR_VERSION = 10


def export_onnx(module: ModuleOp, graph_name: str = "quantloop") -> onnx.ModelProto:
    """The module's `main` function as a checked ONNX model."""
    return OnnxExporter(module).export(graph_name)


def int_tensor(name: str, codes: np.ndarray, onnx_type: int) -> onnx.TensorProto:
    """An integer initializer of ONNX type `onnx_type` (int4/uint4 packed two per byte by onnx)."""
    return numpy_helper.from_array(np.asarray(codes).astype(helper.tensor_dtype_to_np_dtype(onnx_type)), name)


class OnnxExporter:
    def __init__(self, module: ModuleOp) -> None:
        self.function = main_func(module)
        self.nodes: list[onnx.NodeProto] = []
        # Weights go straight into the model being built (append copies a tensor in; the temporary is
        # dropped), so they are never held twice: half a gigabyte each time for VGG.
        self.model = helper.make_model(helper.make_graph([], "", [], []), opset_imports=[helper.make_opsetid("", OPSET)],
                                       producer_name="quantloop")
        self.initializers = self.model.graph.initializer
        self.names: dict[SSAValue, str] = {}
        self._used: set[str] = set()
        self._shared: dict[tuple, str] = {}
        self._dequantized: dict[SSAValue, str] = {}  # float tensors of quantized values (`emit_in_float`)

    # ------------------------------------------------------------------ naming

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def name(self, value: SSAValue) -> str:
        if value not in self.names:
            self.names[value] = self.fresh(value.name_hint or "v")
        return self.names[value]

    def constant(self, array: np.ndarray, base: str, onnx_type: int | None = None) -> str:
        """An initializer holding `array`; small constants (scales, shapes) are shared."""
        array = np.asarray(array)
        key = None
        if array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes(), onnx_type)
            if key in self._shared:
                return self._shared[key]
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name) if onnx_type is None else int_tensor(name, array, onnx_type))
        if key is not None:
            self._shared[key] = name
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], op: Operation | None = None, **attrs) -> None:
        label = getattr(op, "node_name", None) if op is not None else None
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.fresh(label or op_type), **attrs))

    # ------------------------------------------------------------------ types

    def onnx_type(self, value: SSAValue) -> int:
        elem = value.type.element_type
        if isinstance(elem, (UniformType, UniformPerAxisType)):
            return self.storage_type(elem, value)
        if isinstance(elem, IntegerType):
            return TensorProto.INT64 if elem.width.data == 64 else TensorProto.INT32
        return TensorProto.FLOAT

    def storage_type(self, elem, value: SSAValue) -> int:
        key = (elem.bits, elem.signed)
        if key not in STORAGE_ONNX:
            owner = value.owner
            where = op_label(owner) if isinstance(owner, Operation) else "an argument"
            raise QuantloopError(
                f"export: {where} has {elem.bits}-bit values; ONNX QDQ holds 4, 8 or 16 bits "
                "(other widths need the fake-quant export)"
            )
        return STORAGE_ONNX[key]

    def value_info(self, value: SSAValue, name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, self.onnx_type(value), list(value.type.get_shape()))

    def quant_inputs(self, elem, base: str) -> tuple[list[str], dict[str, int]]:
        """Scale and zero-point initializers (and the axis attribute) of a uniform type."""
        scale, zero_point, axis = quant_params(elem)
        onnx_type = STORAGE_ONNX[elem.bits, elem.signed]
        scale_name = self.constant(np.asarray(scale, np.float32), f"{base}_scale")
        zp_name = self.constant(np.asarray(zero_point, np.int64), f"{base}_zero_point", onnx_type)
        return [scale_name, zp_name], ({} if axis is None else {"axis": axis})

    # ------------------------------------------------------------------ walk

    def graph_input(self, arg: SSAValue) -> onnx.ValueInfoProto:
        """The graph input of a function argument."""
        return self.value_info(arg, self.name(arg))

    def emit_op(self, op: Operation) -> None:
        emitter = EMITTERS.get(type(op))
        if emitter is None:
            raise QuantloopError(f"export: {op_label(op)} has no ONNX export")
        if isinstance(op, (ConstantOp, QuantizeOp, DequantizeOp)) or _moves_codes(op):
            emitter(self, op)
            return
        self.emit_in_float(op, emitter)

    def holds_codes(self, value: SSAValue) -> bool:
        """Whether the exported tensor of `value` holds integer codes (not the float values they stand for)."""
        elem = value.type.element_type if isinstance(value.type, TensorType) else None
        return isinstance(elem, (UniformType, UniformPerAxisType)) and self.onnx_type(value) != TensorProto.FLOAT

    def emit_in_float(self, op: Operation, emitter: Callable[[OnnxExporter, Operation], None]) -> None:
        """`op` on the float values of its quantized operands (DequantizeLinear, once per value), its
        quantized results written by QuantizeLinear: what an op with quantized types means."""
        coded = {v: self.name(v) for v in op.operands if self.holds_codes(v)}
        for value in coded:
            if value not in self._dequantized:
                name = self.fresh(f"{coded[value]}_dequantized")
                qinputs, attrs = self.quant_inputs(value.type.element_type, coded[value])
                self.node("DequantizeLinear", [coded[value], *qinputs], [name], **attrs)
                self._dequantized[value] = name
            self.names[value] = self._dequantized[value]
        results = {r: self.name(r) for r in op.results if self.holds_codes(r)}
        for result, name in results.items():
            self.names[result] = self.fresh(f"{name}_float")
        try:
            emitter(self, op)
        finally:
            self.names.update(coded)
        for result, name in results.items():
            qinputs, attrs = self.quant_inputs(result.type.element_type, name)
            self.node("QuantizeLinear", [self.names[result], *qinputs], [name], **attrs)
            self.names[result] = name

    def export(self, graph_name: str) -> onnx.ModelProto:
        block = self.function.body.block
        inputs = [self.graph_input(arg) for arg in block.args]
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
            self.emit_op(op)
        model = self.model
        model.graph.name = graph_name
        model.graph.node.extend(self.nodes)
        model.graph.input.extend(inputs)
        model.graph.output.extend(outputs)
        model.ir_version = IR_VERSION
        return model

    def activation(self, op, preact: str) -> None:
        """Emit `op`'s fused activation (if any) from `preact` (see `fused_output`) to the op's result."""
        out = self.name(op.results[0])
        if op.act == "relu":
            self.node("Relu", [preact], [out], op)
        elif op.act == "clip":
            low = self.constant(np.array(op.act_min, np.float32), "clip_min")
            high = self.constant(np.array(op.act_max, np.float32), "clip_max")
            self.node("Clip", [preact, low, high], [out], op)

    def fused_output(self, op) -> str:
        """Where the op itself writes: its result, or a temporary when an activation follows."""
        return self.name(op.results[0]) if op.act == "none" else self.fresh(f"{self.name(op.results[0])}_preact")


# ---------------------------------------------------------------------- emitters


def _constant(ex: OnnxExporter, op: ConstantOp) -> None:
    value = op.results[0]
    name = ex.name(value)
    elem = value.type.element_type
    if isinstance(elem, (UniformType, UniformPerAxisType)):
        tensor = int_tensor(name, op.array, ex.storage_type(elem, value))
    elif isinstance(elem, IntegerType):  # shapes, pads, indices of host ops
        tensor = numpy_helper.from_array(np.asarray(op.array, f"int{elem.width.data}"), name)
    else:
        tensor = numpy_helper.from_array(np.asarray(op.array, np.float32), name)
    ex.initializers.append(tensor)


def _conv(ex: OnnxExporter, op: Conv2dOp) -> None:
    inputs = [ex.name(op.input), ex.name(op.weight)] + ([ex.name(op.bias)] if op.bias is not None else [])
    kernel = list(op.weight.type.get_shape()[2:])
    out = ex.fused_output(op)
    ex.node("Conv", inputs, [out], op, kernel_shape=kernel, strides=list(op.strides), pads=list(op.pads),
            dilations=list(op.dilations), group=op.group)
    ex.activation(op, out)


def _gemm(ex: OnnxExporter, op: GemmOp) -> None:
    inputs = [ex.name(op.a), ex.name(op.b)] + ([ex.name(op.c)] if op.c is not None else [])
    out = ex.fused_output(op)
    ex.node("Gemm", inputs, [out], op, alpha=op.alpha, beta=op.beta, transA=int(op.trans_a), transB=int(op.trans_b))
    ex.activation(op, out)


def _add(ex: OnnxExporter, op: AddOp) -> None:
    out = ex.fused_output(op)
    ex.node("Add", [ex.name(op.lhs), ex.name(op.rhs)], [out], op)
    ex.activation(op, out)


def _simple(op_type: str, **fixed) -> Callable[[OnnxExporter, Operation], None]:
    def emit(ex: OnnxExporter, op: Operation) -> None:
        ex.node(op_type, [ex.name(v) for v in op.operands], [ex.name(op.results[0])], op, **fixed)

    return emit


def _clip(ex: OnnxExporter, op: ClipOp) -> None:
    low = ex.constant(np.array(op.min, np.float32), "clip_min")
    high = ex.constant(np.array(op.max, np.float32), "clip_max")
    ex.node("Clip", [ex.name(op.input), low, high], [ex.name(op.output)], op)


def _pool(ex: OnnxExporter, op: MaxPoolOp | AvgPoolOp) -> None:
    attrs = dict(kernel_shape=list(op.kernel), strides=list(op.strides), pads=list(op.pads), ceil_mode=int(op.ceil_mode))
    if isinstance(op, AvgPoolOp):
        attrs["count_include_pad"] = int(op.count_include_pad)
    op_type = "MaxPool" if isinstance(op, MaxPoolOp) else "AveragePool"
    ex.node(op_type, [ex.name(op.input)], [ex.name(op.output)], op, **attrs)


def _reshape(ex: OnnxExporter, op: ReshapeOp) -> None:
    shape = ex.constant(np.asarray(op.shape, np.int64), "shape")
    ex.node("Reshape", [ex.name(op.input), shape], [ex.name(op.output)], op)


def _batchnorm(ex: OnnxExporter, op: BatchNormOp) -> None:
    ex.node("BatchNormalization", [ex.name(v) for v in op.operands], [ex.name(op.output)], op, epsilon=op.epsilon)


def _quantize(ex: OnnxExporter, op: QuantizeOp) -> None:
    elem = op.output.type.element_type
    ex.storage_type(elem, op.output)
    qinputs, attrs = ex.quant_inputs(elem, ex.name(op.output))
    ex.node("QuantizeLinear", [ex.name(op.input), *qinputs], [ex.name(op.output)], op, **attrs)


def _dequantize(ex: OnnxExporter, op: DequantizeOp) -> None:
    elem = op.input.type.element_type
    if not isinstance(elem, (UniformType, UniformPerAxisType)):
        # !qnn.int / pot / pot2 and float inputs carry no scale: exported as float, dequantize is the identity.
        ex.node("Identity", [ex.name(op.input)], [ex.name(op.output)], op)
        return
    ex.storage_type(elem, op.input)
    qinputs, attrs = ex.quant_inputs(elem, ex.name(op.input))
    ex.node("DequantizeLinear", [ex.name(op.input), *qinputs], [ex.name(op.output)], op, **attrs)


def onnx_attr(value: Attribute):
    """The Python value `helper.make_node` turns back into the ONNX attribute the importer read."""
    if isinstance(value, IntegerAttr):
        return int(value.value.data)
    if isinstance(value, FloatAttr):
        return float(value.value.data)
    if isinstance(value, StringAttr):
        return value.data
    if isinstance(value, DenseArrayBase):
        values = value.get_values()
        return [float(v) for v in values] if isinstance(value.elt_type, AnyFloat) else [int(v) for v in values]
    return [v.data for v in value]  # ArrayAttr of strings


def _host(ex: OnnxExporter, op: HostOp) -> None:
    names = [ex.name(v) for v in op.args]
    for position in sorted(op.absent):  # omitted optional inputs stay omitted
        names.insert(position, "")
    attrs = {key: onnx_attr(value) for key, value in op.onnx_attrs.data.items()}
    ex.node(op.op_type, names, [ex.name(r) for r in op.results], op, **attrs)


#: The value-moving ops (`ir.ops.MOVES_VALUES`) that run on the codes: on 8-bit codes of one per-tensor
#: quantization (onnxruntime implements them for int8/uint8, not for int4 though ONNX allows it: no Flatten
#: kernel). `FLOAT_ONLY_MOVES` (MaxPool; Dropout: floats only) and other widths run on dequantized values
#: (`OnnxExporter.emit_in_float`), which moves the same values.
FLOAT_ONLY_MOVES = (MaxPoolOp, DropoutOp)
CODE_MOVES = tuple(op for op in MOVES_VALUES if op not in FLOAT_ONLY_MOVES)
CODE_MOVING_HOST_OPS = frozenset({"Transpose"})
CODE_MOVE_BITS = 8


def _moves_codes(op: Operation) -> bool:
    if not (isinstance(op, CODE_MOVES) or isinstance(op, HostOp) and op.op_type in CODE_MOVING_HOST_OPS):
        return False
    source = op.operands[0].type.element_type if op.operands else None
    return (isinstance(source, UniformType) and source.bits == CODE_MOVE_BITS
            and all(r.type.element_type == source for r in op.results))


EMITTERS: dict[type[Operation], Callable[[OnnxExporter, Operation], None]] = {
    HostOp: _host,
    ConstantOp: _constant,
    Conv2dOp: _conv,
    GemmOp: _gemm,
    AddOp: _add,
    MatMulOp: _simple("MatMul"),
    ReluOp: _simple("Relu"),
    ClipOp: _clip,
    MaxPoolOp: _pool,
    AvgPoolOp: _pool,
    GlobalAvgPoolOp: _simple("GlobalAveragePool"),
    ReshapeOp: _reshape,
    FlattenOp: lambda ex, op: _simple("Flatten", axis=op.axis)(ex, op),
    ConcatOp: lambda ex, op: _simple("Concat", axis=op.axis)(ex, op),
    SoftmaxOp: lambda ex, op: _simple("Softmax", axis=op.axis)(ex, op),
    BatchNormOp: _batchnorm,
    IdentityOp: _simple("Identity"),
    DropoutOp: _simple("Dropout"),
    QuantizeOp: _quantize,
    DequantizeOp: _dequantize,
}
