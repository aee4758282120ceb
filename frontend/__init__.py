"""Frontends: ONNX (float, QDQ, QONNX) and torch -> qnn dialect, and the model zoo.

`export_onnx` (qnn -> ONNX) lives in `quantloop.runtime.onnx_export`; it is re-exported here for the public API."""

from quantloop.runtime.onnx_export import export_onnx
from quantloop.frontend.onnx_import import import_onnx, supported_ops
from quantloop.frontend.onnx_load import load_model, parse_input_shapes
from quantloop.frontend.torch_import import from_torch

__all__ = ["export_onnx", "from_torch", "import_onnx", "load_model", "parse_input_shapes", "supported_ops"]
