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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantloop.mapper.cache import MapCache, cache_key, default_cache_dir
from quantloop.passes.search.space import Config, SearchSpace

VERSION = 2  # 2: percentile ranges subsample 1 M values with replacement


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


class CachedAccuracy:
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

    def key(self, config: Config) -> str:
        return cache_key(
            {**self.base, "weights": list(config.weights), "activations": list(config.activations), "scheme": config.scheme}
        )

    def top1(self, config: Config) -> float:
        started = time.perf_counter()
        try:
            self.stats.lookups += 1
            key = self.key(config) if self.cache is not None else None
            if key is not None:
                entry = self.cache.get(key)
                if entry is not None and isinstance(entry.get("accuracy"), float):
                    self.stats.cache_hits += 1
                    return entry["accuracy"]
            if self.evaluator is None:
                self.evaluator = self.make_evaluator()
            accuracy = float(self.evaluator.top1(config, self.x, self.y))
            self.stats.evaluated += 1
            if key is not None:
                self.cache.put(key, {"accuracy": accuracy})
            return accuracy
        finally:
            self.stats.seconds += time.perf_counter() - started
