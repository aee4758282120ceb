"""quantloop: compile quantized CNNs onto spatial DNN accelerators.

Bit-widths and mappings are chosen together: fewer bits per value pack more values into every
memory word and buffer, which opens mappings that do not exist at 8 or 16 bits.
"""

from quantloop.errors import QuantloopError
from quantloop.version import __version__

__all__ = ["QuantloopError", "__version__", "compile"]


def __getattr__(name: str):
    """`quantloop.compile` is imported on first use, so `import quantloop` stays light."""
    if name == "compile":
        from quantloop.driver import compile

        return compile
    raise AttributeError(f"module 'quantloop' has no attribute {name!r}")
