"""Backend: schedules, bit-packed weights and reports of a compile (see `artifacts.write_artifacts`, README.md).

`unpack(dir)` reads a compile's `weights.bin` back as each layer's integer codes (or float weights).
The names below are imported on first use, so that `quantloop.backend.emit` (read by `--help`) stays light.
"""

__all__ = ["check_output_dir", "unpack", "unpack_biases"]


def __getattr__(name: str):
    if name == "check_output_dir":
        from quantloop.backend.atomic import check_output_dir

        return check_output_dir
    if name in ("unpack", "unpack_biases"):
        from quantloop.backend import weights

        return getattr(weights, name)
    raise AttributeError(f"module 'quantloop.backend' has no attribute {name!r}")
