"""Conv / Gemm layers of an ONNX model as cost-model Problems (before the accel-lower pass exists).

Timeloop pairing: P (output width) pairs with R (kernel width) and Wstride; Q (output height) with S
(kernel height) and Hstride. Grouped convs use G (depthwise: G = channels, C = M = 1); a Gemm is a
1×1 conv with N = batch, C = inner size, M = outputs.
"""

from __future__ import annotations

import onnx

from quantloop.problem import Problem
from quantloop.errors import QuantloopError


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(info.name, tuple(int(d.dim_value) for d in dims))
    return shapes


def _shape(shapes: dict[str, tuple[int, ...]], name: str, node: onnx.NodeProto) -> tuple[int, ...]:
    if name not in shapes:
        raise QuantloopError(f"node {node.name or node.op_type}: no static shape for tensor {name!r} after shape inference")
    return shapes[name]


def _conv(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> Problem:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x = _shape(shapes, node.input[0], node)
    w = _shape(shapes, node.input[1], node)
    y = _shape(shapes, node.output[0], node)
    if len(x) != 4:
        raise QuantloopError(f"node {node.name or 'Conv'}: only 2-D convolutions are supported, input has shape {x}")
    group = int(attrs.get("group", 1))
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    return Problem(
        N=y[0], G=group, C=w[1], M=w[0] // group, P=y[3], Q=y[2], R=w[3], S=w[2],
        Wstride=strides[1], Hstride=strides[0], Wdilation=dilations[1], Hdilation=dilations[0],
        name=node.name or node.output[0],
    )


def _gemm(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> Problem:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    a = _shape(shapes, node.input[0], node)
    b = _shape(shapes, node.input[1], node)
    batch, inner = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
    outputs = b[0] if attrs.get("transB", 0) else b[1]
    return Problem(N=batch, C=inner, M=outputs, name=node.name or node.output[0])


def problems_from_onnx(model: onnx.ModelProto) -> list[tuple[str, Problem]]:
    """(name, Problem) of every Conv and Gemm node, in graph order."""
    shapes = _shapes(model)
    layers = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            problem = _conv(node, shapes)
        elif node.op_type == "Gemm":
            problem = _gemm(node, shapes)
        else:
            continue
        layers.append((problem.name, problem))
    return layers
