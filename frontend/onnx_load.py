"""Read an ONNX model (file or `zoo:` spec), check it, fix its input shapes and infer the rest;
convert opsets below 11 and fold its constant parts (`onnx_fold`).

Checked up front, so that a compile without calibration never accepts a model onnxruntime rejects:
the ONNX checker's full check (`check_model` then strict shape/type inference with data propagation,
`_check_and_infer`; `full_check=True` would run the same inference a second time) and an onnxruntime
session built on the model's skeleton (`_check_onnxruntime`: kernels constructed, weights never copied).

Every failure is a one-line `QuantloopError` naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_contrib_shapes import original_value_info, standard_twin
from quantloop.frontend.onnx_fold import convert_opset, fold_constants, max_fold_rounds
from quantloop.options import parse_input_shapes  # noqa: F401 - the frontend's public name

InputShapes = Mapping[str, tuple[int, ...]]


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise QuantloopError(f"{path}: no such file")
    if path.is_dir():
        raise QuantloopError(f"{path}: is a directory, not an ONNX file")
    from quantloop.files import read_bytes

    data = read_bytes(path, "ONNX model", max_bytes=MAX_MODEL_BYTES)  # a regular file: a FIFO must not hang us
    if not data:
        raise QuantloopError(f"{path}: the file is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise QuantloopError(f"{path}: not a valid ONNX file (truncated or another format: {_first_line(err)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise QuantloopError(f"{path}: not an ONNX model (no graph nodes found; truncated or another format)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as err:
            raise QuantloopError(f"{path}: cannot read its external weight data ({_first_line(err)})") from None
    return model


#: The largest ONNX file read, and the most elements one graph input may have (4 GiB of float32): beyond
#: them calibration and lowering would exhaust memory, so the model is refused up front.
MAX_MODEL_BYTES = 8 << 30
MAX_INPUT_ELEMENTS = 1 << 30


def _check_input_sizes(model: onnx.ModelProto, source: str) -> None:
    for value in graph_inputs(model):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if math.prod(dims) > MAX_INPUT_ELEMENTS:
            shape = "x".join(map(str, dims))
            raise QuantloopError(f"{source}: input {value.name!r} of shape {shape} is larger than quantloop handles "
                                 f"({MAX_INPUT_ELEMENTS} elements)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_model(spec: str | os.PathLike | onnx.ModelProto, input_shapes: InputShapes | None = None) -> onnx.ModelProto:
    """A checked, shape-inferred ONNX model with static input shapes.

    `spec` is a path, a `zoo:NAME[?options]` spec or a ModelProto (copied, not modified).
    `input_shapes` fixes symbolic (or any) input dimensions by input name.
    """
    if isinstance(spec, onnx.ModelProto):
        source, model = "<model>", onnx.ModelProto()
        model.CopyFrom(spec)
    elif str(spec).startswith("zoo:"):
        from quantloop.frontend.zoo import load_zoo_model

        source, model = str(spec), load_zoo_model(str(spec))
    else:
        source, model = str(spec), _read_file(Path(spec))
    _set_input_shapes(model, input_shapes or {}, source)
    _check_input_sizes(model, source)
    model = convert_opset(model, source)
    _check_and_infer(model, source)
    for _ in range(max_fold_rounds(model)):
        if not fold_constants(model, source):
            break
        _check_and_infer(model, source)
    _check_onnxruntime(model, source)
    return model


def _check_and_infer(model: onnx.ModelProto, source: str) -> None:
    """Check the model and replace its value_info/outputs by inferred ones (both on the skeleton)."""
    skeleton = _skeleton(model)
    _check(skeleton, source)
    inferred = infer_shapes(skeleton, source).graph
    for field in ("value_info", "output"):
        model.graph.ClearField(field)
        getattr(model.graph, field).extend(getattr(inferred, field))


#: Initializers with more elements than this are left out of checking and shape inference.
SKELETON_MAX_ELEMENTS = 1024


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers declared as typed graph inputs instead.

    The ONNX checker and shape inference serialize the whole model (seconds for VGG-16's 550 MB);
    on the skeleton they see kilobytes. Small initializers stay, as shape inference reads values
    such as Reshape's target shape. The weights themselves are validated when the importer reads them.
    """
    graph = model.graph
    listed = {i.name for i in graph.input}
    small, typed = [], []
    for tensor in graph.initializer:
        if math.prod(tensor.dims) <= SKELETON_MAX_ELEMENTS:
            small.append(tensor)
        elif tensor.name not in listed:
            typed.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    skeleton = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    skeleton.graph.name = graph.name
    skeleton.graph.node.extend(graph.node)
    skeleton.graph.input.extend(list(graph.input) + typed)
    skeleton.graph.output.extend(graph.output)
    skeleton.graph.value_info.extend(graph.value_info)
    skeleton.graph.initializer.extend(small)
    skeleton.graph.sparse_initializer.extend(graph.sparse_initializer)
    return skeleton


def _check(model: onnx.ModelProto, source: str) -> None:
    if not model.graph.output:
        raise QuantloopError(f"{source}: the model has no graph outputs (onnxruntime cannot run it)")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as err:
        raise QuantloopError(f"{source}: the ONNX checker rejects the model: {_first_line(err)}") from None


