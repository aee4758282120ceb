"""Every pass quantloop knows, by its registered name.

Adding a pass is one line in `PASS_MODULES`: its name and the module that defines it (the
module's `ModulePass` subclass whose `name` matches). Modules are imported only when their pass
is used, so `quantloop opt --help` stays fast. `quantloop opt` also runs the dialect-independent
passes of xDSL named in `XDSL_PASSES`; `quantloop.universe` offers quantloop's passes to `xdsl-opt`.
"""

from __future__ import annotations

import importlib
import importlib.util
import dataclasses
import json
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from xdsl.passes import ModulePass

PASS_MODULES: dict[str, str] = {
    "qnn-canonicalize": "quantloop.passes.canonicalize",
    "qnn-fold-quant": "quantloop.passes.fold_quant",
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


#: xDSL's own passes that work on any IR, run by `quantloop opt` beside quantloop's, with a
#: description for those whose class has no docstring.
XDSL_PASSES: dict[str, str] = {
    "canonicalize": "Apply every canonicalization pattern and folder of the ops (xDSL).",
    "cse": "Merge identical side-effect-free ops (xDSL common subexpression elimination).",
    "dce": "Remove side-effect-free ops whose results are unused (xDSL dead code elimination).",
}


def pipeline_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """What a `quantloop opt -p` pipeline may name: quantloop's passes, then xDSL's `XDSL_PASSES`."""
    from xdsl.transforms import get_all_passes

    xdsl = get_all_passes()
    return {**available_passes(), **{name: xdsl[name] for name in XDSL_PASSES if name in xdsl}}


@dataclass(frozen=True)
class PassOption:
    name: str
    type: str
    default: str


@dataclass(frozen=True)
class PassInfo:
    """What `quantloop opt --list-passes` shows about one pass."""

    name: str
    description: str
    options: tuple[PassOption, ...]


def describe_pass(name: str, pass_class: type[ModulePass]) -> PassInfo:
    """Description (first docstring line, or `XDSL_PASSES`) and options (the pass's dataclass fields)."""
    doc = (pass_class.__dict__.get("__doc__") or "").strip()
    if doc.startswith(pass_class.__name__ + "("):  # the signature dataclasses write when there is no docstring
        doc = ""
    description = XDSL_PASSES.get(name) or (doc.splitlines()[0] if doc else "")
    options = []
    for field in dataclasses.fields(pass_class):
        if field.default is not dataclasses.MISSING:
            default = _option_text(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = _option_text(field.default_factory())
        else:
            default = "required"
        type_name = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        options.append(PassOption(field.name, type_name, default))
    return PassInfo(name, description, tuple(options))


def _option_text(value: object) -> str:
    """A default as a pipeline spells it: `"text"`, `true`, `8`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
