"""torch.nn.Module -> qnn, through torch's TorchScript-based ONNX exporter (torch is optional)."""

from __future__ import annotations

import io
import warnings

import onnx
from xdsl.dialects.builtin import ModuleOp

from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_import import import_onnx

TORCH_OPSET = 17


def torch_to_onnx(module, example_input, input_name: str = "input") -> onnx.ModelProto:
    """Export `module` at the shape of `example_input` (eval mode; BN and dropout in inference form).

    Uses `dynamo=False`: torch 2.13's default dynamo exporter needs onnxscript and is much slower
    for these small CNNs; the TorchScript exporter gives the plain Conv/BN/Relu graph directly.
    """
    try:
        import torch
    except ImportError:
        raise QuantloopError("from_torch: torch is not installed (pip install torch==2.13.0)") from None
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example_input,), buffer, input_names=[input_name], output_names=["output"],
                              opset_version=TORCH_OPSET, do_constant_folding=True, dynamo=False)
    except Exception as err:  # torch raises many types here; the message is what the user needs
        raise QuantloopError(f"from_torch: torch.onnx.export failed: {str(err).splitlines()[0]}") from None
    finally:
        module.train(was_training)
    return onnx.load_from_string(buffer.getvalue())


def from_torch(module, example_input) -> ModuleOp:
    """Import a torch.nn.Module, traced at the shape of `example_input`, into a qnn module."""
    return import_onnx(torch_to_onnx(module, example_input))
