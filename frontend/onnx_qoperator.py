"""ONNX QOperator form -> qnn ops with quantized operand and result types.

`QLinearConv`, `QLinearMatMul` (standard) and onnxruntime's `QGemm`, `QLinearAdd`, `QLinearMul`,
`QLinearConcat`, `QLinearGlobalAveragePool`, `QLinearAveragePool`, `QLinearSigmoid`, `QLinearLeakyRelu` (`com.microsoft`) carry each operand's and the result's scale and zero point
as inputs. They become the plain qnn op whose operands are the quantized values (integer initializers
become quantized `qnn.constant`s holding the model's codes) and whose result type is the output's
`!qnn.uniform`: the same IR `qnn-fold-quant` makes of the QDQ form. A runtime operand must already carry
exactly the scale and zero point the node names (a mismatch would be a hidden requantization).

Int32 biases (`QLinearConv`'s B, `QGemm`'s C) are quantized at scale `x_scale · w_scale` with zero point 0;
they become float constants of `float32(B) · float32(x_scale · w_scale)`, as the backend stores biases.

The integer kernels (int32 accumulation, one requantization multiplier) round their outputs differently
from the float reference a qnn op stands for: results agree within 1 LSB of the output scale.

`ConvInteger` / `MatMulInteger` produce int32 accumulators with no scale of their own. They are imported
in the chain onnxruntime's `quantize_dynamic` writes (see `dynamic_chains`): the layer keeps the model's
weight codes, scale and zero point; its input activation, which the model quantizes with a scale computed
at run time, is left float and gets bits from `--bits` and calibration like any float tensor. Such a
model's outputs therefore differ from `model.quant.onnx`'s by the difference between the run-time and
the calibrated activation scales (no LSB bound). An accumulator op outside that chain is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper
from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Attribute, Operation, SSAValue

from quantloop.runtime.onnx_types import ONNX_STORAGE, uniform_type
from quantloop.ir.types import container
from quantloop.ir import AddOp, ConcatOp, ConstantOp, Conv2dOp, GemmOp, GlobalAvgPoolOp, MatMulOp
from quantloop.ir.ops import HostOp, broadcast_shapes

if TYPE_CHECKING:
    from quantloop.frontend.onnx_import import _Importer


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _input(node: onnx.NodeProto, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _storage(imp: _Importer, zp_name: str | None, default: int = onnx.TensorProto.UINT8) -> tuple[int, bool]:
    onnx_type = imp.onnx_types.get(zp_name, default) if zp_name else default
    if onnx_type not in ONNX_STORAGE:
        raise imp.fail(f"quantized type {onnx.TensorProto.DataType.Name(onnx_type)} is not supported "
                       "(int8, uint8, int16, uint16, int4, uint4 are)")
    return ONNX_STORAGE[onnx_type]


def quantized_operand(imp: _Importer, name: str, scale_name: str, zp_name: str | None, axis: int) -> SSAValue:
    """The quantized value `name` (codes, scale, zero point): a quantized constant for an integer
    initializer, else a runtime value whose type must carry exactly this scale and zero point."""
    scale = imp.const(scale_name, "scale")
    zp = imp.const(zp_name, "zero point") if zp_name else None
    if name in imp.consts and name not in imp.values:
        codes = imp.consts[name]
        onnx_type = imp.onnx_types.get(name)
        if onnx_type not in ONNX_STORAGE:
            dtype = onnx.TensorProto.DataType.Name(onnx_type) if onnx_type is not None else str(codes.dtype)
            raise imp.fail(f"constant '{name}' of type {dtype} is not quantized codes (int8, uint8, int16, uint16, int4, uint4)")
        bits, signed = ONNX_STORAGE[onnx_type]
        elem = uniform_type(bits, signed, scale, zp, axis, codes.ndim, imp._where())
        value = imp.emit(ConstantOp(np.asarray(codes).astype(container(bits, signed)), TensorType(elem, list(codes.shape)), name=name), name)
        return value
    value = imp.value(name)
    elem = value.type.element_type
    bits, signed = getattr(elem, "bits", None), getattr(elem, "signed", None)
    if bits is None or not hasattr(elem, "scale") and not hasattr(elem, "scales"):
        raise imp.fail(f"input '{name}' is not a quantized tensor (type {elem})")
    expected = uniform_type(bits, signed, scale, zp, axis, len(value.type.get_shape()), imp._where())
    if expected != elem:
        raise imp.fail(f"the scale/zero point given for input '{name}' differ from those it carries (requantization is not supported)")
    return value


def _bias(imp: _Importer, name: str | None, scale: np.ndarray) -> SSAValue | None:
    """An int32 bias at scale `scale` (per tensor or per output channel) as a float constant."""
    if name is None:
        return None
    codes = imp.const(name, "bias")
    if imp.onnx_types.get(name) != onnx.TensorProto.INT32:
        raise imp.fail(f"bias '{name}' must be int32 codes")
    values = codes.astype(np.float32) * np.asarray(scale, np.float32).reshape(-1 if np.size(scale) > 1 else ())
    return imp.emit(ConstantOp(values.astype(np.float32), TensorType(f32, list(values.shape)), name=name))


def _emit_quantized(imp: _Importer, node: onnx.NodeProto, build: Callable[[Attribute | None], Operation],
                    scale_name: str | None, zp_name: str | None, shape: tuple[int, ...] | None = None) -> None:
    """Emit `build(result_type)` with the output quantized at (scale, zero point), or float without a scale.
    The output's shape: from shape inference, else `shape`, else what `build(None)` infers."""
    output = node.output[0]
    shape = imp.shapes.get(output) or shape or tuple(build(None).results[0].type.get_shape())
    if scale_name is None:
        result_type = TensorType(f32, list(shape))
    else:
        bits, signed = _storage(imp, zp_name)
        scale = imp.const(scale_name, "output scale")
        zp = imp.const(zp_name, "output zero point") if zp_name else None
        result_type = TensorType(uniform_type(bits, signed, scale, zp, 1, len(shape), imp._where()), list(shape))
    imp.emit(build(result_type), output)


