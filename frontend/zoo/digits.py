"""The digits zoo models: small CNNs trained on scikit-learn's digits (`quantloop.runtime.digits`).

The shipped models (`mobilenet_v2_digits.onnx`, `cnn_digits.onnx`, `mobilenet_v1_digits.onnx`) take a float32
input named `input` of fixed shape 1×1×32×32 and return logits 1×10: a fixed batch of 1 lets the importer
build the IR without `--input-shape`; `quantloop.runtime.accuracy.top1` feeds such models one sample at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quantloop.errors import QuantloopError
from quantloop.frontend.zoo.registry import PREFIX
from quantloop.runtime.digits import DIGITS_DATA_SPECS

DIGITS_MODELS: dict[str, str] = {
    "mobilenet_v2_digits": "MobileNetV2 (reduced width and depth) trained on sklearn digits, 1x1x32x32",
    "cnn_digits": "plain CNN (3 conv+relu+maxpool, gemm) trained on sklearn digits, 1x1x32x32",
    "mobilenet_v1_digits": "MobileNetV1 (reduced width and depth: 6 depthwise-separable blocks) trained on sklearn digits, 1x1x32x32",
}


def packaged_data(model: Any) -> dict[str, str] | None:
    """The data set packaged with a zoo model, split → data spec (`{"calib": "zoo:digits-calib", ...}` for the
    digits models); `{}` for the other zoo models (untrained: no labelled data); None for a model not from the zoo."""
    if not (isinstance(model, (str, os.PathLike)) and str(model).startswith(PREFIX)):
        return None
    if str(model)[len(PREFIX):].partition("?")[0] not in DIGITS_MODELS:
        return {}
    return {split: spec for spec, split in DIGITS_DATA_SPECS.items()}


def digits_model_path(name: str) -> Path:
    """Path of a packaged digits model (`mobilenet_v2_digits` or `cnn_digits`)."""
    if name not in DIGITS_MODELS:
        raise QuantloopError(f"zoo:{name}: not a digits model; known: {', '.join(sorted(DIGITS_MODELS))}")
    path = Path(__file__).with_name(f"{name}.onnx")
    if not path.is_file():
        raise QuantloopError(
            f"{path}: packaged model is missing; run `python -m quantloop.frontend.zoo.train_digits`"
        )
    return path
