"""Backend: schedules, bit-packed weights and reports of a compile (see `artifacts.write_artifacts`).

`unpack(dir)` reads a compile's `weights.bin` back as each layer's integer codes (or float weights).
"""

from quantloop.backend.weights import unpack, unpack_biases

__all__ = ["unpack", "unpack_biases"]
