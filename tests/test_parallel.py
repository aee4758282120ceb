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
