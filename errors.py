"""Errors a user can cause. The CLI prints them as one line on stderr and exits with `exit_code`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class QuantloopError(Exception):
    """A failure caused by the user's input: a file, a flag, a target, a model.

    The message is one sentence that names the file or object and says what is wrong.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


@contextlib.contextmanager
def onnxruntime_failures(what: str) -> Iterator[None]:
    """Turn onnxruntime's refusal of a model (its own exception classes, not a quantloop bug) into a one-line
    QuantloopError: "`what`: onnxruntime cannot run the model (...)"."""
    try:
        yield
    except Exception as err:
        if type(err).__module__.startswith("onnxruntime"):
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if len(detail) > 200:
                detail = detail[:200] + "…"
            raise QuantloopError(f"{what}: onnxruntime cannot run the model ({detail})") from None
        raise