def _scales(imp: _Importer, *names: str) -> np.ndarray:
    product = np.float32(1.0)
    for name in names:
        product = product * np.asarray(imp.const(name, "scale"), np.float32)
    return product


def qlinear_conv(imp: _Importer, node: onnx.NodeProto) -> None:
    x = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    w = quantized_operand(imp, node.input[3], node.input[4], _input(node, 5), 0)
    bias = _bias(imp, _input(node, 8), _scales(imp, node.input[1], node.input[4]))
    _emit_quantized(imp, node, lambda t: imp.conv_op(node, x, w, bias, t), node.input[6], _input(node, 7))


def qlinear_matmul(imp: _Importer, node: onnx.NodeProto) -> None:
    a = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    b_rank = len(imp.shape_of(node.input[3]))
    b = quantized_operand(imp, node.input[3], node.input[4], _input(node, 5), b_rank - 1)
    _emit_quantized(imp, node, lambda t: MatMulOp(a, b, t, name=node.name or None), node.input[6], _input(node, 7))


def qgemm(imp: _Importer, node: onnx.NodeProto) -> None:
    """com.microsoft.QGemm: Y = alpha · (A − a_zp)(B − b_zp) + C, C int32 at scale a_scale · b_scale."""
    a_attrs = _attrs(node)
    trans_b = bool(a_attrs.get("transB", 0))
    a = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    b = quantized_operand(imp, node.input[3], node.input[4], _input(node, 5), 0 if trans_b else 1)
    c = _bias(imp, _input(node, 6), _scales(imp, node.input[1], node.input[4]))

    def build(t: Attribute | None) -> Operation:
        return GemmOp(a, b, c, t, alpha=float(a_attrs.get("alpha", 1.0)), beta=1.0,
                      trans_a=bool(a_attrs.get("transA", 0)), trans_b=trans_b, name=node.name or None)

    _emit_quantized(imp, node, build, _input(node, 7), _input(node, 8))


def qlinear_add(imp: _Importer, node: onnx.NodeProto) -> None:
    lhs = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    rhs = quantized_operand(imp, node.input[3], node.input[4], _input(node, 5), 1)
    _emit_quantized(imp, node, lambda t: AddOp(lhs, rhs, t, name=node.name or None), node.input[6], _input(node, 7))


