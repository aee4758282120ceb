"""Running a sweep's evaluations: in this process, or on Dask (`dask.distributed`).

`workers > 1` starts a `LocalCluster` of that many single-threaded worker processes; `scheduler`
(`tcp://host:port`) uses an existing cluster. Every worker compiles with the same settings and cache
folder, so the mapper and calibration caches are shared through the disk, and the rows come back to
the client in the points' order: a distributed run gives exactly the single-process rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quantloop.errors import QuantloopError
from quantloop.explore.evaluate import EvalSettings, evaluate_point
from quantloop.explore.space import DesignPoint

Progress = Callable[[int, int], None]
"""Called with (completed, total) after every evaluation."""


def run_points(points: Sequence[DesignPoint], settings: EvalSettings, *, workers: int = 1, scheduler: str | None = None,
               progress: Progress | None = None) -> list[dict]:
    if workers < 1:
        raise QuantloopError(f"--workers {workers}: must be at least 1")
    total = len(points)
    if workers == 1 and scheduler is None:
        rows = []
        for point in points:
            rows.append(evaluate_point(point, settings))
            if progress:
                progress(len(rows), total)
        return rows
    return _run_dask(points, settings, workers, scheduler, progress)


def _run_dask(points, settings, workers, scheduler, progress) -> list[dict]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - a dependency; the message says what to install
        raise QuantloopError("explore on several workers needs dask.distributed (pip install 'dask[distributed]')") from None
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as err:
                raise QuantloopError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        with client:
            futures = client.map(evaluate_point, list(points), settings=settings, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            rows: list[dict | None] = [None] * len(points)
            for done, future in enumerate(as_completed(futures), 1):
                rows[index[future.key]] = future.result()
                if progress:
                    progress(done, len(points))
            return rows  # type: ignore[return-value]
    finally:
        if cluster is not None:
            cluster.close()
