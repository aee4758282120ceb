"""Import-time graph clean-up with onnx's own tools: opset conversion and constant folding.

- `convert_opset`: models older than the importer's opsets (7..10) go through
  `onnx.version_converter` to `CONVERT_TO`; a failure is one line naming the op that blocks it.
- `fold_constants`: every default-domain node whose inputs are all constants (initializers,
  `Constant` outputs, or `Shape`/`Size` of a tensor whose shape is static) is evaluated and replaced
  by an initializer; an `If` whose condition folds is replaced by the branch it takes. This removes
  `ConstantOfShape` weights, `Shape→Gather→Unsqueeze→Concat` chains feeding `Reshape`, arithmetic on
  initializers and `Constant` nodes before the importer sees the graph.

Folding uses onnx's reference evaluator (`onnx.reference.ReferenceEvaluator`) on the constant
subgraph, all at once: it implements every standard op in every opset version in numpy, so the
folded values follow the model's own opset semantics exactly (int64 shape arithmetic included), and
it needs no session set-up per subgraph as onnxruntime would (a session costs milliseconds and
refuses models whose non-constant part it cannot type). Quantize/dequantize nodes are never folded:
the importer keeps them as the model's own quantization.
"""

from __future__ import annotations

import math
import re

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from quantloop.errors import QuantloopError

#: Opsets the importer reads directly; older models are converted to `CONVERT_TO` first.
MIN_OPSET = 11
CONVERT_TO = 13
#: Never folded: the importer reads them as the model's quantization (q/dq of constant weights included).
KEEP = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                  "ConvInteger", "MatMulInteger", "RandomNormal", "RandomUniform", "RandomNormalLike",
                  "RandomUniformLike", "Multinomial", "Bernoulli"})
#: A folded constant larger than this (elements) is an error rather than a memory blow-up.
MAX_FOLDED_ELEMENTS = 1 << 27
_DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 0)


