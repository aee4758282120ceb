"""torch.nn.Module -> qnn, through either of torch's ONNX exporters (torch is optional).

- TorchScript exporter (`dynamo=False`, the default here): fast for CNNs, any opset 7..21.
- dynamo exporter (`dynamo=True`, what `torch.onnx.export` does by default in torch 2.13; needs
  `onnxscript`, installed by the `[torch]` extra): exports at its default opset unless `opset` is given.
Both graphs import the same way (opsets below 11 are converted, constants folded, see `onnx_fold`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx
from xdsl.dialects.builtin import ModuleOp

from quantloop.errors import QuantloopError
from quantloop.frontend.onnx_import import import_onnx

TORCH_OPSET = 17


def torch_to_onnx(module, example_input, input_name: str = "input", *, dynamo: bool = False,
                  opset: int | None = None) -> onnx.ModelProto:
    """Export `module` at the shape of `example_input` (eval mode; BN and dropout in inference form).

    `dynamo=False` uses the TorchScript exporter at `opset` (default `TORCH_OPSET`); `dynamo=True`
    uses the dynamo exporter at `opset` or its own default.
    """
    try:
        import torch
    except ImportError:
        raise QuantloopError("from_torch: torch is not installed (pip install torch==2.13.0)") from None
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            if dynamo:
                program = torch.onnx.export(module, (example_input,), input_names=[input_name], output_names=["output"],
                                            opset_version=opset, dynamo=True, verbose=False)
                return program.model_proto
            buffer = io.BytesIO()
            torch.onnx.export(module, (example_input,), buffer, input_names=[input_name], output_names=["output"],
                              opset_version=opset or TORCH_OPSET, do_constant_folding=True, dynamo=False)
            return onnx.load_from_string(buffer.getvalue())
    except ImportError as err:
        raise QuantloopError(f"from_torch: the dynamo exporter needs {err.name or 'onnxscript'} "
                             "(pip install 'quantloop[torch]')") from None
    except Exception as err:  # torch raises many types here; the message is what the user needs
        raise QuantloopError(f"from_torch: torch.onnx.export failed: {str(err).strip().splitlines()[0]}") from None
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints its progress on stdout and logs warnings; keep the caller's output clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def from_torch(module, example_input, *, dynamo: bool = False, opset: int | None = None) -> ModuleOp:
    """Import a torch.nn.Module, traced at the shape of `example_input`, into a qnn module."""
    return import_onnx(torch_to_onnx(module, example_input, dynamo=dynamo, opset=opset))
