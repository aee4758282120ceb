"""Every pass quantloop knows, by its registered name.

Adding a pass is one line in `PASS_MODULES`: its name and the module that defines it (the
module's `ModulePass` subclass whose `name` matches). Modules are imported only when their pass
is used, so `quantloop opt --help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable

from xdsl.passes import ModulePass

PASS_MODULES: dict[str, str] = {
    "qnn-canonicalize": "quantloop.passes.canonicalize",
    "qnn-assign-bits": "quantloop.passes.assign_bits",
    "qnn-calibrate": "quantloop.passes.calibrate",
    "qnn-search-bits": "quantloop.passes.search_bits",
    "accel-lower": "quantloop.passes.accel_lower",
    "accel-map": "quantloop.passes.accel_map",
}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def load_pass(name: str) -> type[ModulePass]:
    """The pass class registered as `name` (imports its module; a package must re-export it)."""
    module = importlib.import_module(PASS_MODULES[name])
    found = [
        obj for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, ModulePass) and getattr(obj, "name", None) == name
    ]
    if found:  # the base class when a module also defines in-memory variants of its pass
        return min(found, key=lambda cls: len(cls.__mro__))
    raise LookupError(f"{PASS_MODULES[name]} defines no ModulePass named '{name}'")


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> loader of its class, for the passes whose module is installed (xdsl-opt's shape)."""
    return {
        name: (lambda name=name: load_pass(name))
        for name, module in PASS_MODULES.items()
        if _module_exists(module)
    }
