"""Running a sweep's evaluations on a `quantloop.parallel` pool (this process, or Dask).

Every worker compiles with the same settings and cache folder, so the mapper and calibration caches are
shared through the disk, and the rows come back in the points' order: a distributed run gives exactly the
single-process rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from quantloop.explore.evaluate import EvalSettings, evaluate_point
from quantloop.explore.space import DesignPoint
from quantloop.parallel import DaskPool, LocalPool, Progress, open_pool


def run_points(points: Sequence[DesignPoint], settings: EvalSettings, *, workers: int = 1, scheduler: str | None = None,
               progress: Progress | None = None, pool: LocalPool | DaskPool | None = None) -> list[dict]:
    """One row per point, in order; on `pool` when given (a sweep keeps one cluster for all its batches),
    else on a pool opened for this call."""
    if pool is not None:
        return pool.map(evaluate_point, list(points), progress=progress, settings=settings)
    with open_pool(workers, scheduler) as opened:
        return opened.map(evaluate_point, list(points), progress=progress, settings=settings)
