"""quantloop: compile quantized CNNs onto spatial DNN accelerators.

Bit-widths and mappings are chosen together: fewer bits per value pack more values into every
memory word and buffer, which opens mappings that do not exist at 8 or 16 bits.

The public API: `compile` (returns a `CompileResult`: per-layer problem, bits, mapping, energy per
level × data space, cycles, utilization, MACs, optimality; `to_json()`, `table()`), its options
`CompileOptions`, and the helpers `load_model`, `load_dataset`, `load_target`, `map_layer`,
`cost` (`quantloop.api`). They are imported on first use, so `import quantloop` stays light.
"""

from quantloop.errors import QuantloopError
from quantloop.version import __version__

__all__ = [
    "QuantloopError", "__version__", "compile", "CompileOptions", "CompileResult",
    "load_model", "load_dataset", "load_target", "map_layer", "cost",
]

_LAZY = {
    "compile": "quantloop.driver",
    "CompileOptions": "quantloop.options",
    "CompileResult": "quantloop.result",
    "load_model": "quantloop.api",
    "load_dataset": "quantloop.api",
    "load_target": "quantloop.api",
    "map_layer": "quantloop.api",
    "cost": "quantloop.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quantloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
