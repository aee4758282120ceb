"""Mapper cache: location rules, hits, atomic entries, corrupted entries, keys, process pool."""

from __future__ import annotations

import json
import time

import pytest

from quantloop.problem import Bits, Problem
from quantloop.mapper import Budget, MapCache, map_layer, map_layers
from quantloop.mapper.api import layer_key
from quantloop.mapper.cache import default_cache_dir
from quantloop.targets.registry import load_target

SMALL = Budget(samples=1000, starts=2, max_steps=10, evaluations=8_000)
LAYER = Problem(C=16, M=32, P=7, Q=7, R=3, S=3, name="conv")


def _entries(root):
    return sorted((root / "mapper").rglob("*.json"))


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTLOOP_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert MapCache().root == tmp_path / "env" / "mapper"
    monkeypatch.delenv("QUANTLOOP_CACHE_DIR")
    assert "quantloop" in str(default_cache_dir())


def test_hit_is_fast_and_identical(tmp_path):
    cache = MapCache(tmp_path)
    first = map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    assert not first.cache_hit and len(_entries(tmp_path)) == 1
    started = time.perf_counter()
    second = map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    assert time.perf_counter() - started < 0.5  # generous: a hit is one JSON read + one evaluation
    assert second.cache_hit
    assert (second.mapping, second.cost, second.mappings_considered, second.optimal) == (
        first.mapping, first.cost, first.mappings_considered, first.optimal)


def test_corrupted_entry_is_ignored_and_rewritten(tmp_path):
    cache = MapCache(tmp_path)
    first = map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    (entry,) = _entries(tmp_path)
    entry.write_text('{"key": "truncated', encoding="utf-8")
    again = map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    assert not again.cache_hit and again.mapping == first.mapping
    assert json.loads(entry.read_text())["value"]["mappings_considered"] == first.mappings_considered
    assert map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL).cache_hit


def test_entry_with_an_illegal_mapping_is_a_miss(tmp_path):
    cache = MapCache(tmp_path)
    map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    (entry,) = _entries(tmp_path)
    data = json.loads(entry.read_text())
    data["value"]["mapping"][0]["temporal"] = [["M", 3]]
    entry.write_text(json.dumps(data))
    assert not map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL).cache_hit


def test_no_temporary_files_are_left(tmp_path):
    cache = MapCache(tmp_path)
    map_layer(LAYER, "eyeriss", Bits(8, 8, 8), cache=cache, budget=SMALL)
    assert not [p for p in (tmp_path / "mapper").rglob("*") if p.name.startswith(".tmp-")]


