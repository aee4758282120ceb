"""ONNX shape inference through onnxruntime's `com.microsoft` quantized ops.

ONNX's shape inference does not know the contrib domain: it leaves the output of a QLinearConcat, QGemm,
QLinearGlobalAveragePool, ... and everything computed from it without a shape, so a Transpose or Reshape
after one (ShuffleNet's channel shuffle in QOperator form) cannot be imported. `standard_twin` gives every
such node a standard stand-in, for inference only: its data inputs Cast to float, the float op it
quantizes (with its attributes), the result Cast to the output's storage type (the output zero point's
type; uint8 without a zero point, as onnxruntime assumes; float where the node has no output scale).
ONNX then infers the twin graph with its own rules, and the original tensors keep their inferred types.
A node with an operand or result Cast cannot take at the model's opset (int4 before opset 21, as onnxruntime
writes its int4 QDQ in `com.microsoft` below it) keeps no twin: its outputs stay unknown, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

MICROSOFT_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class _Twin:
    float_op: str | None  # None: the Cast alone (Quantize/DequantizeLinear)
    data: tuple[int, ...] | None  # input positions of the data operands; None: every third from 2 (QLinearConcat)
    out_scale: int | None  # input position of the output scale; None: the output is float
    out_zp: int | None
    attributes: tuple[str, ...] = ()


#: Input layout of the contrib ops the importer converts (onnxruntime's ContribOperators.md).
_TWINS: dict[str, _Twin] = {
    "QGemm": _Twin("Gemm", (0, 3, 6), 7, 8, ("alpha", "transA", "transB")),
    "QLinearAdd": _Twin("Add", (0, 3), 6, 7),
    "QLinearMul": _Twin("Mul", (0, 3), 6, 7),
    "QLinearGlobalAveragePool": _Twin("GlobalAveragePool", (0,), 3, 4),
    "QLinearAveragePool": _Twin("AveragePool", (0,), 3, 4,
                                ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")),
    "QLinearConcat": _Twin("Concat", None, 0, 1, ("axis",)),
    "QLinearSigmoid": _Twin("Sigmoid", (0,), 3, 4),
    "QLinearLeakyRelu": _Twin("LeakyRelu", (0,), 3, 4, ("alpha",)),
    "QuantizeLinear": _Twin(None, (0,), 1, 2),
    "DequantizeLinear": _Twin(None, (0,), None, None),
}


#: Element types Cast takes only from an opset on; older models leave nodes on them without a twin.
_CAST_SINCE = {TensorProto.INT4: 21, TensorProto.UINT4: 21}


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info]:
        types.setdefault(info.name, info.type.tensor_type.elem_type)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def _arg(node: onnx.NodeProto, index: int | None) -> str | None:
    return node.input[index] if index is not None and index < len(node.input) and node.input[index] else None


def _twin_nodes(node: onnx.NodeProto, twin: _Twin, types: dict[str, int], opset: int, prefix: str) -> list[onnx.NodeProto]:
    """`node`'s stand-in, or `[node]` itself when Cast cannot take one of its types at `opset`."""
    data = twin.data if twin.data is not None else tuple(range(2, len(node.input), 3))
    if _arg(node, twin.out_scale) is None:
        to = TensorProto.FLOAT
    else:
        zp = _arg(node, twin.out_zp)
        to = types.get(zp, TensorProto.UINT8) if zp is not None else TensorProto.UINT8
    types[node.output[0]] = to  # so that a reader of this output (a DequantizeLinear) sees its type
    cast_types = [to] + [types.get(_arg(node, i) or "", TensorProto.FLOAT) for i in data]
    if any(opset < _CAST_SINCE.get(t, 0) for t in cast_types):
        return [node]
    nodes, floats = [], []
    for k, index in enumerate(data):
        name = _arg(node, index)
        if name is None:
            continue
        floats.append(f"{prefix}in{k}")
        nodes.append(helper.make_node("Cast", [name], [floats[-1]], to=TensorProto.FLOAT))
    result = floats[0] if floats else ""
    if twin.float_op is not None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in twin.attributes}
        result = f"{prefix}float"
        nodes.append(helper.make_node(twin.float_op, floats, [result], **attrs))
    nodes.append(helper.make_node("Cast", [result], [node.output[0]], to=to))
    return nodes


def standard_twin(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """`model` with each contrib quantized node replaced by its standard stand-in (see the module
    docstring), or None when it has none. Nodes of other domains stay as they are."""
    graph = model.graph
    if not any(n.domain == MICROSOFT_DOMAIN and n.op_type in _TWINS for n in graph.node):
        return None
    types = _elem_types(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(graph.node):
        twin = _TWINS.get(node.op_type) if node.domain == MICROSOFT_DOMAIN else None
        if twin is None or not node.output or not node.output[0]:
            nodes.append(node)
        else:
            nodes.extend(_twin_nodes(node, twin, types, opset, f"shape_twin.{i}.{node.output[0]}."))
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.graph.ClearField("node")
    result.graph.node.extend(nodes)
    return result


def original_value_info(inferred: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    """`inferred` (of `standard_twin(model)`) keeping only the value_info of `model`'s own tensors."""
    names = {o for n in model.graph.node for o in n.output}
    kept = [v for v in inferred.graph.value_info if v.name in names]
    inferred.graph.ClearField("value_info")
    inferred.graph.value_info.extend(kept)
    return inferred
