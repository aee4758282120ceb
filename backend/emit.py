"""Which artefacts a compile writes: the choices, the default, and the `--emit` parser.

The default is the cheap ones: the fake-quant ONNX model can be as large as the float model
(575 MB for VGG-19) and the plots take longer than all other artefacts together, so both are
written on request. Imports nothing heavy: `quantloop compile --help` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from quantloop.errors import QuantloopError

#: every artefact, in the order they are written
STEPS = ("schedule", "timeloop", "weights", "onnx", "report", "plots")
DEFAULT_EMIT = ("schedule", "timeloop", "weights", "report")


def parse_emit(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """The artefacts named by `spec` (`"schedule,weights"`, a list, `"all"`, or None for DEFAULT_EMIT), in STEPS order."""
    if spec is None:
        return DEFAULT_EMIT
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names == ["all"]:
        return STEPS
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        shown = spec if isinstance(spec, str) else ",".join(spec)
        problem = f"unknown artefact {', '.join(unknown)}" if unknown else "names no artefact"
        raise QuantloopError(f"--emit {shown}: {problem} (choose from {','.join(STEPS)}, or all)")
    return tuple(step for step in STEPS if step in names)


def emit_help() -> str:
    on_request = [s for s in STEPS if s not in DEFAULT_EMIT]
    return (
        f"artefacts to write with -o, comma-separated from {','.join(STEPS)} or 'all' "
        f"(default: {','.join(DEFAULT_EMIT)}; {' and '.join(on_request)} only on request: the fake-quant model "
        "is as large as the model, plots take seconds)"
    )