def qlinear_global_avgpool(imp: _Importer, node: onnx.NodeProto) -> None:
    if int(_attrs(node).get("channels_last", 0)):
        raise imp.fail("channels_last=1 (NHWC) is not supported")
    x = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    _emit_quantized(imp, node, lambda t: GlobalAvgPoolOp(x, t, name=node.name or None), node.input[3], _input(node, 4))


def qlinear_avgpool(imp: _Importer, node: onnx.NodeProto) -> None:
    """QLinearAveragePool (X, X_scale, X_zp, Y_scale, Y_zp; AveragePool's attributes): DenseNet's transitions."""
    if int(_attrs(node).get("channels_last", 0)):
        raise imp.fail("channels_last=1 (NHWC) is not supported")
    x = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    _emit_quantized(imp, node, lambda t: imp.avgpool_op(node, x, t), node.input[3], _input(node, 4))


def _host(imp: _Importer, node: onnx.NodeProto, op_type: str, operands: list[SSAValue]):
    """A builder of the `qnn.host` op `op_type` with `node`'s attributes (channels_last excepted)."""
    from quantloop.frontend.onnx_import import _xdsl_attr

    attrs = {a.name: _xdsl_attr(a, imp.fail) for a in node.attribute if a.name != "channels_last"}
    return lambda t: HostOp(op_type, operands, [t], attrs, name=node.name or None)


def qlinear_mul(imp: _Importer, node: onnx.NodeProto) -> None:
    a = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
    b = quantized_operand(imp, node.input[3], node.input[4], _input(node, 5), 1)
    shape = broadcast_shapes(tuple(a.type.get_shape()), tuple(b.type.get_shape()))
    if shape is None:
        raise imp.fail(f"operand shapes {a.type.get_shape()} and {b.type.get_shape()} do not broadcast")
    _emit_quantized(imp, node, _host(imp, node, "Mul", [a, b]), node.input[6], _input(node, 7), shape)


def qlinear_unary(op_type: str) -> Callable[[_Importer, onnx.NodeProto], None]:
    """QLinearSigmoid / QLinearLeakyRelu (X, X_scale, X_zp, Y_scale, Y_zp): the float op on the host."""

    def convert(imp: _Importer, node: onnx.NodeProto) -> None:
        x = quantized_operand(imp, node.input[0], node.input[1], _input(node, 2), 1)
        _emit_quantized(imp, node, _host(imp, node, op_type, [x]), node.input[3], _input(node, 4),
                        tuple(x.type.get_shape()))

    return convert


def qlinear_concat(imp: _Importer, node: onnx.NodeProto) -> None:
    """QLinearConcat (Y_scale, Y_zp, then X, X_scale, X_zp per input; axis)."""
    if (len(node.input) - 2) % 3:
        raise imp.fail(f"{len(node.input)} inputs are not Y_scale, Y_zp and (X, X_scale, X_zp) triples")
    values = [quantized_operand(imp, node.input[i], node.input[i + 1], node.input[i + 2] or None, 1)
              for i in range(2, len(node.input), 3)]
    axis = int(_attrs(node)["axis"])
    _emit_quantized(imp, node, lambda t: ConcatOp(values, axis, t, name=node.name or None), node.input[0], _input(node, 1))


@dataclass(frozen=True)
class DynamicChain:
    """`xq, xs, xzp = DynamicQuantizeLinear(x)`; `s = Mul(xs, w_scale)`; `acc = ConvInteger(xq, w, xzp, w_zp)`
    (or MatMulInteger); `y = Mul(Cast(acc), s)`; optionally `y' = Add(y, bias)` with a constant bias."""

    source: str  # x, the float activation
    weight: str
    weight_zp: str | None
    weight_scale: str
    bias: str | None
    output: str  # y or y'
    nodes: tuple[str, ...]  # first outputs of the chain's nodes other than the accumulator op itself


