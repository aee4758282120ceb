"""Where independent evaluations run: in this process, or on Dask (`dask.distributed`).

`open_pool(workers, scheduler)` is the one place that starts or joins a cluster, for `quantloop explore`
and `quantloop compile --search` alike: `workers == 1` without a scheduler runs everything here;
`workers > 1` starts a `LocalCluster` of that many single-threaded worker processes; `workers=None` (no
`--workers`) lets `auto_workers` choose from the job's size; `scheduler`
(`tcp://host:port`) uses an existing cluster (whose workers keep the settings they were started with: see
`local_cluster_config` for those that matter). `pool.map(fn, items, **shared)` returns the results in the
items' order whatever order the workers finish in, so a distributed run returns exactly what one process
returns (the functions it runs are deterministic); `shared` values go to the workers once per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import multiprocessing
import os
from contextlib import contextmanager
from typing import Any

from quantloop.errors import QuantloopError

#: `quantloop.mapper.api.default_workers`: a process pool pays for its start-up once this many distinct layers
#: need searching
POOL_MIN_LAYERS = 8
#: ... and uses at most this many processes (one per core below that)
POOL_MAX_WORKERS = 4
#: `auto_workers`: with no --workers, a sweep of this many designs runs on a `LocalCluster` ...
CLUSTER_MIN_DESIGNS = 16
#: ... and a search of this many candidate evaluations (population × generations)
CLUSTER_MIN_CANDIDATES = 64

Progress = Callable[[int, int], None]
"""Called with (completed, total) after every evaluation of a `map`."""


class LocalPool:
    """Runs every evaluation in this process, in order."""

    distributed = False

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, progress: Progress | None = None, **shared: Any) -> list:
        results = []
        for item in items:
            results.append(fn(item, **shared))
            if progress:
                progress(len(results), len(items))
        return results


class DaskPool:
    """Runs evaluations as Dask tasks on `client`'s cluster."""

    distributed = True

    def __init__(self, client) -> None:
        self.client = client

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, progress: Progress | None = None, **shared: Any) -> list:
        from dask.distributed import as_completed

        if not items:
            return []
        # large shared values (a model, data sets) travel once to every worker instead of once per task
        scattered = {k: self.client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
        futures = self.client.map(fn, list(items), pure=False, **scattered)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        for done, future in enumerate(as_completed(futures), 1):
            results[index[future.key]] = future.result()
            if progress:
                progress(done, len(items))
        return results


def local_cluster_config() -> dict[str, Any]:
    """The Dask settings our `LocalCluster` (scheduler, nannies, workers) starts with: Dask's defaults but for
    the few that cost CPU in every evaluation or every idle second and buy nothing here (measured with
    bench/dask_worker_cpu.py; figures from a 2-core machine).

    - `MALLOC_TRIM_THRESHOLD_` (the nanny sets 65536 by default, to hand freed memory back to the OS): setting it
      also turns off glibc's adaptive mmap threshold, so every numpy temporary over 128 KiB of the mapper's batch
      cost model is a fresh mmap, faulted in page by page and unmapped again: for 8 MobileNetV2-digits
      mappings ~680k page faults instead of ~1k, and 2.4x the CPU of the same mappings in-process (1.05x without).
      The thread limits of the same setting (OMP/MKL/OpenBLAS = 1) stay.
    - the statistical profiler (samples every task thread's stack every 10 ms for a dashboard we do not open);
    - the event-loop tick (every 20 ms, to warn of a blocked loop), the system monitor (every 500 ms, for the
      dashboard) and the memory monitor (every 100 ms): polled less often, an idle 2-worker cluster costs
      0.015 CPU-s per second instead of 0.10 (0.6 s instead of 4 s over a 40 s search). The nanny still
      enforces the memory limit, checking it every second.
    """
    import dask.config
    import distributed  # noqa: F401  (puts Dask's distributed defaults into dask.config)

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {
        "distributed.nanny.pre-spawn-environ": environ,
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "5s",
        "distributed.worker.memory.monitor-interval": "1s",
    }


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(evaluations: int, min_evaluations: int) -> int:
    """Workers of the `LocalCluster` a job of `evaluations` runs on when the user names none: one per core (at
    most `POOL_MAX_WORKERS` and `evaluations`) once the job has `min_evaluations` (`CLUSTER_MIN_DESIGNS` for a
    sweep, `CLUSTER_MIN_CANDIDATES` for a search, `POOL_MIN_LAYERS` for the mapper's own process pool), else 1
    (this process). Also 1 on a 1-core machine and in a daemonic
    process (a Dask worker may not start processes).

    Why those sizes (2-core machine, cold, results identical either way): a cluster costs ~1.5 CPU-s to start
    plus ~0.8 per worker (imports, the model and evaluator on every worker). A MobileNetV2-digits design costs
    ~1.2 s; 24 designs took 29.7 s in one process and 26.5 s on 2 workers (1.12x), so from 16 designs the
    cluster's start-up is a small share of the sweep. A search candidate is cheaper (~0.8 s, and repeats are
    cache hits): 8 × 3 candidates took 19.4 s wall / 18.4 CPU-s in one process and 17.9 s / 21.2 CPU-s on 2
    workers (1.08x for 15 % more CPU), so a search needs about 3x as many evaluations before the wall-clock
    gain outweighs the CPU the cluster adds."""
    if evaluations < min_evaluations or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(usable_cores(), POOL_MAX_WORKERS, evaluations))


def check_workers(workers: int) -> int:
    """The one rule on a worker count (every `--workers` and `workers=` asks it)."""
    if workers < 1:
        raise QuantloopError(f"--workers {workers}: must be at least 1")
    return workers


def check_scheduler(address: str) -> str:
    """`address` when Dask can connect to it (`SCHEME://LOCATION` with one of Dask's comm schemes: tcp, tls,
    inproc, ucx, ws, wss), else a one-line user error: checked before any work, not as a traceback on connect."""
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import backends

    try:
        scheme, location = parse_address(address, strict=True)
    except (ValueError, TypeError):
        scheme, location = "", ""
    if scheme not in backends or not location:
        raise QuantloopError(f"--scheduler {address}: expected SCHEME://HOST:PORT with SCHEME one of "
                             f"{', '.join(sorted(backends))}, e.g. tcp://127.0.0.1:8786")
    return address


@contextmanager
def open_pool(workers: int | None = 1, scheduler: str | None = None, *, evaluations: int = 0,
              min_evaluations: int = CLUSTER_MIN_DESIGNS) -> Iterator[LocalPool | DaskPool]:
    """A pool for the duration of the block (a started `LocalCluster` is closed at its end); `workers=None`
    without a scheduler: `auto_workers(evaluations, min_evaluations)`."""
    if workers is None:
        workers = 1 if scheduler is not None else auto_workers(evaluations, min_evaluations)
    check_workers(workers)
    if workers == 1 and scheduler is None:
        yield LocalPool()
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency; the message says what to install
        raise QuantloopError("evaluating on several workers needs dask.distributed (pip install 'dask[distributed]')") from None
    if scheduler is not None:
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as err:
            raise QuantloopError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        with client:
            yield DaskPool(client)
        return
    import dask.config

    with dask.config.set(local_cluster_config()), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield DaskPool(client)
