"""`map_layer` / `map_layers`: the best mapping of layers on a target, through the on-disk cache."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

from quantloop.costmodel.checks import check_bits
from quantloop.mapping import Mapping
from quantloop.costmodel.model import COSTMODEL_VERSION, CostResult, evaluate
from quantloop.problem import Bits, Problem
from quantloop.errors import QuantloopError
from quantloop.parallel import POOL_MIN_LAYERS, auto_workers, check_workers
from quantloop.mapper.cache import MapCache, cache_key
from quantloop.mapper.mapspace import Mapspace
from quantloop.mapper.search import OBJECTIVES, Budget, search
from quantloop.targets.arch import Arch
from quantloop.targets.registry import load_target

#: bump when the search changes its results, so stale cache entries are not reused
MAPPER_VERSION = "3"


@dataclass(frozen=True)
class MapResult:
    """The chosen mapping and its exact cost. `optimal` is True only when the search was exhaustive
    over the mapspace; `mappings_considered` counts the legal mappings scored; `seconds` is the
    time this call took (a cache hit takes milliseconds)."""

    mapping: Mapping
    cost: CostResult
    mappings_considered: int
    optimal: bool
    seconds: float
    cache_hit: bool = False
    name: str = ""


def _problem_key(problem: Problem) -> dict:
    return {k: v for k, v in asdict(problem).items() if k != "name"}


def layer_key(problem: Problem, arch: Arch, bits: Bits, objective: str, seed: int,
              budget: Budget | None = None, warm_start: Mapping | None = None) -> str:
    """Everything a cached mapping depends on: every field of the problem, bits (widths, scheme,
    partial-sum mode, and any added later), target content, search settings (and the warm start,
    when one is given), and the versions of the mapper and of the cost model that scored it."""
    extra = {} if warm_start is None else {"warm_start": warm_start.to_json()}
    return cache_key({
        **extra,
        "budget": asdict(budget or Budget()),
        "problem": _problem_key(problem),
        "bits": asdict(bits),
        "target": arch.content_hash or repr(arch),
        "objective": objective,
        "seed": seed,
        "mapper": MAPPER_VERSION,
        "costmodel": COSTMODEL_VERSION,
    })


def _from_cache(cache: MapCache, key: str, arch: Arch, problem: Problem, bits: Bits, name: str,
                started: float) -> MapResult | None:
    entry = cache.get(key)
    if entry is None:
        return None
    try:
        mapping = Mapping.from_json(entry["mapping"])
        cost = evaluate(arch, problem, mapping, bits, check=True)
        considered, optimal = int(entry["mappings_considered"]), bool(entry["optimal"])
    except (KeyError, TypeError, ValueError, QuantloopError):
        return None
    return MapResult(mapping, cost, considered, optimal, time.perf_counter() - started, True, name)


def map_layer(problem: Problem, target: Arch | str, bits: Bits = Bits(), objective: str = "energy", *,
              cache: MapCache | None = None, seed: int = 0, name: str = "",
              budget: Budget | None = None, warm_start: Mapping | None = None) -> MapResult:
    """The best mapping of one layer for `objective` (energy | latency | edp).

    `warm_start`: a legal mapping of the same problem (e.g. found at other bits); the result is
    never worse than it for the objective (see `mapper.search.search`).

    Raises QuantloopError when no legal mapping exists (naming the layer, the level, the smallest
    tile in bits and the capacity) or when the target's constraints contradict.
    """
    started = time.perf_counter()
    arch = load_target(target)
    name = name or problem.name or "layer"
    if objective not in OBJECTIVES:
        raise QuantloopError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    check_bits(arch, bits)
    key = layer_key(problem, arch, bits, objective, seed, budget, warm_start)
    if cache is not None:
        hit = _from_cache(cache, key, arch, problem, bits, name, started)
        if hit is not None:
            return hit
    from quantloop.mapper.cpsat import explain_infeasible, verify  # ortools: only when a layer is searched

    space = Mapspace(arch, problem, bits)
    outcome = search(arch, problem, bits, objective, seed, budget or Budget(), space, warm_start=warm_start)
    if outcome is None:
        raise QuantloopError(explain_infeasible(space, name))
    arrays = outcome.arrays
    factors = arrays.temporal[0][:, None, :].repeat(3, axis=1)
    factors[:, 1], factors[:, 2] = arrays.spatial_x[0], arrays.spatial_y[0]
    if not verify(space, factors, arrays.keep[0]):
        raise RuntimeError(f"mapper: layer {name}: the chosen mapping fails the CP-SAT legality model")
    mapping = arrays.mapping(0)
    cost = evaluate(arch, problem, mapping, bits, check=True)
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.put(key, {"mapping": mapping.to_json(), "mappings_considered": outcome.considered,
                        "optimal": outcome.optimal, "search_seconds": seconds})
    return MapResult(mapping, cost, outcome.considered, outcome.optimal, seconds, False, name)


def _map_one(args) -> MapResult:
    name, problem, bits, arch, objective, cache_root, seed, budget = args
    cache = MapCache(cache_root) if cache_root is not None else None
    return map_layer(problem, arch, bits, objective, cache=cache, seed=seed, name=name, budget=budget)


def default_workers(todo: int) -> int:
    """Processes `map_layers` uses when the caller names none, for `todo` layers still to search: one
    per core available to this process (at most `POOL_MAX_WORKERS`) once there are `POOL_MIN_LAYERS`,
    else 1 (a handful of small searches finish before a pool has started). Always 1 in a daemonic process
    (a Dask worker evaluating an `explore` point): it may not start processes, and its cluster already
    runs one evaluation per core."""
    return auto_workers(todo, POOL_MIN_LAYERS)


def map_layers(requests: list[tuple[str, Problem, Bits]], target: Arch | str, objective: str = "energy", *,
               workers: int | None = 1, cache: MapCache | None = None, seed: int = 0,
               budget: Budget | None = None, progress: Any = None, pool: Any = None) -> list[MapResult]:
    """map_layer for every (name, problem, bits), in order. Identical (problem, bits) are mapped
    once; with workers > 1 distinct layers are mapped in a process pool (None: `default_workers` for
    the layers the cache does not answer, so a cached run starts none), or on `pool` when it is a
    distributed `quantloop.parallel` pool (the search on Dask). The results do not depend on either.
    `progress` (a `quantloop.progress.Phase`) hears `start(name)` before a layer is searched and
    `advance(name, cache_hit)` after each distinct layer."""
    arch = load_target(target)
    if workers is not None:
        check_workers(workers)
    cache_root = None if cache is None else cache.root.parent
    first: dict[tuple, int] = {}
    jobs = []
    for name, problem, bits in requests:
        key = (tuple(_problem_key(problem).items()), bits)
        if key not in first:
            first[key] = len(jobs)
            jobs.append((name, problem, bits, arch, objective, cache_root, seed, budget))
    done: list[MapResult | None] = [None] * len(jobs)
    if cache is not None:  # hits are answered here, without starting workers
        for i, (name, problem, bits, *_rest) in enumerate(jobs):
            if objective in OBJECTIVES:
                started = time.perf_counter()
                key = layer_key(problem, arch, bits, objective, seed, budget)
                done[i] = _from_cache(cache, key, arch, problem, bits, name, started)
                if done[i] is not None and progress is not None:
                    progress.advance(name, cache_hit=True)
    todo = sorted((i for i, r in enumerate(done) if r is None), key=lambda i: -jobs[i][1].macs)  # big first
    if workers is None:
        workers = default_workers(len(todo))
    if pool is not None and pool.distributed and todo:
        for i, result in zip(todo, pool.map(_map_one, [jobs[i] for i in todo])):
            done[i] = result
            if progress is not None:
                progress.advance(jobs[i][0])
    elif workers == 1 or len(todo) <= 1:
        for i in todo:
            if progress is not None:
                progress.start(jobs[i][0])
            done[i] = _map_one(jobs[i])
            if progress is not None:
                progress.advance(jobs[i][0])
    else:
        import quantloop.mapper.cpsat  # noqa: F401  (imported once here: forked workers inherit ortools)

        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        workers = min(workers, len(todo))
        pending = list(todo)  # the pool takes them in this order: the first `workers` are being searched

        def show_searching() -> None:
            if progress is not None and pending:
                progress.start(", ".join(jobs[i][0] for i in pending[:workers]))

        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_map_one, jobs[i]): i for i in todo}
            show_searching()
            for future in as_completed(futures):
                i = futures[future]
                done[i] = future.result()
                pending.remove(i)
                if progress is not None:
                    progress.advance(jobs[i][0])
                show_searching()
    results = []
    for name, problem, bits in requests:
        r = done[first[(tuple(_problem_key(problem).items()), bits)]]
        results.append(r if r.name == name else MapResult(r.mapping, r.cost, r.mappings_considered, r.optimal,
                                                          r.seconds, r.cache_hit, name))
    return results
