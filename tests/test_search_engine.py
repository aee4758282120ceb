"""qnn-search-bits end to end with the real mapper: determinism, the front, the chosen point,
the synergy ablation, the pass, `run_search` (compile of the chosen point) and the exit-3 path.

Tiny searches on zoo:cnn_digits (4 layers) with the mapper cache in a temporary folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantloop.errors import QuantloopError
from quantloop.frontend import import_onnx
from quantloop.runtime.dataset import load_dataset
from quantloop.ir import make_context
from quantloop.ir.accel import layers
from quantloop.ir.types import IntType, element_type
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.registry import load_pass
from quantloop.passes.search.engine import SearchOptions, search_bits
from quantloop.passes.search.fakequant import float_predict
from quantloop.cosearch import run_search
from quantloop.passes.search_bits import SearchSettings


MODEL = "zoo:cnn_digits"


def canonical():
    module = import_onnx(MODEL)
    CanonicalizePass().apply(make_context(), module)
    return module


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mapper-cache"))


@pytest.fixture(scope="module")
def data():
    return load_dataset("zoo:digits-calib")[0], *load_dataset("zoo:digits-val")


def small(cache_dir, **kw):
    base = dict(target="eyeriss", population=4, generations=2, seed=0, cache_dir=cache_dir, progress=False,
                widths=(4, 8))
    base.update(kw)
    return SearchOptions(**base)


def summary(result):
    return [(p.config, p.energy_pj, p.weight_bytes, p.accuracy) for p in result.front], result.chosen.config


@pytest.fixture(scope="module")
def result(cache_dir, data):
    return search_bits(canonical(), small(cache_dir), *data)


def test_search_is_deterministic_for_a_seed(result, cache_dir, data):
    again = search_bits(canonical(), small(cache_dir), *data)
    assert summary(again) == summary(result)
    assert again.mapper.hit_rate == 1.0


def test_front_is_non_dominated_and_covers_the_archive(result):
    key = lambda p: np.array([p.energy_pj, p.weight_bytes, -p.accuracy])  # noqa: E731
    dominates = lambda a, b: np.all(key(a) <= key(b)) and np.any(key(a) < key(b))  # noqa: E731
    assert result.front
    for p in result.front:
        assert not any(dominates(o, p) for o in result.archive)
    for p in set(result.archive) - set(result.front):
        assert any(dominates(o, p) for o in result.archive)


def test_chosen_point_is_the_cheapest_feasible(result):
    feasible = [p for p in result.archive if p.feasible]
    assert result.chosen in result.front and result.chosen.feasible
    assert result.chosen.energy_pj == min(p.energy_pj for p in feasible)
    assert (result.float_accuracy - result.chosen.accuracy) * 100 <= result.options.max_accuracy_drop + 1e-9
    assert result.reference.config.label() == "w8a8"


def test_energy_is_the_sum_of_the_mappers_layer_costs(result, cache_dir):
    from quantloop.problem import Bits
    from quantloop.mapper import MapCache, map_layers
    from quantloop.passes.search.objectives import layer_problems
    from quantloop.targets.registry import load_target

    _, problems, _ = layer_problems(canonical(), "eyeriss")
    requests = [(p.name, p, Bits(w, i, o)) for p, (w, i, o) in zip(problems, result.space.layer_bits(result.reference.config))]
    mapped = map_layers(requests, load_target("eyeriss"), "energy", cache=MapCache(cache_dir))
    assert result.reference.energy_pj == pytest.approx(sum(r.cost.total_energy_pj for r in mapped), rel=1e-9)


def test_synergy_ablation_is_consistent(result):
    a = result.ablation
    assert a["remapped_energy_pj"] == result.chosen.energy_pj
    assert a["w8a8_energy_pj"] == result.reference.energy_pj
    assert a["saving_vs_w8a8"] == pytest.approx(1 - result.chosen.energy_pj / result.reference.energy_pj)
    assert a["fixed_w8a8_mapping_energy_pj"] > 0


def test_pass_writes_the_chosen_bits(cache_dir, tmp_path):
    module = canonical()
    search = load_pass("qnn-search-bits")(
        target="eyeriss", population=4, generations=1, bits_range="4,8", data="zoo:digits-calib",
        val_data="zoo:digits-val", cache_dir=cache_dir, output=str(tmp_path / "front"),
    )
    search.apply(make_context(), module)
    front = json.loads((tmp_path / "front" / "pareto.json").read_text())
    chosen = front["points"][front["chosen"]]
    weights = [element_type(op.operands[1]).bits for op in module.walk() if op.name in ("qnn.conv2d", "qnn.gemm")]
    assert weights == [chosen["bits"][name]["weights"] for name in front["layers"]]
    assert all(isinstance(element_type(op.results[0]), IntType) for op in module.walk() if op.name == "qnn.conv2d")


@pytest.mark.slow
def test_run_search_compiles_the_chosen_point(cache_dir, tmp_path):
    out = tmp_path / "build"
    result = run_search(
        MODEL, SearchSettings(population=4, generations=1, bits_range="4,8", progress=False),
        target="simba", output_dir=out, cache_dir=cache_dir,
    )
    document = json.loads((out / "pareto.json").read_text())
    assert (out / "pareto.png").stat().st_size > 0 and (out / "weights.bin").exists()
    chosen = document["points"][document["chosen"]]
    lowered = [
        (op.label, op.bits.data.weights.bits, op.bits.data.inputs.bits, op.bits.data.outputs.bits)
        for op in layers(result.module)
    ]
    assert lowered == [(l["layer"], l["weights"], l["inputs"], l["outputs"]) for l in chosen["layer_bits"]]
    assert sum(layer.energy_pj for layer in result.layers) == pytest.approx(chosen["energy_pj"], rel=1e-9)
    assert document["test"]["data"] == "zoo:digits-test" and 0.0 <= document["test"]["chosen_accuracy"] <= 1.0
    assert document["ablation"]["remapped_energy_pj"] == chosen["energy_pj"]


def test_no_feasible_configuration_exits_3_after_writing_the_front(cache_dir, tmp_path):
    """Labels = the float model's own top-1 on the noise inputs it is least sure about, and no drop
    allowed: every quantized configuration flips some of them."""
    from quantloop.passes.search.space import build_space

    module = canonical()
    x = np.random.default_rng(0).standard_normal((2000, 1, 32, 32)).astype(np.float32)
    logits = float_predict(build_space(module, (8,)), x).reshape(len(x), -1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    unsure = np.argsort(top2[:, 1] - top2[:, 0])[:64]
    val = tmp_path / "unsure.npz"
    np.savez(val, x=x[unsure], y=np.argmax(logits[unsure], axis=1))
    out = tmp_path / "build"
    with pytest.raises(QuantloopError) as err:
        run_search(
            MODEL, SearchSettings(max_accuracy_drop=0.0, val_data=str(val), population=4, generations=1,
                                  bits_range="4,8", progress=False),
            target="eyeriss", output_dir=out, cache_dir=cache_dir,
        )
    assert err.value.exit_code == 3
    assert "best found reaches" in str(err.value) and "bits {" in str(err.value)
    document = json.loads((out / "pareto.json").read_text())
    assert document["chosen"] is None and document["points"]
    assert not (out / "weights.bin").exists()


@pytest.mark.slow
def test_pareto_and_report_agree_on_weight_bytes_for_every_point(cache_dir, data, tmp_path):
    """Every point's `weight_bytes` in the front is what `weights.bin` / report.json take once that
    point is compiled: per-tile word padding (DRAM tiles of its mapping) and int32 biases included."""
    from quantloop.driver import compile as compile_model

    result = search_bits(canonical(), small(cache_dir, target="simba", generations=1), *data)
    points = {p.config: p for p in [*result.front, result.reference]}
    assert len(points) >= 2
    for i, point in enumerate(points.values()):
        out = tmp_path / f"p{i}"
        compile_model(MODEL, target="simba", bits_table=result.bits_file(point), weight_scheme=point.config.scheme,
                      data="zoo:digits-calib", cache_dir=cache_dir, output_dir=out, emit="weights,report")
        report = json.loads((out / "report.json").read_text())
        assert report["total"]["weight_bytes"] == point.weight_bytes == (out / "weights.bin").stat().st_size, point.config


def test_search_costs_partial_sums_as_the_compile_stores_them(cache_dir, data):
    """`--psum-bits outputs` (the fork's convention) reaches the search: every candidate is mapped and
    costed with partial sums at the Outputs width, as the compile of the chosen point does. On eyeriss
    w8a8 that packs 2 partial sums per 16-bit psum_spad word instead of 1, so the two differ."""
    from quantloop.mapper import MapCache, map_layers
    from quantloop.options import CompileOptions
    from quantloop.passes.search.objectives import layer_problems
    from quantloop.passes.search_bits import search_options
    from quantloop.problem import Bits
    from quantloop.targets.registry import load_target

    options = CompileOptions(target="eyeriss", psum_bits="outputs", search=SearchSettings())
    assert search_options(options).psum_bits == "outputs"
    result = search_bits(canonical(), small(cache_dir, psum_bits="outputs", generations=1), *data)
    _, problems, _ = layer_problems(canonical(), "eyeriss")
    layer_bits = result.space.layer_bits(result.reference.config)

    def total(psum):
        requests = [(p.name, p, Bits(w, i, o, psum=psum)) for p, (w, i, o) in zip(problems, layer_bits)]
        return sum(r.cost.total_energy_pj for r in map_layers(requests, load_target("eyeriss"), "energy",
                                                               cache=MapCache(cache_dir)))

    assert result.reference.energy_pj == pytest.approx(total("outputs"), rel=1e-9)
    assert total("outputs") != pytest.approx(total("accumulator"), rel=1e-6)
