"""`quantloop explore`: design points, the Pareto front, a 24-design sweep against separate compiles,
and Dask against one process (issue 15)."""

from __future__ import annotations

import json

import pytest

from quantloop.errors import QuantloopError
from quantloop.explore.evaluate import EvalSettings
from quantloop.explore.pareto import dominates, pareto_front
from quantloop.explore.space import design_points, hardware_configs, native_bits, parse_axis
from quantloop.targets.registry import load_target

PE_TYPES = ["int8", "int16", "lightpe1", "lightpe2"]


def test_pareto_front_is_exactly_the_non_dominated_rows():
    rows = [
        {"energy_pj": 1.0, "latency_s": 2.0, "area_mm2": 1.0},
        {"energy_pj": 2.0, "latency_s": 1.0, "area_mm2": 1.0},
        {"energy_pj": 2.0, "latency_s": 2.0, "area_mm2": 1.0},  # dominated by both
        {"energy_pj": 1.0, "latency_s": 2.0, "area_mm2": 1.0},  # a duplicate of a front point stays
    ]
    assert pareto_front(rows) == [0, 1, 3]
    with_accuracy = [dict(r, accuracy=a) for r, a in zip(rows, [0.5, 0.5, 0.9, 0.4])]
    assert pareto_front(with_accuracy) == [0, 1, 2]  # accuracy is maximised: row 2 now counts, row 3 loses to 0


def test_native_bits_and_skipped_combinations():
    assert native_bits(load_target("eyeriss")) == ("w8a8", "int")
    assert native_bits(load_target("eyeriss_int16")) == ("w16a16", "int")
    assert native_bits(load_target("eyeriss_lightpe1")) == ("w4a8", "pot")
    assert native_bits(load_target("eyeriss_lightpe2")) == ("w8a8", "pot2")
    configs = hardware_configs({"pe_type": ["int8", "lightpe1"]})
    points, skipped = design_points("eyeriss", configs, bits=["w4a8", "w8a8"])
    assert [(p.target, p.bits, p.scheme) for p in points] == [
        ("eyeriss?pe_type=int8", "w4a8", "int"), ("eyeriss?pe_type=int8", "w8a8", "int"),
        ("eyeriss?pe_type=lightpe1", "w4a8", "pot")]
    assert skipped == [{"target": "eyeriss?pe_type=lightpe1", "bits": "w8a8", "scheme": "pot",
                        "reason": "bits: the lightpe1 PEs execute weights of at most 4 bits, not 8 "
                                  "(target eyeriss?pe_type=lightpe1)"}]


def test_random_sampling_is_seeded_and_distinct():
    axes = {"pe": ["8x8", "12x12", "16x16"], "glb_kib": ["64", "128", "256"]}
    a = hardware_configs(axes, "random", samples=4, seed=3)
    assert a == hardware_configs(axes, "random", samples=4, seed=3) and len({tuple(c.items()) for c in a}) == 4
    assert len(hardware_configs(axes)) == 9
    with pytest.raises(QuantloopError, match="expected NAME=V1,V2"):
        parse_axis("pe")
    with pytest.raises(QuantloopError, match="parameter pe: 0x8 is below the minimum 1"):
        design_points("eyeriss", hardware_configs({"pe": ["0x8"]}))


def _settings(cache) -> EvalSettings:
    return EvalSettings(model="zoo:cnn_digits", data="zoo:digits-calib", val_data="zoo:digits-val", cache_dir=str(cache))


