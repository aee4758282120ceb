"""The Pareto front of a sweep: lower energy, latency and area, higher accuracy (when measured)."""

from __future__ import annotations

from collections.abc import Sequence

OBJECTIVES = (("energy_pj", "min"), ("latency_s", "min"), ("area_mm2", "min"), ("accuracy", "max"))


def _vector(row: dict, keys: Sequence[tuple[str, str]]) -> tuple[float, ...]:
    return tuple(row[k] if sense == "min" else -row[k] for k, sense in keys)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def objectives_of(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """The objectives every row has a number for (accuracy only when the sweep measured it)."""
    return [(k, s) for k, s in OBJECTIVES if rows and all(r.get(k) is not None for r in rows)]


def pareto_front(rows: Sequence[dict]) -> list[int]:
    """Indices of the non-dominated rows, ascending (duplicates of a front point are all kept)."""
    keys = objectives_of(rows)
    vectors = [_vector(r, keys) for r in rows]
    return [i for i, v in enumerate(vectors) if not any(dominates(w, v) for j, w in enumerate(vectors) if j != i)]
