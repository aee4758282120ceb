"""Accelergy's tables: ERT.yaml (energy per action, pJ per vector access) and ART.yaml (area per
instance, µm²), indexed by the component's bare name (`system_top_level.psum_spad[1..168]` →
`psum_spad`)."""

from __future__ import annotations

import re
from pathlib import Path

from quantloop.errors import QuantloopError
from quantloop.targets.timeloop_design.tags import load_yaml

_INSTANCES = re.compile(r"\[\d+\.\.\d+\]$")


def bare_name(name: str) -> str:
    """`system_top_level.shared_glb[1..1]` → `shared_glb`."""
    return _INSTANCES.sub("", str(name)).rsplit(".", 1)[-1]


def _tables(path: Path, top: str) -> list:
    data = load_yaml(path)
    tables = data.get(top, {}).get("tables") if isinstance(data, dict) and isinstance(data.get(top), dict) else None
    if not isinstance(tables, list):
        raise QuantloopError(f"{path}: {top}.tables: required list of tables is missing")
    return tables


def read_ert(path: Path) -> dict[str, dict[str, float]]:
    """{component: {action: pJ}}; an action with several argument sets keeps the first."""
    out: dict[str, dict[str, float]] = {}
    for i, table in enumerate(_tables(path, "ERT")):
        where = f"ERT.tables[{i}]"
        if not isinstance(table, dict) or "name" not in table or not isinstance(table.get("actions"), list):
            raise QuantloopError(f"{path}: {where}: expected a mapping with name and actions")
        actions = out.setdefault(bare_name(table["name"]), {})
        for j, action in enumerate(table["actions"]):
            try:
                actions.setdefault(str(action["name"]), float(action["energy"]))
            except (KeyError, TypeError, ValueError):
                raise QuantloopError(f"{path}: {where}.actions[{j}]: expected name and a numeric energy") from None
    return out


def read_art(path: Path) -> dict[str, float]:
    """{component: µm² per instance}."""
    out: dict[str, float] = {}
    for i, table in enumerate(_tables(path, "ART")):
        try:
            out[bare_name(table["name"])] = float(table["area"])
        except (KeyError, TypeError, ValueError):
            raise QuantloopError(f"{path}: ART.tables[{i}]: expected name and a numeric area") from None
    return out