def dynamic_chains(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> dict[int, DynamicChain]:
    """The chains of `DynamicChain` in `graph`, keyed by the output of their ConvInteger / MatMulInteger node."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}

    def only_reader(name: str, op_type: str) -> onnx.NodeProto | None:
        found = readers.get(name, [])
        if len(found) == 1 and found[0].op_type == op_type and name not in outputs:
            return found[0]
        return None

    chains: dict[int, DynamicChain] = {}
    for node in graph.node:
        if node.op_type not in ("ConvInteger", "MatMulInteger") or len(node.input) < 3:
            continue
        dql = producer.get(node.input[0])
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or node.input[2] != dql.output[2]:
            continue
        if node.input[1] not in consts or (len(node.input) > 3 and node.input[3] and node.input[3] not in consts):
            continue
        cast = only_reader(node.output[0], "Cast")
        mul = cast and only_reader(cast.output[0], "Mul")
        scale = mul and producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
        if not (scale and scale.op_type == "Mul" and dql.output[1] in scale.input):
            continue
        weight_scale = next((i for i in scale.input if i != dql.output[1]), "")
        if weight_scale not in consts or any(r is not mul for r in readers.get(scale.output[0], [])):
            continue
        if any(r.op_type not in ("ConvInteger", "MatMulInteger", "Mul") for o in dql.output[:2] for r in readers.get(o, [])):
            continue
        add = only_reader(mul.output[0], "Add")
        bias = add and next((i for i in add.input if i != mul.output[0] and i in consts), None)
        members = [dql, scale, cast, mul] + ([add] if bias else [])
        chains[node.output[0]] = DynamicChain(dql.input[0], node.input[1], node.input[3] if len(node.input) > 3 and node.input[3] else None,
                                        weight_scale, bias, (add if bias else mul).output[0], tuple(n.output[0] for n in members))
    return chains


def integer_accumulator(imp: _Importer, node: onnx.NodeProto) -> None:
    chain = imp.dynamic_chains.get(node.output[0])
    if chain is None:
        raise imp.fail(f"{node.op_type} writes int32 accumulators whose scale is not in the model; only onnxruntime's "
                       "dynamic-quantization chain (DynamicQuantizeLinear, Mul of scales, Cast, Mul) is supported")
    x = imp.value(chain.source)
    conv = node.op_type == "ConvInteger"
    w_rank = len(imp.shape_of(chain.weight))
    w = quantized_operand(imp, chain.weight, chain.weight_scale, chain.weight_zp, 0 if conv else w_rank - 1)
    bias = None
    if chain.bias is not None:
        bias_values = np.asarray(imp.consts[chain.bias], np.float32)
        channels = w.type.get_shape()[0 if conv else -1]
        if bias_values.size != channels:
            raise imp.fail(f"bias '{chain.bias}' has {bias_values.size} values for {channels} output channels")
        bias = imp.emit(ConstantOp(bias_values.reshape(-1), TensorType(f32, [channels]), name=chain.bias))
    result_type = imp.result_type(chain.output)
    if conv:
        op = imp.conv_op(node, x, w, bias, result_type)
    else:
        op = MatMulOp(x, w, result_type, name=node.name or None)
        if bias is not None:
            imp.emit(op)
            op = AddOp(op.results[0], bias, result_type, name=f"{node.name}_bias" if node.name else None)
    imp.emit(op, chain.output)


def absorbed(imp: _Importer, node: onnx.NodeProto) -> None:
    """A node of a dynamic-quantization chain: its accumulator op emits the whole chain."""
    if not any(node.output[0] in chain.nodes for chain in imp.dynamic_chains.values()):
        raise imp.fail(f"{node.op_type} is only supported inside onnxruntime's dynamic-quantization chain "
                       "(DynamicQuantizeLinear, ConvInteger / MatMulInteger, Cast, Mul)")


QOPERATOR_CONVERTERS: dict[str, Callable[[_Importer, onnx.NodeProto], None]] = {
    "QLinearConv": qlinear_conv,
    "QLinearMatMul": qlinear_matmul,
    "ConvInteger": integer_accumulator,
    "MatMulInteger": integer_accumulator,
    "DynamicQuantizeLinear": absorbed,
    "Cast": absorbed,
}
MICROSOFT_QOPERATOR_CONVERTERS: dict[str, Callable[[_Importer, onnx.NodeProto], None]] = {
    "QGemm": qgemm,
    "QLinearAdd": qlinear_add,
    "QLinearGlobalAveragePool": qlinear_global_avgpool,
    "QLinearAveragePool": qlinear_avgpool,
    "QLinearMul": qlinear_mul,
    "QLinearConcat": qlinear_concat,
    "QLinearSigmoid": qlinear_unary("Sigmoid"),
    "QLinearLeakyRelu": qlinear_unary("LeakyRelu"),
}