@pytest.mark.slow
def test_24_design_sweep_front_equals_separate_compiles_and_lightpe_beats_int16(tmp_path):
    """3 array sizes × 2 global buffers × 4 PE types on digits."""
    from quantloop import compile as compile_model
    from quantloop.explore.sweep import run_sweep

    axes = {"pe": ["8x8", "14x12", "16x16"], "glb_kib": ["64", "128"], "pe_type": PE_TYPES}
    settings = _settings(tmp_path / "cache")
    seen = []
    doc = run_sweep(settings, "eyeriss", axes, progress=lambda done, total: seen.append((done, total)))
    rows, front = doc["points"], doc["front"]
    assert len(rows) == 24 and not doc["skipped"] and seen[-1] == (24, 24)
    keys = [k for k, _ in doc["objectives"]]
    assert keys == ["energy_pj", "latency_s", "area_mm2", "accuracy"]
    vec = [tuple(r[k] if k != "accuracy" else -r[k] for k in keys) for r in rows]
    for i in range(24):  # the front is exactly the non-dominated set
        assert (i in front) == (not any(dominates(vec[j], vec[i]) for j in range(24) if j != i))
    for row in rows:  # every point is a separate compile of that point
        result = compile_model("zoo:cnn_digits", target=row["target"], bits=row["bits"], weight_scheme=row["scheme"],
                               data="zoo:digits-calib", cache_dir=str(tmp_path / "cache"))
        assert result.ppa.energy_pj == row["energy_pj"] and result.ppa.cycles == row["cycles"]
        assert result.ppa.area_mm2 == row["area_mm2"] and result.ppa.latency_s == row["latency_s"]
    # LightPE designs beat INT16 on performance per area at every array and buffer size, within 2 pp of accuracy
    by = {(r["parameters"]["pe"], r["parameters"]["glb_kib"], r["pe_type"]): r for r in rows}
    for pe in axes["pe"]:
        for glb in axes["glb_kib"]:
            int16 = by[(pe, glb, "int16")]
            for light in ("lightpe1", "lightpe2"):
                r = by[(pe, glb, light)]
                assert r["perf_per_area_gmacs_per_mm2"] > int16["perf_per_area_gmacs_per_mm2"]
                assert r["energy_pj"] < int16["energy_pj"]
                assert int16["accuracy"] - r["accuracy"] <= 0.02
    assert doc["spread"]["energy"] > 1 and doc["spread"]["perf_per_area"] > 1


@pytest.mark.slow
def test_local_cluster_with_two_workers_gives_the_single_process_front(tmp_path):
    from quantloop.explore.sweep import run_sweep

    axes = {"pe": ["8x8", "14x12"], "pe_type": ["int8", "lightpe1"]}
    one = run_sweep(_settings(tmp_path / "a"), "eyeriss", axes)
    two = run_sweep(_settings(tmp_path / "b"), "eyeriss", axes, workers=2)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


@pytest.mark.slow
def test_explore_cli_writes_json_and_plot(tmp_path, capsys):
    from quantloop.cli import main

    out = tmp_path / "sweep"
    status = main(["explore", "zoo:cnn_digits", "--grid", "pe_type=int8,lightpe1", "--data", "zoo:digits-calib",
                   "--cache-dir", str(tmp_path / "cache"), "--compile-front", "-o", str(out)])
    assert status == 0
    doc = json.loads((out / "explore.json").read_text())
    assert len(doc["points"]) == 2 and (out / "explore.png").stat().st_size > 0
    for i in doc["front"]:
        report = json.loads((out / "designs" / f"{i:03d}" / "report.json").read_text())
        assert report["total"]["energy_pj"] == doc["points"][i]["energy_pj"]
    assert "on the Pareto front" in capsys.readouterr().out


def test_explore_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    from quantloop.cli import main

    for argv, message in [
        (["--grid", "pe_type=fp16"], "parameter pe_type: 'fp16' is not one of"),
        (["--grid", "pe"], "--grid 'pe': expected NAME=V1,V2"),
        (["--grid", "pe=8x8", "--sampling", "random"], "--samples: must be at least 1"),
        (["--target", "simba", "--grid", "pe=8x8"], "unknown parameter pe (known: pe_type)"),
    ]:
        assert main(["explore", "zoo:cnn_digits", *argv, "-o", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "x").exists()


def test_nsga2_sampling_is_seeded_evaluates_each_design_once_and_finds_the_optimum():
    from quantloop.explore.nsga import nsga2_configs

    axes = {"a": [str(i) for i in range(6)], "b": [str(i) for i in range(6)]}
    calls = []

    def evaluate(configs):  # a synthetic design space: energy falls with a, area with b, latency rises with both
        calls.append(len(configs))
        return [{"energy_pj": 10.0 - int(c["a"]), "latency_s": 1.0 + int(c["a"]) + int(c["b"]),
                 "area_mm2": 10.0 - int(c["b"]), "accuracy": None} for c in configs]

    first = nsga2_configs(axes, evaluate, population=6, generations=4, seed=3)
    again = nsga2_configs(axes, evaluate, population=6, generations=4, seed=3)
    assert first == again
    assert len({tuple(c.items()) for c in first}) == len(first) <= 6 * 4
    assert sum(calls) == 2 * len(first)  # nothing evaluated twice
    with pytest.raises(QuantloopError, match="--population must be at least 2"):
        nsga2_configs(axes, evaluate, population=1, generations=1, seed=0)
