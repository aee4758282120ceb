"""A whole sweep: design points → evaluations → Pareto front → `explore.json` (+ `explore.png`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from quantloop.explore.engine import Progress, run_points
from quantloop.explore.evaluate import EvalSettings
from quantloop.explore.pareto import objectives_of, pareto_front
from quantloop.explore.space import design_points, hardware_configs
from quantloop.parallel import open_pool

EXPLORE_VERSION = 1


def spread(rows: Sequence[dict], key: str) -> float | None:
    """max / min of a figure across the sweep (QUIDAM's "35× in energy, 5× in performance per area")."""
    values = [r[key] for r in rows if r.get(key)]
    return max(values) / min(values) if values else None


def run_sweep(settings: EvalSettings, target: str, axes: Mapping[str, Sequence[str]], *, bits: Sequence[str] = (),
              scheme: str | None = None, sampling: str = "grid", samples: int = 0, seed: int = 0, workers: int | None = None,
              scheduler: str | None = None, progress: Progress | None = None, population: int = 8,
              generations: int = 3) -> dict:
    """The sweep's document: every evaluated point, the front (indices), what was skipped and why.

    `sampling`: "grid", "random" (`samples` of the grid, `seed`), or "nsga2" (`population` ×
    `generations`, `seed`; every design NSGA-II evaluated is a point). `workers=None`: a `LocalCluster` when the
    sweep is large enough (`quantloop.parallel.auto_workers`), else this process."""
    if sampling == "nsga2":
        with open_pool(workers, scheduler, evaluations=population * generations) as pool:  # one cluster for every batch
            points, skipped, rows = _nsga2(settings, target, axes, bits, scheme, population, generations, seed,
                                           pool, progress)
    else:
        configs = hardware_configs(axes, sampling, samples, seed)
        points, skipped = design_points(target, configs, bits, scheme)
        with open_pool(workers, scheduler, evaluations=len(points)) as pool:
            rows = run_points(points, settings, pool=pool, progress=progress)
    front = pareto_front(rows)
    return {
        "version": EXPLORE_VERSION,
        "model": settings.model,
        "target": target,
        "axes": {k: list(v) for k, v in axes.items()},
        "sampling": {"mode": sampling, "samples": samples, "seed": seed,
                     **({"population": population, "generations": generations} if sampling == "nsga2" else {})},
        "objectives": objectives_of(rows),
        "points": rows,
        "front": front,
        "skipped": skipped,
        "spread": {"energy": spread(rows, "energy_pj"), "perf_per_area": spread(rows, "perf_per_area_gmacs_per_mm2")},
        "data": {"calibration": settings.data, "validation": settings.val_data},
    }


def _nsga2(settings, target, axes, bits, scheme, population, generations, seed, pool, progress):
    """NSGA-II over the hardware axes (one design per config: the PE type's native bits, or `bits[0]`)."""
    from quantloop.errors import QuantloopError
    from quantloop.explore.nsga import nsga2_configs

    if len(bits) > 1:
        raise QuantloopError("--sampling nsga2 sweeps hardware at one bits setting; give at most one --bits")
    points, skipped, rows = [], [], []

    def evaluate(configs):
        new_points, new_skipped = design_points(target, configs, bits, scheme)
        if new_skipped:
            raise QuantloopError(f"--sampling nsga2: {new_skipped[0]['target']} cannot run {new_skipped[0]['bits']}: "
                                 f"{new_skipped[0]['reason']}")
        new_rows = run_points(new_points, settings, pool=pool)
        points.extend(new_points)
        rows.extend(new_rows)
        if progress:
            progress(len(rows), population * generations)
        return new_rows

    nsga2_configs(axes, evaluate, population=population, generations=generations, seed=seed)
    return points, skipped, rows


def write_sweep(out_dir: Path, document: dict) -> dict[str, Path]:
    from quantloop.explore.plot import write_explore_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "explore.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return {"explore_json": path, "explore_png": write_explore_plot(out_dir / "explore.png", document)}
