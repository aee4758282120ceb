"""On-disk cache of candidate accuracies: one small JSON file per (model, candidate, data, settings, version).

Beside the mapper cache (`mapper.cache`: same root, `--cache-dir` > `QUANTLOOP_CACHE_DIR` > platformdirs),
in an `accuracy/` sub-folder, with the same atomic writes and the same rule that an unreadable entry is
a miss and gets rewritten. The key holds everything the number depends on: the search space's float
ONNX model (bytes) and its quantizers, the candidate's bits and weight scheme, the calibration data,
the evaluation inputs and labels, the weight clipping, activation ranges and percentile, the metric,
the onnxruntime version and `VERSION` (bump it whenever the fake-quant numerics change).

`CachedAccuracy` builds the `FakeQuantEvaluator` (two onnxruntime sessions and a calibration run) only
at its first miss, so a search whose candidates are all cached never starts onnxruntime for them.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantloop.mapper.cache import MapCache, cache_key, default_cache_dir
from quantloop.passes.search.space import Config, SearchSpace

VERSION = 3  # 3: percentile ranges keep the same seeded share of every batch (2: resampled 1 M values)


def array_digest(array: np.ndarray | None) -> str | None:
    """sha256 of an array's dtype, shape and C-order bytes (None stays None)."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def space_digest(space: SearchSpace) -> str:
    """sha256 of the space's float ONNX model and of what it quantizes (tensors, signedness, bits rules)."""
    digest = hashlib.sha256(space.model.SerializeToString(deterministic=True))
    digest.update(repr((space.quantizers, space.layers, space.input_bits, sorted(space.aliases.items()))).encode())
    return digest.hexdigest()


class AccuracyCache(MapCache):
    """A folder of `<key>.json` entries, `{"accuracy": float}` each."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        super().__init__(root, folder="accuracy")


@dataclass
class AccuracyStats:
    lookups: int = 0
    cache_hits: int = 0
    evaluated: int = 0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.lookups if self.lookups else 0.0


class CachedTop1:
    """A candidate's top-1 through the on-disk cache: the entry is named by `base` (everything the number
    depends on besides the candidate; empty without a cache) and the candidate's bits; `compute(config)`
    gives the number of a miss. Subclasses set `cache`, `base` and `stats`."""

    cache: AccuracyCache | None
    base: dict
    stats: AccuracyStats

    def compute(self, config: Config) -> float:
        raise NotImplementedError

    def key(self, config: Config) -> str:
        return cache_key(
            {**self.base, "weights": list(config.weights), "activations": list(config.activations), "scheme": config.scheme}
        )

    def _cached(self, config: Config) -> tuple[str | None, float | None]:
        """(cache key, cached accuracy or None); counts the lookup."""
        self.stats.lookups += 1
        key = self.key(config) if self.cache is not None else None
        if key is not None:
            entry = self.cache.get(key)
            if entry is not None and isinstance(entry.get("accuracy"), float):
                self.stats.cache_hits += 1
                return key, entry["accuracy"]
        return key, None

    def _store(self, key: str | None, accuracy: float) -> float:
        self.stats.evaluated += 1
        if key is not None:
            self.cache.put(key, {"accuracy": accuracy})
        return accuracy

    def top1(self, config: Config) -> float:
        started = time.perf_counter()
        try:
            key, cached = self._cached(config)
            if cached is not None:
                return cached
            return self._store(key, float(self.compute(config)))
        finally:
            self.stats.seconds += time.perf_counter() - started


class CachedAccuracy(CachedTop1):
    """Accuracy (top-1 on `y`) of candidates on fixed data, through the on-disk cache when given one."""

    def __init__(
        self,
        space: SearchSpace,
        calib_x: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        *,
        metric: str,
        weight_clip: str,
        act_range: str,
        percentile: float,
        cache: AccuracyCache | None,
        make_evaluator: Callable[[], object],
    ) -> None:
        import onnxruntime

        self.x, self.y = x, y
        self.cache = cache
        self.make_evaluator = make_evaluator
        self.evaluator = None
        self.stats = AccuracyStats()
        self.token = uuid.uuid4().hex  # names this search's evaluator on Dask workers
        self.base = (
            {
                "version": VERSION,
                "onnxruntime": onnxruntime.__version__,
                "model": space_digest(space),
                "calibration": array_digest(calib_x),
                "x": array_digest(x),
                "y": array_digest(y),
                "weight_clip": weight_clip,
                "act_range": act_range,
                "percentile": float(percentile),
                "metric": metric,
            }
            if cache is not None
            else {}
        )

    def compute(self, config: Config) -> float:
        if self.evaluator is None:
            self.evaluator = self.make_evaluator()
        return self.evaluator.top1(config, self.x, self.y)

    def top1_many(self, configs: Sequence[Config], pool=None, progress=None) -> list[float]:
        """`top1` of every config; the cache misses on `pool`'s workers when it is distributed (each
        worker builds `make_evaluator()` once, which must then be picklable), the cache read and written
        here. The numbers do not depend on where they are computed."""
        if pool is None or not pool.distributed:
            values = []
            for config in configs:
                values.append(self.top1(config))
                if progress:
                    progress(len(values), len(configs))
            return values
        started = time.perf_counter()
        looked = [self._cached(c) for c in configs]
        misses = [i for i, (_, cached) in enumerate(looked) if cached is None]
        computed = pool.map(remote_top1, [configs[i] for i in misses], progress=progress,
                            make_evaluator=self.make_evaluator, x=self.x, y=self.y, token=self.token)
        values = [cached for _, cached in looked]
        for i, accuracy in zip(misses, computed):
            values[i] = self._store(looked[i][0], float(accuracy))
        self.stats.seconds += time.perf_counter() - started
        return values  # type: ignore[return-value]


_WORKER_EVALUATOR: dict[str, object] = {}
"""On a worker process: the evaluator of the search it last served (built once per search, by token)."""


def remote_top1(config: Config, *, make_evaluator: Callable[[], object], x: np.ndarray, y: np.ndarray, token: str) -> float:
    """A Dask task: `config`'s accuracy with this worker's evaluator for the search `token`."""
    if token not in _WORKER_EVALUATOR:
        _WORKER_EVALUATOR.clear()
        _WORKER_EVALUATOR[token] = make_evaluator()
    return float(_WORKER_EVALUATOR[token].top1(config, x, y))
