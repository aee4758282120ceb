"""Top-1 accuracy of an ONNX classifier on labelled data, run in onnxruntime (CPU).

Models with a dynamic batch dimension get batches of `batch_size`; models whose batch
dimension is fixed (the zoo digits models and the IR use batch 1) get chunks of exactly
that size, so any model the importer accepts can be evaluated without re-exporting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from quantloop.errors import QuantloopError, onnxruntime_failures
from quantloop.runtime.ort_options import session_options

ModelLike = Union[str, Path, bytes, "onnx.ModelProto"]  # noqa: F821

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def make_session(model: ModelLike, intra_op_threads: int = 1):
    """An onnxruntime CPU session for a path, serialized bytes or an `onnx.ModelProto`."""
    import onnxruntime as ort

    options = session_options(intra_op_threads=intra_op_threads)
    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise QuantloopError(f"{model}: no such model file")
        source, payload = str(model), str(model)
    elif isinstance(model, bytes):
        source, payload = "<model bytes>", model
    else:
        source, payload = "<onnx model>", model.SerializeToString()
    try:
        return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several unrelated exception types
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QuantloopError(f"{source}: onnxruntime cannot load the model: {message}") from err


def input_signature(session) -> tuple[str, tuple[int | str | None, ...], np.dtype]:
    """(name, shape with symbolic dims as str/None, numpy dtype) of the session's single input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise QuantloopError(f"model: accuracy needs exactly one graph input, found {len(inputs)} ({names})")
    info = inputs[0]
    if info.type not in _ORT_TO_NUMPY:
        raise QuantloopError(f"model input {info.name}: unsupported element type {info.type}")
    return info.name, tuple(info.shape), np.dtype(_ORT_TO_NUMPY[info.type])


def predict(session, x: np.ndarray, batch_size: int = 256, what: str = "model") -> np.ndarray:
    """The first output of the model for every sample of `x`, concatenated along the batch axis.

    onnxruntime failing on the data is a one-line error naming `what` (the model)."""
    name, shape, dtype = input_signature(session)
    fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None
    step = fixed_batch or max(1, batch_size)
    if fixed_batch is not None and len(x) % fixed_batch:
        raise QuantloopError(
            f"data: {len(x)} samples cannot be fed to a model with fixed batch {fixed_batch}"
        )
    x = np.ascontiguousarray(x, dtype=dtype)
    output = session.get_outputs()[0].name
    with onnxruntime_failures(what):
        chunks = [session.run([output], {name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    if not chunks:
        raise QuantloopError("data: no samples to evaluate")
    return np.concatenate(chunks, axis=0)


def top1(
    model: ModelLike, x: np.ndarray, y: np.ndarray, batch_size: int = 256, intra_op_threads: int = 1
) -> float:
    """Fraction (0..1) of samples whose arg-max output equals the label."""
    session = make_session(model, intra_op_threads)
    return top1_session(session, x, y, batch_size, what=str(model) if isinstance(model, (str, Path)) else "<model>")


def top1_session(session, x: np.ndarray, y: np.ndarray, batch_size: int = 256, what: str = "model") -> float:
    """`top1` on an already-built onnxruntime session (reuse it across evaluations)."""
    if len(x) != len(y):
        raise QuantloopError(f"data: {len(x)} samples but {len(y)} labels")
    logits = predict(session, x, batch_size, what)
    scores = logits.reshape(len(x), -1)
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(y)))
