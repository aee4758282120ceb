"""The on-disk cache of candidate accuracies (`passes/search/accuracy_cache.py`): hits skip onnxruntime,
every input the number depends on changes the key, corrupted entries are rewritten, no cache bypasses."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantloop.frontend import import_onnx
from quantloop.runtime.dataset import load_dataset
from quantloop.ir import make_context
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.search import engine
from quantloop.passes.search.accuracy_cache import AccuracyCache, CachedAccuracy
from quantloop.passes.search.engine import SearchOptions, search_bits
from quantloop.passes.search.fakequant import FakeQuantEvaluator
from quantloop.passes.search.space import build_space

MODEL = "zoo:cnn_digits"
SETTINGS = dict(metric="top1", weight_clip="minmax", act_range="minmax", percentile=99.99)


def canonical():
    module = import_onnx(MODEL)
    CanonicalizePass().apply(make_context(), module)
    return module


@pytest.fixture(scope="module")
def space():
    return build_space(canonical(), (2, 4, 8), ("int", "pot"))


@pytest.fixture(scope="module")
def data():
    calib = load_dataset("zoo:digits-calib")[0][:32]
    x, y = load_dataset("zoo:digits-val")
    return calib, x[:64], y[:64]


class Counting:
    """A stand-in evaluator that counts its constructions and evaluations."""

    def __init__(self, value: float = 0.25) -> None:
        self.built = 0
        self.calls = 0
        self.value = value

    def __call__(self):
        self.built += 1
        return self

    def top1(self, config, x, y) -> float:
        self.calls += 1
        return self.value


def accuracy(space, data, cache, factory, **changes):
    calib, x, y = data
    kw = dict(SETTINGS, calib_x=calib, x=x, y=y)
    kw.update(changes)
    space = kw.pop("other_space", space)
    return CachedAccuracy(space, kw.pop("calib_x"), kw.pop("x"), kw.pop("y"), cache=cache, make_evaluator=factory, **kw)


def test_hit_returns_the_evaluated_accuracy_without_onnxruntime(space, data, tmp_path, monkeypatch):
    import onnxruntime

    calib, x, y = data
    config = space.decode(space.uniform(4, 8))
    cache = AccuracyCache(tmp_path)
    real = accuracy(space, data, cache, lambda: FakeQuantEvaluator(space, calib))
    first = real.top1(config)
    assert first == FakeQuantEvaluator(space, calib).top1(config, x, y)
    assert real.stats.evaluated == 1 and real.stats.cache_hits == 0

    runs = []
    original = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: runs.append(1) or original(self, *a, **k))
    counting = Counting()
    warm = accuracy(space, data, cache, counting)
    assert warm.top1(config) == first
    assert warm.stats.cache_hits == 1 and counting.built == 0 and counting.calls == 0 and not runs
    assert len(list((tmp_path / "accuracy").rglob("*.json"))) == 1


def _changed_model(space):
    model = onnx.ModelProto()
    model.CopyFrom(space.model)
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    return dataclasses.replace(space, model=model)


def _nudged(array):
    changed = array.copy()
    changed.flat[0] += 1
    return changed


CHANGES = {
    "weight bits": lambda s, d: {"config": ((2,) + s.decode(s.uniform(4, 8)).weights[1:], None, None)},
    "activation bits": lambda s, d: {"config": (None, (4,) + s.decode(s.uniform(4, 8)).activations[1:], None)},
    "scheme": lambda s, d: {"config": (None, None, "pot")},
    "model": lambda s, d: {"other_space": _changed_model(s)},
    "calibration data": lambda s, d: {"calib_x": _nudged(d[0])},
    "calibration count": lambda s, d: {"calib_x": d[0][:16]},
    "evaluation inputs": lambda s, d: {"x": _nudged(d[1])},
    "evaluation labels": lambda s, d: {"y": (d[2] + 1) % 10},
    "weight clipping": lambda s, d: {"weight_clip": "mse"},
    "activation ranges": lambda s, d: {"act_range": "percentile"},
    "percentile": lambda s, d: {"percentile": 99.9},
    "metric": lambda s, d: {"metric": "agreement"},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_of_what_the_accuracy_depends_on_misses(space, data, tmp_path, change):
    cache = AccuracyCache(tmp_path)
    base_config = space.decode(space.uniform(4, 8))
    assert accuracy(space, data, cache, Counting(0.5)).top1(base_config) == 0.5

    changes = CHANGES[change](space, data)
    config = base_config
    if "config" in changes:
        weights, activations, scheme = changes.pop("config")
        config = dataclasses.replace(
            base_config, **{k: v for k, v in (("weights", weights), ("activations", activations), ("scheme", scheme)) if v}
        )
    counting = Counting(0.75)
    assert accuracy(space, data, cache, counting, **changes).top1(config) == 0.75
    assert counting.calls == 1
    same = Counting(0.0)
    assert accuracy(space, data, cache, same).top1(base_config) == 0.5 and same.calls == 0


def test_corrupted_entry_is_ignored_and_rewritten(space, data, tmp_path):
    cache = AccuracyCache(tmp_path)
    config = space.decode(space.uniform(8, 8))
    first = accuracy(space, data, cache, Counting(0.5))
    key = first.key(config)
    for garbage in ["{not json", json.dumps({"key": key, "value": {"accuracy": "high"}}), json.dumps([1, 2])]:
        path = cache.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(garbage)
        counting = Counting(0.5)
        assert accuracy(space, data, cache, counting).top1(config) == 0.5
        assert counting.calls == 1
        rewritten = json.loads(path.read_text())
        assert (rewritten["key"], rewritten["value"]) == (key, {"accuracy": 0.5})
        again = Counting(0.0)
        assert accuracy(space, data, cache, again).top1(config) == 0.5 and again.calls == 0


def test_no_cache_evaluates_every_time_and_writes_nothing(space, data, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLOOP_CACHE_DIR", str(tmp_path))
    config = space.decode(space.uniform(4, 4))
    for _ in range(2):
        counting = Counting(0.5)
        assert accuracy(space, data, None, counting).top1(config) == 0.5
        assert counting.calls == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_second_search_reads_every_accuracy_from_the_cache(data, tmp_path, monkeypatch):
    calib, x, y = data
    options = SearchOptions(target="eyeriss", population=4, generations=2, seed=0, cache_dir=str(tmp_path),
                            progress=False, widths=(4, 8))
    first = search_bits(canonical(), options, calib, x, y)
    assert first.accuracy_stats.evaluated == first.accuracy_stats.lookups > 0

    def no_onnxruntime(*a, **k):
        raise AssertionError("the warm search built a fake-quant evaluator")

    monkeypatch.setattr(engine, "FakeQuantEvaluator", no_onnxruntime)
    second = search_bits(canonical(), options, calib, x, y)
    assert second.accuracy_stats.cache_hits == second.accuracy_stats.lookups == first.accuracy_stats.lookups
    assert [(p.config, p.accuracy) for p in second.archive] == [(p.config, p.accuracy) for p in first.archive]
