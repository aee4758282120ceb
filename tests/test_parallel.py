"""`quantloop.parallel`: the LocalCluster's workers start with the settings that keep a layer mapping as cheap
on a worker as in-process (bench/dask_worker_cpu.py measures it), and a pool returns results in item order."""

from __future__ import annotations

import os

import pytest

from quantloop.parallel import LocalPool, local_cluster_config, open_pool


def test_local_cluster_config_drops_the_malloc_trim_setting_keeps_thread_limits_and_quiets_the_pollers():
    config = local_cluster_config()
    environ = config["distributed.nanny.pre-spawn-environ"]
    assert "MALLOC_TRIM_THRESHOLD_" not in environ
    assert {environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} == {1}
    assert config["distributed.worker.profile.enabled"] is False
    assert config["distributed.admin.tick.interval"] == "1s"


def _square(x: int, offset: int = 0) -> int:
    return x * x + offset


def test_local_pool_keeps_order_and_reports_progress():
    seen = []
    assert LocalPool().map(_square, [3, 1, 2], progress=lambda d, t: seen.append((d, t)), offset=1) == [10, 2, 5]
    assert seen == [(1, 3), (2, 3), (3, 3)]


def _worker_state() -> tuple:
    import dask.config

    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
            dask.config.get("distributed.worker.profile.enabled"), dask.config.get("distributed.admin.tick.interval"))


@pytest.mark.slow
def test_local_cluster_workers_start_with_those_settings_and_return_results_in_order():
    with open_pool(2) as pool:
        states = pool.client.run(_worker_state)
        assert len(states) == 2 and set(states.values()) == {(None, "1", False, "1s")}
        assert pool.map(_square, list(range(10)), offset=1) == [x * x + 1 for x in range(10)]


def _map_tiny_layers(count: int) -> int:
    """On a worker: `map_layers` with the default workers, cold, `count` distinct small layers."""
    from quantloop.mapper import map_layers
    from quantloop.problem import Bits, Problem

    requests = [(f"l{c}", Problem(N=1, G=1, C=c, M=4, P=2, Q=2, R=1, S=1), Bits(8, 8, 8)) for c in range(1, count + 1)]
    return len(map_layers(requests, "eyeriss", workers=None))


@pytest.mark.slow
def test_a_dask_task_maps_many_layers_in_its_own_process():
    """Enough cold layers for the mapper's own process pool, which a (daemonic) Dask worker may not start."""
    from quantloop.mapper.api import POOL_MIN_LAYERS

    with open_pool(2) as pool:
        assert pool.map(_map_tiny_layers, [POOL_MIN_LAYERS]) == [POOL_MIN_LAYERS]


class _FakeCluster:
    """Stands in for `dask.distributed.LocalCluster` / `Client`: records the workers asked for, starts nothing."""

    started: list = []

    def __init__(self, *args, n_workers: int | None = None, **kwargs) -> None:
        if n_workers is not None:
            _FakeCluster.started.append(n_workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


@pytest.fixture
def fake_cluster(monkeypatch):
    import dask.distributed

    import quantloop.parallel as parallel

    monkeypatch.setattr(dask.distributed, "LocalCluster", _FakeCluster)
    monkeypatch.setattr(dask.distributed, "Client", _FakeCluster)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    _FakeCluster.started = []
    return parallel


def _opened(parallel, workers, **job) -> tuple[bool, list]:
    _FakeCluster.started = []
    with parallel.open_pool(workers, **job) as pool:
        return pool.distributed, list(_FakeCluster.started)


def test_auto_workers_sends_only_large_jobs_to_a_cluster_of_at_most_pool_max_workers(fake_cluster):
    parallel = fake_cluster
    designs, candidates, most = parallel.CLUSTER_MIN_DESIGNS, parallel.CLUSTER_MIN_CANDIDATES, parallel.POOL_MAX_WORKERS
    assert designs < candidates  # a search candidate is cheaper than a sweep design
    assert _opened(parallel, None, evaluations=designs - 1) == (False, [])
    assert _opened(parallel, None, evaluations=designs) == (True, [most])  # 8 cores, capped
    assert _opened(parallel, None, evaluations=designs, min_evaluations=candidates) == (False, [])
    assert _opened(parallel, None, evaluations=candidates, min_evaluations=candidates) == (True, [most])
    assert _opened(parallel, 1, evaluations=10 * candidates) == (False, [])  # --workers 1 forces one process
    assert _opened(parallel, 3, evaluations=1) == (True, [3])  # --workers N is taken as given


def test_auto_workers_stays_in_process_on_one_core_and_uses_every_core_below_the_cap(fake_cluster, monkeypatch):
    parallel = fake_cluster
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert _opened(parallel, None, evaluations=1000) == (False, [])
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    assert _opened(parallel, None, evaluations=1000) == (True, [2])


class _Asked(Exception):
    pass


def _recording_open_pool(calls: list):
    def open_pool(workers=1, scheduler=None, **job):
        calls.append((workers, scheduler, job))
        raise _Asked

    return open_pool


def test_a_sweep_and_a_search_ask_for_a_pool_by_their_number_of_evaluations(monkeypatch):
    import quantloop.explore.sweep as sweep
    import quantloop.parallel as parallel
    from quantloop.explore.evaluate import EvalSettings
    from quantloop.passes.search.engine import SearchOptions, _evolve

    calls: list = []
    monkeypatch.setattr(sweep, "open_pool", _recording_open_pool(calls))
    monkeypatch.setattr(parallel, "open_pool", _recording_open_pool(calls))
    settings = EvalSettings(model="zoo:cnn_digits")
    axes = {"pe": ["8x8", "14x12", "16x16"], "pe_type": ["int8", "lightpe1"]}
    with pytest.raises(_Asked):
        sweep.run_sweep(settings, "eyeriss", axes)
    with pytest.raises(_Asked):
        sweep.run_sweep(settings, "eyeriss", axes, sampling="nsga2", population=5, generations=4, workers=1)
    with pytest.raises(_Asked):
        _evolve(None, None, None, SearchOptions(target="eyeriss", population=8, generations=9), None)
    assert calls == [
        (None, None, {"evaluations": 6}),
        (1, None, {"evaluations": 20}),
        (None, None, {"evaluations": 72, "min_evaluations": parallel.CLUSTER_MIN_CANDIDATES}),
    ]
