"""Errors a user can cause. The CLI prints them as one line on stderr and exits with `exit_code`."""


class QuantloopError(Exception):
    """A failure caused by the user's input: a file, a flag, a target, a model.

    The message is one sentence that names the file or object and says what is wrong.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
