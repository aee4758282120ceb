"""ONNX (float, QDQ, QONNX) -> qnn dialect: a builtin module holding `func.func @main`.

Quantization mapping:
- `QuantizeLinear` -> `qnn.quantize` whose result element type is `!qnn.uniform` (per tensor or per
  axis; bits and signedness from the zero point's ONNX type: int8/uint8/int16/uint16/int4/uint4).
- `DequantizeLinear` of a runtime value -> `qnn.dequantize` (f32); its scale and zero point must equal
  those of the quantized input type. Of an integer initializer -> a `qnn.constant` of quantized type
  holding the integer codes, then `qnn.dequantize`. Int32 initializers (quantized biases) are
  dequantized at import into f32 constants, exactly as DequantizeLinear computes them.
- QONNX `Quant` (x, scale, zeropt, bitwidth; signed, narrow, rounding_mode) -> `qnn.quantize` +
  `qnn.dequantize` for activations; for constant inputs the codes are computed here (honouring
  narrow and rounding_mode) into a quantized `qnn.constant` + `qnn.dequantize`.
Nothing is skipped: an op without a converter is a `QuantloopError` listing the supported ops.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    FunctionType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from quantloop.bits import LEGAL_BITS, legal_text
from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_load import InputShapes, graph_inputs, load_model
from quantloop.frontend.onnx_qoperator import MICROSOFT_QOPERATOR_CONVERTERS, QOPERATOR_CONVERTERS, dynamic_chains
from quantloop.runtime.onnx_types import ONNX_STORAGE, uniform_type
from quantloop.ir.types import container
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
    HOST_OP_TYPES,
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
    verify_module,
)

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "finn")
MICROSOFT_DOMAIN = "com.microsoft"
OPSETS = range(7, 22)  # below 11 converted by onnx.version_converter at load (frontend.onnx_fold)
_F32_MAX = float(np.finfo(np.float32).max)


def import_onnx(path_or_model: str | os.PathLike | onnx.ModelProto, input_shapes: InputShapes | None = None) -> ModuleOp:
    """Import an ONNX file, `zoo:` spec or ModelProto into a verified qnn module."""
    source = "<model>" if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    model = load_model(path_or_model, input_shapes)
    module = _Importer(model, source).run()
    verify_module(module, source)
    return module


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _hint(name: str) -> str | None:
    text = re.sub(r"[^A-Za-z0-9_.$-]", "_", name)
    if not text:
        return None
    return text if re.match(r"[A-Za-z_]", text) else f"v_{text}"


def _same_pads(size: list[int], kernel: list[int], strides: list[int], dilations: list[int], mode: str) -> list[int]:
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
        small = total // 2
        begins.append(small if mode == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


class _Importer:
    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.source = source
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset not in OPSETS:
            raise QuantloopError(f"{source}: opset {self.opset} is not supported (supported: {OPSETS[0]}..{OPSETS[-1]})")
        self.consts: dict[str, np.ndarray] = {}
        for tensor in self.graph.initializer:  # the proto is ours (load_model copies): each tensor's
            self.consts[tensor.name] = self._read(tensor)  # bytes are dropped once read, so a VGG's
            tensor.ClearField("raw_data")  # half a gigabyte of weights is not held twice
        self.elem_types: dict[str, int] = {
            info.name: info.type.tensor_type.elem_type for info in [*self.graph.value_info, *self.graph.output]
        }
        self.onnx_types: dict[str, int] = {t.name: t.data_type for t in self.graph.initializer}
        self.values: dict[str, SSAValue] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for info in [*self.graph.value_info, *self.graph.output, *self.graph.input]:
            tensor = info.type.tensor_type
            if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
                self.shapes[info.name] = tuple(d.dim_value for d in tensor.shape.dim)
        self.ops: list[Operation] = []
        self.node: onnx.NodeProto | None = None
        self.consumed = {name for n in self.graph.node for name in n.input} | {o.name for o in self.graph.output}

    # ------------------------------------------------------------------ plumbing

    def _read(self, tensor: onnx.TensorProto) -> np.ndarray:
        try:
            return numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as err:
            raise QuantloopError(f"{self.source}: initializer '{tensor.name}': its data does not match "
                                 f"its type and shape {list(tensor.dims)} ({str(err).splitlines()[0]})") from None

    def fail(self, message: str) -> QuantloopError:
        node = self.node
        where = f"node '{node.name or node.output[0]}' ({node.op_type})" if node is not None else "graph"
        return QuantloopError(f"{self.source}: {where}: {message}")

    def emit(self, op: Operation, output: str | None = None) -> SSAValue:
        self.ops.append(op)
        result = op.results[0]
        if output is not None:
            self.values[output] = result
            result.name_hint = _hint(output)
        return result

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.fail(f"{what} '{name}' must be a constant (an initializer or Constant node)")
        return self.consts[name]

    def opt_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.const(node.input[index], what)

    def value(self, name: str) -> SSAValue:
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            array = self.consts[name]
            if array.dtype != np.float32:
                raise self.fail(f"constant '{name}' of type {array.dtype} is used as a tensor; only float32 is supported")
            return self.emit(ConstantOp(array, TensorType(f32, list(array.shape)), name=name), name)
        raise self.fail(f"input '{name}' is not produced by any earlier node, initializer or graph input")

    def result_type(self, output: str, like: SSAValue | None = None) -> TensorType | None:
        """The inferred type of `output`; ops that move data unchanged (`like` = their input) keep
        a per-tensor quantized element type, as ONNX lets Reshape / MaxPool run on int8 tensors."""
        shape = self.shapes.get(output)
        if shape is None:
            return None
        elem = like.type.element_type if like is not None else f32
        return TensorType(elem if isinstance(elem, UniformType) else f32, list(shape))

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        return tuple(self.value(name).type.get_shape())

    def used(self, name: str) -> bool:
        return bool(name) and name in self.consumed

    def only_first_output(self, node: onnx.NodeProto) -> None:
        for extra in node.output[1:]:
            if self.used(extra):
                raise self.fail(f"output '{extra}' is used, but only the first output of {node.op_type} is supported")

    # ------------------------------------------------------------------ driver

    def run(self) -> ModuleOp:
        inputs = graph_inputs(self.model)
        block = Block(arg_types=[self._input_type(i) for i in inputs])
        for info, arg in zip(inputs, block.args):
            self.values[info.name] = arg
            arg.name_hint = _hint(info.name)
        self._refuse_unsupported()
        self.dynamic_chains = dynamic_chains(self.graph, self.consts)
        skipped = {member for chain in self.dynamic_chains.values() for member in chain.nodes}
        for node in self.graph.node:
            if node.output and node.output[0] in skipped:  # emitted with its chain's ConvInteger / MatMulInteger
                continue
            self.node = node
            converter = _converter(node)
            try:
                converter(self, node)
            except VerifyException as err:
                raise self.fail(str(err).splitlines()[0]) from None
        self.node = None
        outputs = [self.value(o.name) for o in self.graph.output]
        self.ops.append(func.ReturnOp(*outputs))
        block.add_ops(self.ops)
        function = func.FuncOp(
            "main", FunctionType.from_lists([a.type for a in block.args], [v.type for v in outputs]), Region(block)
        )
        return ModuleOp([function])

    def _refuse_unsupported(self) -> None:
        """One error listing every unsupported op type, with its count and first node."""
        missing: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            if _converter(node) is None:
                label = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                missing.setdefault(label, []).append(node)
        if missing:
            listed = "; ".join(f"{label} ×{len(nodes)} (first '{nodes[0].name or nodes[0].output[0]}')"
                               for label, nodes in missing.items())
            raise QuantloopError(f"{self.source}: unsupported ops: {listed}; supported ops: {', '.join(supported_ops())}")

    def _input_type(self, info: onnx.ValueInfoProto) -> TensorType:
        tensor = info.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type)
            raise QuantloopError(f"{self.source}: input '{info.name}' is {dtype}; only float32 inputs are supported")
        return TensorType(f32, [d.dim_value for d in tensor.shape.dim])

    # ------------------------------------------------------------------ converters

    def conv(self, node: onnx.NodeProto) -> None:
        x, w = self.value(node.input[0]), self.value(node.input[1])
        bias = self.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        self.emit(self.conv_op(node, x, w, bias, self.result_type(node.output[0])), node.output[0])

    def conv_op(self, node: onnx.NodeProto, x: SSAValue, w: SSAValue, bias: SSAValue | None, result_type) -> Conv2dOp:
        """A Conv2dOp with `node`'s attributes (Conv and QLinearConv share them)."""
        a = _attrs(node)
        w_shape = tuple(w.type.get_shape())
        if len(w_shape) != 4:
            raise self.fail(f"only 2-D convolutions are supported (weight shape {list(w_shape)})")
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        pads = self.pads(a, x.type.get_shape()[2:], list(a.get("kernel_shape", w_shape[2:])), strides, dilations)
        return Conv2dOp(x, w, bias, result_type, strides=strides, pads=pads,
                        dilations=dilations, group=int(a.get("group", 1)), name=node.name or None)

    def pads(self, a: Mapping[str, object], size, kernel, strides, dilations) -> list[int]:
        mode = a.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            return _same_pads(list(size), kernel, strides, dilations, mode)
        if mode == "VALID":
            return [0, 0, 0, 0]
        if mode != "NOTSET":
            raise self.fail(f"auto_pad {mode!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
        return list(a.get("pads", [0, 0, 0, 0]))

    def gemm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        c = self.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        op = GemmOp(self.value(node.input[0]), self.value(node.input[1]), c, self.result_type(node.output[0]),
                    alpha=float(a.get("alpha", 1.0)), beta=float(a.get("beta", 1.0)),
                    trans_a=bool(a.get("transA", 0)), trans_b=bool(a.get("transB", 0)), name=node.name or None)
        self.emit(op, node.output[0])

    def matmul(self, node: onnx.NodeProto) -> None:
        op = MatMulOp(self.value(node.input[0]), self.value(node.input[1]), self.result_type(node.output[0]),
                      name=node.name or None)
        self.emit(op, node.output[0])

    def add(self, node: onnx.NodeProto) -> None:
        op = AddOp(self.value(node.input[0]), self.value(node.input[1]), self.result_type(node.output[0]),
                   name=node.name or None)
        self.emit(op, node.output[0])

    def relu(self, node: onnx.NodeProto) -> None:
        self.emit(ReluOp(self.value(node.input[0]), name=node.name or None), node.output[0])

    def clip(self, node: onnx.NodeProto) -> None:
        low = self.opt_const(node, 1, "Clip min")
        high = self.opt_const(node, 2, "Clip max")
        for bound, what in ((low, "min"), (high, "max")):
            if bound is not None and np.size(bound) != 1:
                raise self.fail(f"Clip {what} must be a scalar, got shape {list(np.shape(bound))}")
        lo = -_F32_MAX if low is None else float(low)
        hi = _F32_MAX if high is None else float(high)
        self.emit(ClipOp(self.value(node.input[0]), lo, hi, name=node.name or None), node.output[0])

    def pool(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        self.only_first_output(node)
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            return self.host(node)  # 1-D / 3-D pooling (torch's LocalResponseNorm) runs on the host
        dilations = list(a.get("dilations", [1, 1]))
        if dilations != [1, 1]:
            raise self.fail(f"dilated pooling is not supported (dilations {dilations})")
        strides = list(a.get("strides", [1, 1]))
        pads = self.pads(a, self.shape_of(node.input[0])[2:], kernel, strides, dilations)
        common = dict(strides=strides, pads=pads, ceil_mode=bool(a.get("ceil_mode", 0)), name=node.name or None)
        x = self.value(node.input[0])
        out_type = self.result_type(node.output[0], like=x if node.op_type == "MaxPool" else None)
        if node.op_type == "MaxPool":
            if int(a.get("storage_order", 0)) and self.used(node.output[1] if len(node.output) > 1 else ""):
                raise self.fail("MaxPool indices are not supported")
            op = MaxPoolOp(x, kernel, out_type, **common)
        else:
            op = self.avgpool_op(node, x, out_type)
        self.emit(op, node.output[0])

    def avgpool_op(self, node: onnx.NodeProto, x: SSAValue, result_type) -> AvgPoolOp:
        """A 2-D AvgPoolOp with `node`'s attributes (AveragePool and QLinearAveragePool share them)."""
        a = _attrs(node)
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            raise self.fail(f"only 2-D average pooling is supported (kernel_shape {kernel})")
        strides = list(a.get("strides", [1, 1]))
        pads = self.pads(a, x.type.get_shape()[2:], kernel, strides, [1, 1])
        return AvgPoolOp(x, kernel, result_type, strides=strides, pads=pads, ceil_mode=bool(a.get("ceil_mode", 0)),
                         count_include_pad=bool(a.get("count_include_pad", 0)), name=node.name or None)

    def global_avgpool(self, node: onnx.NodeProto) -> None:
        self.emit(GlobalAvgPoolOp(self.value(node.input[0]), name=node.name or None), node.output[0])

    def reshape(self, node: onnx.NodeProto) -> None:
        shape = [int(d) for d in self.const(node.input[1], "Reshape shape").reshape(-1)]
        if int(_attrs(node).get("allowzero", 0)) and 0 in shape:
            raise self.fail("Reshape with allowzero=1 and a 0 in the shape is not supported")
        x = self.value(node.input[0])
        op = ReshapeOp(x, shape, self.result_type(node.output[0], like=x), name=node.name or None)
        self.emit(op, node.output[0])

    def flatten(self, node: onnx.NodeProto) -> None:
        axis = int(_attrs(node).get("axis", 1))
        self.emit(FlattenOp(self.value(node.input[0]), axis, name=node.name or None), node.output[0])

    def concat(self, node: onnx.NodeProto) -> None:
        axis = int(_attrs(node)["axis"])
        op = ConcatOp([self.value(i) for i in node.input], axis, name=node.name or None)
        self.emit(op, node.output[0])

    def softmax(self, node: onnx.NodeProto) -> None:
        rank = len(self.shape_of(node.input[0]))
        axis = int(_attrs(node).get("axis", -1 if self.opset >= 13 else 1))
        x = self.value(node.input[0])
        if self.opset >= 13 or (axis % rank) == rank - 1:
            self.emit(SoftmaxOp(x, axis, name=node.name or None), node.output[0])
            return
        # Before opset 13 Softmax normalises over all dimensions from `axis` on, as one flattened row.
        shape = self.shape_of(node.input[0])
        cut = axis % rank
        base = node.name or node.output[0]
        rows = self.emit(ReshapeOp(x, [math.prod(shape[:cut]), math.prod(shape[cut:])], name=f"{base}_rows"))
        soft = self.emit(SoftmaxOp(rows, -1, name=node.name or None))
        self.emit(ReshapeOp(soft, list(shape), name=f"{base}_shape"), node.output[0])

    def constant(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if "value" in a:
            array = numpy_helper.to_array(a["value"])
            self.onnx_types[node.output[0]] = a["value"].data_type
        elif "value_float" in a or "value_floats" in a:
            array = np.asarray(a.get("value_float", a.get("value_floats")), np.float32)
        elif "value_int" in a or "value_ints" in a:
            array = np.asarray(a.get("value_int", a.get("value_ints")), np.int64)
        else:
            raise self.fail(f"Constant with attribute {', '.join(a)} is not supported (use value)")
        self.consts[node.output[0]] = array
        self.onnx_types.setdefault(node.output[0], helper.np_dtype_to_tensor_dtype(array.dtype))

    def batchnorm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if int(a.get("training_mode", 0)):
            raise self.fail("BatchNormalization in training mode is not supported")
        self.only_first_output(node)
        operands = [self.value(name) for name in node.input[:5]]
        op = BatchNormOp(*operands, epsilon=float(a.get("epsilon", 1e-5)), name=node.name or None)
        self.emit(op, node.output[0])

    def identity(self, node: onnx.NodeProto) -> None:
        if node.input[0] in self.consts and node.input[0] not in self.values:
            self.consts[node.output[0]] = self.consts[node.input[0]]
            self.onnx_types[node.output[0]] = self.onnx_types[node.input[0]]
            return
        self.emit(IdentityOp(self.value(node.input[0]), name=node.name or None), node.output[0])

    def dropout(self, node: onnx.NodeProto) -> None:
        self.only_first_output(node)
        ratio = self.opt_const(node, 1, "Dropout ratio")
        ratio = float(_attrs(node).get("ratio", 0.5)) if ratio is None else float(ratio)
        training = self.opt_const(node, 2, "Dropout training_mode")
        if training is not None and bool(training):
            raise self.fail("Dropout in training mode is not supported")
        self.emit(DropoutOp(self.value(node.input[0]), ratio, name=node.name or None), node.output[0])

    # ------------------------------------------------------------------ real-CNN ops

    def host(self, node: onnx.NodeProto) -> None:
        """An op of `HOST_OP_TYPES`: kept in ONNX terms as `qnn.host` (runs on the host)."""
        operands, absent = [], []
        for i, name in enumerate(node.input):
            if name:
                operands.append(self.host_operand(name))
            else:
                absent.append(i)
        skip_attr = None
        if node.op_type in _ATTRIBUTE_INPUTS and _ATTRIBUTE_INPUTS[node.op_type] in _attrs(node):
            # Older opsets give axes / split sizes as an attribute; the exported model (opset 21) takes an input.
            skip_attr = _ATTRIBUTE_INPUTS[node.op_type]
            array = np.asarray(_attrs(node)[skip_attr], np.int64)
            name = f"{node.name or node.output[0]}_{skip_attr}"
            operands.insert(1, self.emit(ConstantOp(array, TensorType(i64, list(array.shape)), name=name)))
        if any(not out for out in node.output):
            raise self.fail("unnamed (omitted) outputs are not supported on host ops")
        like = operands[0] if node.op_type in _MOVES_ELEMENTS and operands else None
        types = [self.host_result_type(out, like) for out in node.output]
        attrs = {a.name: _xdsl_attr(a, self.fail) for a in node.attribute if a.name != skip_attr}
        op = HostOp(node.op_type, operands, types, attrs, absent=absent, name=node.name or None)
        self.ops.append(op)
        for out, result in zip(node.output, op.results):
            self.values[out] = result
            result.name_hint = _hint(out)

    def host_operand(self, name: str) -> SSAValue:
        if name in self.values or name not in self.consts or self.consts[name].dtype == np.float32:
            return self.value(name)
        array = self.consts[name]
        elem = _ELEMENT_TYPES.get(array.dtype)
        if elem is None:
            raise self.fail(f"constant '{name}' of type {array.dtype} is not supported (float32, int64, int32 are)")
        return self.emit(ConstantOp(array, TensorType(elem, list(array.shape)), name=name), name)

    def host_result_type(self, output: str, like: SSAValue | None) -> TensorType:
        shape = self.shapes.get(output)
        if shape is None:
            raise self.fail(f"the shape of output '{output}' is not known after ONNX shape inference")
        onnx_type = self.elem_types.get(output, onnx.TensorProto.FLOAT)
        moves_codes = like is not None and isinstance(like.type.element_type, UniformType) and onnx_type in ONNX_STORAGE
        if onnx_type == onnx.TensorProto.FLOAT or moves_codes:  # a Transpose of uint8 codes (QOperator) keeps their type
            return self.result_type(output, like)
        elem = _ELEMENT_TYPES.get(helper.tensor_dtype_to_np_dtype(onnx_type))
        if elem is None:
            raise self.fail(f"output '{output}' is {onnx.TensorProto.DataType.Name(onnx_type)}; host ops compute "
                            "float32, int64 or int32")
        return TensorType(elem, list(shape))

    def reduce_mean(self, node: onnx.NodeProto) -> None:
        """ReduceMean over H and W of an NCHW tensor is global average pooling; any other is a host op."""
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.consts.get(node.input[1])
        rank = len(self.shape_of(node.input[0]))
        if rank != 4 or axes is None or sorted(int(x) % 4 for x in np.asarray(axes).reshape(-1)) != [2, 3]:
            return self.host(node)
        pooled = GlobalAvgPoolOp(self.value(node.input[0]), name=node.name or None)
        if int(a.get("keepdims", 1)):
            self.emit(pooled, node.output[0])
            return
        self.emit(pooled)
        self.emit(ReshapeOp(pooled, list(self.shapes[node.output[0]]), name=f"{node.name or node.output[0]}_squeeze"),
                  node.output[0])

    def sum(self, node: onnx.NodeProto) -> None:
        """Sum of n inputs: a chain of qnn.add (one input: the identity)."""
        values = [self.value(name) for name in node.input]
        if len(values) == 1:
            self.emit(IdentityOp(values[0], name=node.name or None), node.output[0])
            return
        total = values[0]
        for i, other in enumerate(values[1:], start=2):
            last = i == len(values)
            op = AddOp(total, other, self.result_type(node.output[0]) if last else None,
                       name=(node.name or None) if last else f"{node.name or node.output[0]}_{i - 1}")
            total = self.emit(op, node.output[0] if last else None)

    def static_reshape(self, node: onnx.NodeProto) -> None:
        """Squeeze / Unsqueeze: a reshape to the (static) inferred output shape."""
        x = self.value(node.input[0])
        shape = self.shapes.get(node.output[0])
        if shape is None:
            raise self.fail(f"the shape of output '{node.output[0]}' is not known after ONNX shape inference")
        self.emit(ReshapeOp(x, list(shape), self.result_type(node.output[0], like=x), name=node.name or None),
                  node.output[0])

    # ------------------------------------------------------------------ quantization

    def quantize_linear(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if int(a.get("block_size", 0)):
            raise self.fail("blocked quantization (block_size) is not supported")
        scale = self.const(node.input[1], "QuantizeLinear scale")
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zp_name is not None:
            zp = self.const(zp_name, "QuantizeLinear zero point")
            onnx_type = self.onnx_types[zp_name]
        else:
            onnx_type = int(a.get("output_dtype", 0)) or onnx.TensorProto.UINT8
            zp = None
        if onnx_type not in ONNX_STORAGE:
            raise self.fail(f"quantization to {onnx.TensorProto.DataType.Name(onnx_type)} is not supported "
                            "(int8, uint8, int16, uint16, int4, uint4 are)")
        bits, signed = ONNX_STORAGE[onnx_type]
        x = self.value(node.input[0])
        shape = x.type.get_shape()
        elem = uniform_type(bits, signed, scale, zp, int(a.get("axis", 1)), len(shape), self._where())
        self.emit(QuantizeOp(x, TensorType(elem, list(shape)), name=node.name or None), node.output[0])

    def dequantize_linear(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if int(a.get("block_size", 0)):
            raise self.fail("blocked quantization (block_size) is not supported")
        scale = self.const(node.input[1], "DequantizeLinear scale")
        zp = self.opt_const(node, 2, "DequantizeLinear zero point")
        axis = int(a.get("axis", 1))
        source = node.input[0]
        if source in self.consts and source not in self.values:
            self._dequantize_constant(node, source, scale, zp, axis)
            return
        x = self.value(source)
        elem = x.type.element_type
        if not isinstance(elem, (UniformType, UniformPerAxisType)):
            raise self.fail(f"input '{source}' is not a quantized tensor (type {elem})")
        rank = len(x.type.get_shape())
        expected = uniform_type(elem.bits, elem.signed, scale, zp, axis, rank, self._where())
        if expected != elem:
            raise self.fail(f"scale/zero point differ from those of its input '{source}' (requantization is not supported)")
        self.emit(DequantizeOp(x, name=node.name or None), node.output[0])

    def _dequantize_constant(self, node, source: str, scale, zp, axis: int) -> None:
        codes = self.consts[source]
        onnx_type = self.onnx_types[source]
        if onnx_type == onnx.TensorProto.INT32:
            # Quantized biases: fold exactly as DequantizeLinear computes, (q - zp) * scale in float32.
            zp32 = np.zeros((), np.int64) if zp is None else zp.astype(np.int64)
            shift = (codes.astype(np.int64) - _along(zp32, codes.ndim, axis)).astype(np.float32)
            self.consts[node.output[0]] = shift * _along(np.asarray(scale, np.float32), codes.ndim, axis)
            self.onnx_types[node.output[0]] = onnx.TensorProto.FLOAT
            return
        if onnx_type not in ONNX_STORAGE:
            raise self.fail(f"dequantizing {onnx.TensorProto.DataType.Name(onnx_type)} weights is not supported")
        bits, signed = ONNX_STORAGE[onnx_type]
        elem = uniform_type(bits, signed, scale, zp, axis, codes.ndim, self._where())
        data = np.asarray(codes).astype(container(bits, signed))
        weights = self.emit(ConstantOp(data, TensorType(elem, list(codes.shape)), name=source))
        weights.name_hint = _hint(source)
        self.emit(DequantizeOp(weights, name=node.name or None), node.output[0])

    def _where(self) -> str:
        node = self.node
        return f"{self.source}: node '{node.name or node.output[0]}' ({node.op_type})" if node else self.source

    def qonnx_quant(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        signed = bool(int(a.get("signed", 1)))
        narrow = bool(int(a.get("narrow", 0)))
        mode = a.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
        scale = np.asarray(self.const(node.input[1], "Quant scale"), np.float32)
        zeropt = np.asarray(self.const(node.input[2], "Quant zero point"), np.float32)
        bitwidth = float(np.asarray(self.const(node.input[3], "Quant bitwidth")).reshape(-1)[0])
        if bitwidth != int(bitwidth) or int(bitwidth) not in LEGAL_BITS:
            raise self.fail(f"bitwidth {bitwidth:g} is not a legal storage width ({legal_text()})")
        if np.any(zeropt != np.round(zeropt)):
            raise self.fail("the zero point must be integer-valued")
        bits = int(bitwidth)
        source = node.input[0]
        shape = self.shape_of(source)
        axis, scale_vec, zp_vec = self._qonnx_axis(scale, zeropt, shape)
        elem = uniform_type(bits, signed, scale_vec, zp_vec.astype(np.int64), axis, len(shape), self._where())
        if source in self.consts and source not in self.values:
            codes = _qonnx_codes(self.consts[source], scale, zeropt, bits, signed, narrow, mode, self.fail)
            self._quantized_constant(node, source, elem, codes)
            return
        if narrow:
            raise self.fail("narrow-range quantization of activations is not supported (only of constant weights)")
        if mode != "ROUND":
            raise self.fail(f"rounding_mode {mode} on activations is not supported (only ROUND, half to even)")
        self._quantize_dequantize(node, self.value(source), elem)

    def _quantized_constant(self, node: onnx.NodeProto, source: str, elem, codes: np.ndarray) -> None:
        """`source`'s integer codes as a quantized constant, dequantized as `node`'s output."""
        data = codes.astype(container(elem.bits, elem.signed))
        weights = self.emit(ConstantOp(data, TensorType(elem, list(codes.shape)), name=source))
        weights.name_hint = _hint(source)
        self.emit(DequantizeOp(weights, name=node.name or None), node.output[0])

    def _quantize_dequantize(self, node: onnx.NodeProto, x: SSAValue, elem) -> None:
        quantized = self.emit(QuantizeOp(x, TensorType(elem, list(x.type.get_shape())), name=node.name or None))
        self.emit(DequantizeOp(quantized, name=(node.name + "_dq") if node.name else None), node.output[0])

    def qonnx_bipolar_quant(self, node: onnx.NodeProto) -> None:
        """BipolarQuant: +scale where x >= 0, else -scale. On constant weights the ±1 codes are 2-bit signed
        codes at that scale (exact); on activations sign() is no uniform quantization and is refused."""
        scale = np.asarray(self.const(node.input[1], "BipolarQuant scale"), np.float32)
        source = node.input[0]
        if source not in self.consts or source in self.values:
            raise self.fail("BipolarQuant of activations (a sign function) is not a uniform quantization; "
                            "only constant weights are supported")
        shape = self.shape_of(source)
        axis, scale_vec, _ = self._qonnx_axis(scale, np.zeros((), np.float32), shape)
        elem = uniform_type(2, True, scale_vec, None, axis, len(shape), self._where())
        self._quantized_constant(node, source, elem, np.where(np.asarray(self.consts[source]) >= 0, 1, -1))

    def qonnx_trunc(self, node: onnx.NodeProto) -> None:
        """Trunc v2 (x, scale, zeropt, in_bitwidth, out_scale, out_bitwidth) with rounding_mode ROUND, on a
        value the model quantized at (scale, zeropt): its codes q become round(q / t), t = out_scale / scale
        a power of two, which is the quantization of x at out_scale with zero point zeropt / t.
        FLOOR / CEIL (qnn.quantize rounds half to even), narrow range and v1 (5 inputs) are refused."""
        a = _attrs(node)
        mode = a.get("rounding_mode", b"FLOOR")
        mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
        if len(node.input) != 6:
            raise self.fail("Trunc v1 (5 inputs) is not supported; only v2 (x, scale, zeropt, in_bitwidth, out_scale, out_bitwidth)")
        if mode != "ROUND":
            raise self.fail(f"rounding_mode {mode} is not supported (only ROUND: qnn.quantize rounds half to even)")
        if int(a.get("narrow", 0)):
            raise self.fail("narrow-range truncation is not supported")
        signed = bool(int(a.get("signed", 1)))
        scale, zeropt, out_scale = (np.asarray(self.const(node.input[i], what), np.float32).reshape(-1)
                                    for i, what in ((1, "Trunc scale"), (2, "Trunc zero point"), (4, "Trunc out_scale")))
        bits = float(np.asarray(self.const(node.input[5], "Trunc out_bitwidth")).reshape(-1)[0])
        if bits != int(bits) or int(bits) not in LEGAL_BITS:
            raise self.fail(f"out_bitwidth {bits:g} is not a legal storage width ({legal_text()})")
        if scale.size != 1 or zeropt.size != 1 or out_scale.size != 1:
            raise self.fail("only per-tensor scale, zero point and out_scale are supported")
        x = self.value(node.input[0])
        producer = x.owner
        source = producer.input.type.element_type if isinstance(producer, DequantizeOp) else None
        on_grid = isinstance(source, UniformType) and source == uniform_type(
            source.bits, source.signed, scale, zeropt.astype(np.int64), 1, len(x.type.get_shape()), self._where())
        if not on_grid:
            raise self.fail(f"the input '{node.input[0]}' must be quantized by the model at the Trunc's scale and zero point")
        ratio = float(out_scale[0] / scale[0])
        shift = round(math.log2(ratio)) if ratio > 0 else 0
        if ratio <= 0 or 2.0**shift != ratio or zeropt[0] % ratio:
            raise self.fail(f"out_scale / scale = {ratio:g} must be a power of two dividing the zero point")
        elem = uniform_type(int(bits), signed, out_scale, np.asarray(zeropt / ratio, np.int64), 1,
                            len(x.type.get_shape()), self._where())
        self._quantize_dequantize(node, x, elem)

    def _qonnx_axis(self, scale: np.ndarray, zeropt: np.ndarray, shape: tuple[int, ...]):
        """Per tensor, or per axis when scale (and zero point) vary along exactly one dimension."""
        if scale.size == 1 and zeropt.size == 1:
            return 0, scale.reshape(()), zeropt.reshape(())
        full = np.broadcast_shapes(scale.shape, zeropt.shape)
        varying = [i for i, d in enumerate(full) if d != 1]
        if len(varying) != 1 or len(full) > len(shape) or full[varying[0]] != shape[varying[0] + len(shape) - len(full)]:
            raise self.fail(f"scale of shape {list(scale.shape)} is neither per tensor nor per one axis of {list(shape)}")
        axis = varying[0] + len(shape) - len(full)
        return axis, np.broadcast_to(scale, full).reshape(-1), np.broadcast_to(zeropt, full).reshape(-1)


#: Host ops whose results only move input elements: they keep a per-tensor quantized element type.
_MOVES_ELEMENTS = frozenset({"Transpose", "Slice", "Split", "Gather", "Tile", "Expand", "DepthToSpace", "SpaceToDepth"})
#: Host ops whose attribute (before opsets 13/18) became their second input; imported as that input.
_ATTRIBUTE_INPUTS = {"ReduceMean": "axes", "ReduceMax": "axes", "ReduceSum": "axes", "Split": "split"}
_ELEMENT_TYPES = {np.dtype(np.float32): f32, np.dtype(np.int64): i64, np.dtype(np.int32): i32}


def _xdsl_attr(attr: onnx.AttributeProto, fail: Callable[[str], QuantloopError]) -> Attribute:
    """An ONNX attribute as an xDSL attribute that `onnx_export.onnx_attr` turns back into the same value."""
    kind = onnx.AttributeProto
    if attr.type == kind.INT:
        return IntegerAttr(attr.i, i64)
    if attr.type == kind.FLOAT:
        return FloatAttr(attr.f, f32)
    if attr.type == kind.STRING:
        return StringAttr(attr.s.decode())
    if attr.type == kind.INTS:
        return DenseArrayBase.from_list(i64, list(attr.ints))
    if attr.type == kind.FLOATS:
        return DenseArrayBase.from_list(f32, list(attr.floats))
    if attr.type == kind.STRINGS:
        return ArrayAttr([StringAttr(v.decode()) for v in attr.strings])
    raise fail(f"attribute '{attr.name}' of type {kind.AttributeType.Name(attr.type)} is not supported on host ops")


def _along(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A scalar or 1-D per-axis parameter shaped to broadcast against an `ndim`-D tensor along `axis`."""
    if param.ndim == 0 or param.size == 1 and ndim == 0:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return param.reshape(shape)


def _qonnx_codes(x, scale, zeropt, bits, signed, narrow, mode, fail) -> np.ndarray:
    if signed:
        low, high = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1 - int(narrow)
    rounding = {"ROUND": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "ROUND_TO_ZERO": np.trunc}
    if mode not in rounding:
        raise fail(f"rounding_mode {mode} is not supported ({', '.join(rounding)})")
    scaled = np.asarray(x, np.float32) / scale + zeropt
    return np.clip(rounding[mode](scaled), low, high).astype(np.int64)


def _converter(node: onnx.NodeProto) -> Callable[[_Importer, onnx.NodeProto], None] | None:
    if node.domain in ("", "ai.onnx"):
        return CONVERTERS.get(node.op_type) or (_Importer.host if node.op_type in HOST_OP_TYPES else None)
    return DOMAIN_CONVERTERS.get(node.domain, {}).get(node.op_type)


CONVERTERS: dict[str, Callable[[_Importer, onnx.NodeProto], None]] = {
    "Conv": _Importer.conv,
    "Gemm": _Importer.gemm,
    "MatMul": _Importer.matmul,
    "Add": _Importer.add,
    "Relu": _Importer.relu,
    "Clip": _Importer.clip,
    "MaxPool": _Importer.pool,
    "AveragePool": _Importer.pool,
    "GlobalAveragePool": _Importer.global_avgpool,
    "Reshape": _Importer.reshape,
    "Flatten": _Importer.flatten,
    "Concat": _Importer.concat,
    "Softmax": _Importer.softmax,
    "ReduceMean": _Importer.reduce_mean,
    "Sum": _Importer.sum,
    "Squeeze": _Importer.static_reshape,
    "Unsqueeze": _Importer.static_reshape,
    "Constant": _Importer.constant,
    "BatchNormalization": _Importer.batchnorm,
    "Identity": _Importer.identity,
    "Dropout": _Importer.dropout,
    "QuantizeLinear": _Importer.quantize_linear,
    "DequantizeLinear": _Importer.dequantize_linear,
    **QOPERATOR_CONVERTERS,
}
QONNX_CONVERTERS: dict[str, Callable[[_Importer, onnx.NodeProto], None]] = {
    "Quant": _Importer.qonnx_quant,
    "BipolarQuant": _Importer.qonnx_bipolar_quant,
    "Trunc": _Importer.qonnx_trunc,
}
#: onnxruntime's contrib domain: QuantizeLinear / DequantizeLinear as the standard ones (ORT writes int4 and
#: int16 QDQ there below opset 21).
MICROSOFT_CONVERTERS: dict[str, Callable[[_Importer, onnx.NodeProto], None]] = {
    "QuantizeLinear": _Importer.quantize_linear,
    "DequantizeLinear": _Importer.dequantize_linear,
    **MICROSOFT_QOPERATOR_CONVERTERS,
}
DOMAIN_CONVERTERS = {**{d: QONNX_CONVERTERS for d in QONNX_DOMAINS}, MICROSOFT_DOMAIN: MICROSOFT_CONVERTERS}


def supported_ops() -> list[str]:
    return (sorted({*CONVERTERS, *HOST_OP_TYPES}) + [f"{op} (QONNX)" for op in sorted(QONNX_CONVERTERS)]
            + [f"{MICROSOFT_DOMAIN}.{op}" for op in sorted(MICROSOFT_CONVERTERS)])
