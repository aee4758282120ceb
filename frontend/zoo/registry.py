"""The zoo registry and the `zoo:` spec syntax.

Spec syntax: ``zoo:NAME`` or ``zoo:NAME?key=value&key=value``, for example
``zoo:mobilenet_v2?width=0.5&resolution=96``. Generated models accept the options
``width`` (float, channel multiplier), ``resolution`` (int, square input side),
``num_classes`` (int), ``seed`` (int, weight seed) and ``opset`` (int, 11..21).
File-backed models (ONNX files shipped in this folder) take no options.

Adding a file-backed entry is one line: ``register_file("cnn_digits", "cnn_digits.onnx", "...")``;
data entries use ``kind="data"`` and are resolved with `zoo_file_path`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import onnx

from quantloop.errors import QuantloopError
from quantloop.frontend.zoo import models
from quantloop.runtime.digits import SPLIT_SIZES, SPLITS_FILE

ZOO_DIR = Path(__file__).resolve().parent
PREFIX = "zoo:"

_OPTION_TYPES: dict[str, Callable[[str], object]] = {
    "width": float, "resolution": int, "num_classes": int, "seed": int, "opset": int,
}
#: Legal range of each option (inclusive): a generated model stays buildable in memory and time.
_OPTION_RANGES: dict[str, tuple[float, float]] = {
    "width": (0.05, 4.0), "resolution": (1, 1024), "num_classes": (1, 100_000), "seed": (0, 2**32 - 1),
}  # opset is checked where the model is built (models.build), resolution's multiple too


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    kind: str = "model"  # "model" or "data"
    architecture: str | None = None  # generated: a key of models.BUILDERS
    filename: str | None = None  # file-backed: a file in this folder (or an absolute path: packaged data sets)

    @property
    def path(self) -> Path | None:
        return ZOO_DIR / self.filename if self.filename else None


ZOO: dict[str, ZooEntry] = {}


def register_generated(name: str, description: str) -> None:
    ZOO[name] = ZooEntry(name, description, architecture=name)


def register_file(name: str, filename: str, description: str, kind: str = "model") -> None:
    ZOO[name] = ZooEntry(name, description, kind=kind, filename=filename)


register_generated("mobilenet_v1", "MobileNetV1 (Howard et al. 2017), ReLU, 1024 last channels; untrained (seeded random weights), for hardware studies")
register_generated("mobilenet_v2", "MobileNetV2 (torchvision), inverted residuals, ReLU6, 1280 last channels; untrained (seeded random weights), for hardware studies")
register_generated("resnet18", "ResNet-18 (torchvision), basic blocks; untrained (seeded random weights), for hardware studies")
register_generated("vgg16", "VGG-16 (torchvision, configuration D, no BN); untrained (seeded random weights), for hardware studies")
register_file("mobilenet_v2_digits", "mobilenet_v2_digits.onnx", "MobileNetV2 (reduced) trained on sklearn digits, input 1x1x32x32")
register_file("cnn_digits", "cnn_digits.onnx", "plain CNN (3 conv+relu+maxpool, gemm) trained on sklearn digits, input 1x1x32x32")
register_file("mobilenet_v1_digits", "mobilenet_v1_digits.onnx",
              "MobileNetV1 (reduced: 6 depthwise-separable blocks, ReLU6) trained on sklearn digits, input 1x1x32x32")
for _split in SPLIT_SIZES:  # read with quantloop.runtime.dataset.load_dataset("zoo:digits-<split>")
    register_file(f"digits-{_split}", str(SPLITS_FILE), f"sklearn digits, {_split} split, 1x32x32", kind="data")


def known_names(kind: str = "model") -> list[str]:
    return sorted(name for name, entry in ZOO.items() if entry.kind == kind)


def parse_spec(spec: str) -> tuple[ZooEntry, dict[str, object]]:
    """Split `zoo:NAME?opts` into its registry entry and typed options."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    name, _, query = body.partition("?")
    entry = ZOO.get(name)
    if entry is None:
        data = f"; data sets: {', '.join(known_names('data'))}" if known_names("data") else ""
        raise QuantloopError(f"{spec}: unknown zoo name {name!r}; models: {', '.join(known_names())}{data}")
    options: dict[str, object] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if entry.architecture is None or key not in _OPTION_TYPES:
            allowed = ", ".join(_OPTION_TYPES) if entry.architecture else "none"
            raise QuantloopError(f"{spec}: unknown option {key!r} for zoo:{name} (options: {allowed})")
        try:
            options[key] = _OPTION_TYPES[key](value)
        except (ValueError, OverflowError):
            raise QuantloopError(f"{spec}: option {key}={value!r} is not a valid {_OPTION_TYPES[key].__name__}") from None
        low, high = _OPTION_RANGES.get(key, (-math.inf, math.inf))
        if not low <= options[key] <= high:  # also refuses nan
            raise QuantloopError(f"{spec}: option {key}={value} is outside {low:g}..{high:g}")
    if query and not options:
        raise QuantloopError(f"{spec}: cannot parse the options {query!r} (use ?key=value&key=value)")
    return entry, options