def convert_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model itself when its opset is new enough, else its conversion to `CONVERT_TO`."""
    opset = default_opset(model)
    if opset >= MIN_OPSET or opset == 0:
        return model
    try:
        return version_converter.convert_version(model, CONVERT_TO)
    except Exception as err:  # the converter raises RuntimeError, ConvertError, IndexError...
        text = str(err)
        found = sorted({n.op_type for n in model.graph.node if re.search(rf"\b{re.escape(n.op_type)}", text)}, key=len)
        blocker = f"op {found[-1]}" if found else f"({text.strip().splitlines()[0] if text.strip() else type(err).__name__})"
        raise QuantloopError(
            f"{source}: converting opset {opset} to {CONVERT_TO} with onnx.version_converter fails at {blocker}"
        ) from None


def _static_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for info in [*graph.value_info, *graph.output, *graph.input]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[info.name] = tuple(d.dim_value for d in tensor.shape.dim)
    return shapes


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _shape_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(math.prod(shape), np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[slice(start, end)], np.int64)


def max_fold_rounds(model: onnx.ModelProto) -> int:
    """The most folding rounds `model` can take: each round that changes the graph removes at least one node
    (a folded node, a Shape/Size, or an If whose branch it inlines), counted with the nodes of subgraphs.
    Rounds are needed one after another where a shape becomes static only once the previous one folded:
    ShuffleNetV2 exported with a dynamic batch has one `Shape → Gather → Div → Concat → Reshape` chain
    per block, each reading the previous block's Reshape (ONNX's data propagation stops at Div)."""
    return _count_nodes(model.graph) + 1


def _count_nodes(graph: onnx.GraphProto) -> int:
    count = len(graph.node)
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                count += _count_nodes(sub)
    return count


def fold_constants(model: onnx.ModelProto, source: str) -> bool:
    """One round: replace constant-valued nodes of the shape-inferred `model` by initializers, in place.

    True if the graph changed; the caller re-infers shapes and folds again (at most `max_fold_rounds`).
    """
    graph = model.graph
    shapes = _static_shapes(graph)
    initial = {t.name for t in graph.initializer}
    known = set(initial)
    direct: dict[str, np.ndarray] = {}
    folded: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain not in _DEFAULT_DOMAINS or node.op_type in KEEP or _has_subgraph(node):
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            direct[node.output[0]] = _shape_value(node, shapes[node.input[0]])
            known.add(node.output[0])
            continue
        if all(not name or name in known for name in node.input):
            for out in node.output:
                size = math.prod(shapes[out]) if out in shapes else 0
                if size > MAX_FOLDED_ELEMENTS:
                    raise QuantloopError(f"{source}: node '{node.name or out}' ({node.op_type}) makes a constant of "
                                         f"{size} elements (more than {MAX_FOLDED_ELEMENTS})")
            folded.append(node)
            known.update(o for o in node.output if o)
    dropped = {id(n) for n in folded}
    rest = [n for n in graph.node if id(n) not in dropped and not (n.op_type in ("Shape", "Size") and n.output[0] in direct)]
    values = dict(direct)
    if folded:
        values.update(_evaluate(model, folded, direct, source))
    by_name = {t.name: t for t in graph.initializer}

    def constant(name: str) -> np.ndarray | None:
        return values[name] if name in values else numpy_helper.to_array(by_name[name]) if name in by_name else None

    inlined, rest = _inline_constant_ifs(rest, constant, graph)
    if not folded and not direct and not inlined:
        return False
    needed = {name for n in rest for name in _inputs_with_subgraphs(n)} | {o.name for o in graph.output}
    new_inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items() if k in needed and k not in initial]
    kept_inits = [t for t in graph.initializer if t.name in needed]
    graph.ClearField("node")
    graph.node.extend(rest)
    graph.ClearField("initializer")
    graph.initializer.extend(kept_inits + new_inits)
    dropped_inits = initial - {t.name for t in kept_inits}
    inputs = [i for i in graph.input if i.name not in dropped_inits]  # old exporters list weights as inputs
    graph.ClearField("input")
    graph.input.extend(inputs)
    return True


def _inputs_with_subgraphs(node: onnx.NodeProto) -> list[str]:
    """The node's inputs and the outer names its subgraphs read."""
    names = list(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.extend(_inputs_with_subgraphs(inner))
    return names


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], direct: dict[str, np.ndarray], source: str):
    from onnx.reference import ReferenceEvaluator

    produced = {o for n in nodes for o in n.output}
    wanted = [o for n in nodes for o in n.output if o]
    inputs = {name for n in nodes for name in n.input if name and name not in produced}
    inits = [t for t in model.graph.initializer if t.name in inputs]
    inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in direct.items() if k in inputs]
    graph = helper.make_graph(list(nodes), "constants", [], [helper.make_empty_tensor_value_info(o) for o in wanted], inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        results = ReferenceEvaluator(sub).run(None, {})
    except Exception as err:  # the evaluator raises what numpy raises
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QuantloopError(f"{source}: folding the constant part of the graph fails: {text}") from None
    return dict(zip(wanted, results))


def _inline_constant_ifs(nodes: list[onnx.NodeProto], constant, graph: onnx.GraphProto):
    """`If` nodes whose condition is a folded constant, replaced by the nodes of the branch taken."""
    out: list[onnx.NodeProto] = []
    inlined = False
    for node in nodes:
        cond = constant(node.input[0]) if node.op_type == "If" and node.domain in _DEFAULT_DOMAINS else None
        if cond is None:
            out.append(node)
            continue
        attrs = {a.name: a.g for a in node.attribute}
        branch = attrs["then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"]
        out.extend(branch.node)
        graph.initializer.extend(branch.initializer)
        graph.value_info.extend(branch.value_info)
        for inner, outer in zip(branch.output, node.output):
            out.append(helper.make_node("Identity", [inner.name], [outer], name=f"{node.name or outer}_then"))
        inlined = True
    return inlined, out
