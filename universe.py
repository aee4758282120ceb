"""quantloop's dialects and passes for xDSL's tools, found through the `xdsl.universe` entry point.

With quantloop installed, `xdsl-opt` reads qnn / accel IR and runs quantloop's passes
(`xdsl-opt model.mlir -p qnn-canonicalize`). Nothing is imported until a tool asks for it.
"""

from __future__ import annotations

from xdsl.ir import Dialect
from xdsl.universe import Universe

from quantloop.passes.registry import available_passes


def _qnn() -> Dialect:
    from quantloop.ir.qnn import QNN

    return QNN


def _accel() -> Dialect:
    from quantloop.ir.accel import ACCEL

    return ACCEL


QUANTLOOP_UNIVERSE = Universe(all_dialects={"qnn": _qnn, "accel": _accel}, all_passes=available_passes())
