"""Backend: schedules, bit-packed weights and reports of a compile (see `artifacts.write_artifacts`, README.md).

`unpack(dir)` reads a compile's `weights.bin` back as each layer's integer codes (or float weights).
"""

from quantloop.backend.atomic import check_output_dir
from quantloop.backend.weights import unpack, unpack_biases

__all__ = ["check_output_dir", "unpack", "unpack_biases"]
