"""xDSL dialects: `qnn` (graph + quantized types) and `accel` (mapped layers)."""

from quantloop.ir.qnn import *  # noqa: F401,F403
from quantloop.ir.qnn import __all__  # noqa: F401