_CACHE_MAX_PARAMS = 20_000_000  # bigger models (VGG-16) are cheaper to rebuild than to keep and copy


@functools.lru_cache(maxsize=8)
def _cached(architecture: str, options: tuple[tuple[str, object], ...]) -> onnx.ModelProto:
    b = models.build(architecture, **dict(options))
    return b.build(b.output)


def _generated(architecture: str, options: dict[str, object]) -> onnx.ModelProto:
    if models.build(architecture, materialize=False, **options).params > _CACHE_MAX_PARAMS:
        b = models.build(architecture, **options)
        return b.build(b.output)
    model = onnx.ModelProto()
    model.CopyFrom(_cached(architecture, tuple(sorted(options.items()))))
    return model


def load_zoo_model(spec: str) -> onnx.ModelProto:
    """The model for `zoo:NAME[?options]` (a fresh copy: callers may modify it)."""
    entry, options = parse_spec(spec)
    if entry.kind != "model":
        raise QuantloopError(f"{spec}: zoo:{entry.name} is a data set, not a model")
    if entry.architecture is None:
        return onnx.load(str(entry.path))
    return _generated(entry.architecture, options)


def zoo_file_path(spec: str) -> Path:
    """The packaged file behind a file-backed entry (models or data sets)."""
    entry, _ = parse_spec(spec)
    if entry.path is None:
        raise QuantloopError(f"{spec}: zoo:{entry.name} is generated, it has no file")
    return entry.path


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    params: int
    macs: int


def count_params_macs(model: onnx.ModelProto) -> tuple[int, int]:
    """Trainable parameters (Conv/Gemm/MatMul weights and biases, BN gamma/beta) and Conv/Gemm/MatMul
    MACs at the model's input shapes (from ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes.setdefault(info.name, tuple(d.dim_value for d in dims))
    inits = {t.name for t in graph.initializer}
    params = macs = 0
    for node in graph.node:
        counted = {"Conv": node.input[1:3], "Gemm": node.input[1:3], "MatMul": node.input[1:2],
                   "BatchNormalization": node.input[1:3]}.get(node.op_type, [])
        params += sum(math.prod(shapes[name]) for name in counted if name in inits)
        out = shapes.get(node.output[0], ())
        if node.op_type == "Conv" and out:
            macs += math.prod(out) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul") and out:
            a = shapes[node.input[0]]
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            macs += math.prod(out) * (a[-2] if trans_a else a[-1])
    return params, macs


@functools.lru_cache(maxsize=None)
def _info(name: str) -> ModelInfo:
    entry = ZOO[name]
    if entry.architecture is not None:
        b = models.build(entry.architecture, materialize=False)
        params, macs = b.params, b.macs
    else:
        params, macs = count_params_macs(onnx.load(str(entry.path)))
    return ModelInfo(name, entry.description, params, macs)


def list_models() -> list[ModelInfo]:
    """Every zoo model with its parameter count and MACs (generated ones at their defaults)."""
    return [_info(name) for name in known_names("model")]