def test_key_covers_problem_bits_scheme_target_objective_not_name():
    eyeriss, simba = load_target("eyeriss"), load_target("simba")
    base = layer_key(LAYER, eyeriss, Bits(8, 8, 8), "energy", 0)
    assert base == layer_key(LAYER.with_dims(name="other"), eyeriss, Bits(8, 8, 8), "energy", 0)
    variants = [
        layer_key(LAYER.with_dims(M=16), eyeriss, Bits(8, 8, 8), "energy", 0),
        layer_key(LAYER.with_dims(Wstride=2), eyeriss, Bits(8, 8, 8), "energy", 0),
        layer_key(LAYER, eyeriss, Bits(4, 8, 8), "energy", 0),
        layer_key(LAYER, eyeriss, Bits(8, 8, 8, scheme="pot"), "energy", 0),
        layer_key(LAYER, simba, Bits(8, 8, 8), "energy", 0),
        layer_key(LAYER, eyeriss, Bits(8, 8, 8), "edp", 0),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_map_layers_same_results_with_one_or_two_workers(tmp_path):
    requests = [
        ("a", Problem(C=8, M=16, P=7, Q=7, R=3, S=3), Bits(8, 8, 8)),
        ("b", Problem(G=16, P=7, Q=7, R=3, S=3), Bits(4, 4, 4)),
        ("c", Problem(C=16, M=8, P=7, Q=7), Bits(8, 8, 8)),
        ("a_again", Problem(C=8, M=16, P=7, Q=7, R=3, S=3), Bits(8, 8, 8)),
    ]
    one = map_layers(requests, "simba", "energy", workers=1, cache=None, budget=SMALL)
    two = map_layers(requests, "simba", "energy", workers=2, cache=MapCache(tmp_path), budget=SMALL)
    assert [r.name for r in two] == ["a", "b", "c", "a_again"]
    assert [(r.mapping, r.cost, r.mappings_considered) for r in one] == [(r.mapping, r.cost, r.mappings_considered) for r in two]
    assert len(_entries(tmp_path)) == 3  # identical shapes are mapped once
    warm = map_layers(requests, "simba", "energy", workers=2, cache=MapCache(tmp_path), budget=SMALL)
    assert all(r.cache_hit for r in warm)


def test_workers_must_be_positive():
    from quantloop.errors import QuantloopError

    with pytest.raises(QuantloopError, match="workers"):
        map_layers([("a", LAYER, Bits(8, 8, 8))], "eyeriss", workers=0)


def test_key_covers_partial_sum_mode_and_both_versions(monkeypatch):
    """A cost-model change must re-search, not only re-score: its version is in the key, as the
    mapper's is; every Bits field (the partial-sum mode too) is."""
    from quantloop.mapper import api

    eyeriss = load_target("eyeriss")
    base = layer_key(LAYER, eyeriss, Bits(8, 8, 8), "energy", 0)
    assert base != layer_key(LAYER, eyeriss, Bits(8, 8, 8, psum="outputs"), "energy", 0)
    monkeypatch.setattr(api, "COSTMODEL_VERSION", api.COSTMODEL_VERSION + "+changed")
    assert base != layer_key(LAYER, eyeriss, Bits(8, 8, 8), "energy", 0)
    monkeypatch.undo()
    monkeypatch.setattr(api, "MAPPER_VERSION", api.MAPPER_VERSION + "+changed")
    assert base != layer_key(LAYER, eyeriss, Bits(8, 8, 8), "energy", 0)


def test_default_workers_one_per_core_only_when_enough_layers_need_searching(monkeypatch):
    import os

    from quantloop import parallel
    from quantloop.mapper import api

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert api.default_workers(0) == api.default_workers(parallel.POOL_MIN_LAYERS - 1) == 1
    assert api.default_workers(parallel.POOL_MIN_LAYERS) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert api.default_workers(100) == parallel.POOL_MAX_WORKERS
    assert api.default_workers(parallel.POOL_MIN_LAYERS) == min(parallel.POOL_MAX_WORKERS, parallel.POOL_MIN_LAYERS)


def _default_workers_in_child(queue) -> None:
    from quantloop.mapper import api

    queue.put(api.default_workers(100))


def test_default_workers_is_one_in_a_daemonic_process_such_as_a_dask_worker(monkeypatch):
    """A daemonic process may not have children (a Dask worker compiling an explore point would crash)."""
    import multiprocessing
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_default_workers_in_child, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=30) == 1
    child.join()


def test_unnamed_workers_map_in_a_pool_when_cold_and_in_process_when_cached(tmp_path, monkeypatch):
    """The default (workers=None) searches on every core when enough layers miss the cache; a cached
    run answers in the calling process (never slower than one worker)."""
    import os

    from quantloop.mapper import api

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    requests = [(f"l{i}", Problem(M=4 * (i + 1), C=4, P=2, Q=2), Bits(8, 8, 8)) for i in range(api.POOL_MIN_LAYERS)]
    pools = []
    real_pool = api.ProcessPoolExecutor
    monkeypatch.setattr(api, "ProcessPoolExecutor", lambda **kw: pools.append(kw["max_workers"]) or real_pool(**kw))
    cold = map_layers(requests, "eyeriss", workers=None, cache=MapCache(tmp_path), budget=SMALL)
    assert pools == [2]
    warm = map_layers(requests, "eyeriss", workers=None, cache=MapCache(tmp_path), budget=SMALL)
    assert pools == [2] and all(r.cache_hit for r in warm)
    assert [r.mapping for r in warm] == [r.mapping for r in cold]


def test_pool_progress_names_the_layers_being_searched():
    heard = []

    class Listener:
        def start(self, name):
            heard.append(("start", name))

        def advance(self, name="", cache_hit=False):
            heard.append(("done", name))

    requests = [(f"l{i}", Problem(M=4 * (i + 1), C=4, P=2, Q=2), Bits(8, 8, 8)) for i in range(3)]
    map_layers(requests, "eyeriss", workers=2, cache=None, budget=SMALL, progress=Listener())
    assert heard[0][0] == "start" and len(heard[0][1].split(", ")) == 2
    assert sorted(name for kind, name in heard if kind == "done") == ["l0", "l1", "l2"]
    assert heard[-1][0] == "done"  # nothing left to search once the last layer is done