#: Operator domains onnxruntime's CPU provider implements; a model with nodes of other domains
#: (e.g. QONNX's custom ops, which the importer reads itself) is not given to onnxruntime up front.
ORT_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def _ort_session(model: onnx.ModelProto):
    """An onnxruntime CPU session without graph optimizations (cheap: construct every kernel, nothing more)."""
    import onnxruntime as ort

    from quantloop.runtime.ort_options import session_options

    options = session_options(silent=True, optimize=False)  # the refusal becomes our one line
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


#: onnxruntime's C++ source location, function and failed condition inside a message, e.g.
#: "/onnxruntime_src/.../common.h:81 onnxruntime::AutoPadType f(const std::string&) false was false. "
_ORT_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ .*?\) (\S+ was false\. )?")


def _ort_refusal(model: onnx.ModelProto) -> str | None:
    """onnxruntime's reason for refusing `model` (one line), or None when it builds a session."""
    try:
        _ort_session(model)
    except Exception as err:  # onnxruntime raises several unrelated exception classes
        if not type(err).__module__.startswith("onnxruntime"):
            raise
        detail = _first_line(err).rpartition(" : ")[2]  # drop "[ONNXRuntimeError] : 1 : FAIL : "
        detail = re.sub(_ORT_SOURCE_LOCATION, "", detail).strip()
        return detail if len(detail) <= 200 else detail[:200] + "…"
    return None


def _single_node(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.ModelProto:
    """`node` alone, its inputs and outputs typed from the (shape-inferred) model."""
    graph = model.graph
    typed = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    small = {t.name: t for t in graph.initializer}
    single = onnx.ModelProto(ir_version=model.ir_version)
    single.opset_import.extend(model.opset_import)
    single.graph.name = "node"
    single.graph.node.append(node)
    for name in dict.fromkeys(n for n in node.input if n):
        if name in small:
            single.graph.initializer.append(small[name])
        elif name in typed:
            single.graph.input.append(typed[name])
    single.graph.output.extend(typed[n] for n in node.output if n in typed)
    return single


def _check_onnxruntime(model: onnx.ModelProto, source: str) -> None:
    """Refuse up front what onnxruntime would refuse at calibration, naming the node it refuses."""
    if any(node.domain not in ORT_DOMAINS for node in model.graph.node):
        return
    skeleton = _skeleton(model)
    reason = _ort_refusal(skeleton)
    if reason is None:
        return
    for node in skeleton.graph.node:  # only on failure: find the first node refused on its own
        node_reason = _ort_refusal(_single_node(skeleton, node))
        if node_reason is not None:
            raise QuantloopError(f"{source}: onnxruntime refuses node {node.name!r} ({node.op_type}): {node_reason}")
    raise QuantloopError(f"{source}: onnxruntime refuses the model: {reason}")


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not also initializers (old exporters list weights as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _shape_hint(name: str, tensor) -> str:
    """`--input-shape x=1x3x96x96` from the model's own dims: static ones as they are, a symbolic batch
    as 1, other symbolic dims by their names (to be replaced by sizes)."""
    dims = []
    for i, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(str(dim.dim_value))
        else:
            dims.append("1" if i == 0 else (dim.dim_param or f"D{i}"))
    return f"--input-shape {name}={'x'.join(dims)}"


def _set_input_shapes(model: onnx.ModelProto, shapes: InputShapes, source: str) -> None:
    inputs = {i.name: i for i in graph_inputs(model)}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise QuantloopError(f"{source}: --input-shape names {', '.join(unknown)}, but the model's inputs are {', '.join(inputs)}")
    for name, info in inputs.items():
        tensor = info.type.tensor_type
        if not info.type.HasField("tensor_type"):
            raise QuantloopError(f"{source}: input '{name}' is not a tensor")
        if name in shapes:
            shape = shapes[name]
            if tensor.HasField("shape") and len(tensor.shape.dim) not in (0, len(shape)):
                raise QuantloopError(
                    f"{source}: input '{name}' has rank {len(tensor.shape.dim)}, --input-shape gives {len(shape)} dims "
                    f"(the model's shape: {_shape_hint(name, tensor)})"
                )
            for i, (dim, value) in enumerate(zip(tensor.shape.dim, shape)):
                if dim.HasField("dim_value") and dim.dim_value not in (0, value):
                    raise QuantloopError(
                        f"{source}: input '{name}' dimension {i} is {dim.dim_value}, --input-shape gives {value} "
                        f"(the model's shape: {_shape_hint(name, tensor)})"
                    )
            tensor.ClearField("shape")
            tensor.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in shape)
            continue
        if not tensor.HasField("shape"):
            raise QuantloopError(f"{source}: input '{name}' has no shape; pass its full static shape, --input-shape {name}=DxDx...")
        for i, dim in enumerate(tensor.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                symbol = dim.dim_param or "?"
                raise QuantloopError(
                    f"{source}: input '{name}' has symbolic dimension {i} '{symbol}'; "
                    f"pass its full static shape, e.g. {_shape_hint(name, tensor)}"
                )


def infer_shapes(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """ONNX shape inference, strict and with data propagation (Reshape shapes computed from Shape ops);
    onnxruntime's `com.microsoft` quantized ops are inferred through standard stand-ins (`onnx_contrib_shapes`)."""
    twin = standard_twin(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(twin or model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as err:
        raise QuantloopError(f"{source}: ONNX shape inference fails: {_first_line(err)}") from None
    return inferred if twin is None else original_value_info(inferred, model)
