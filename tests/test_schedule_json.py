"""schedule.json / schedule.txt / timeloop/ / report.json from layer records built with the cost model."""

from __future__ import annotations

import json
from math import ceil

import jsonschema
import numpy as np
import pytest

from quantloop.backend.layers import LayerRecord, OperandInfo, tile_sizes
from quantloop.backend.report import build_report, layer_weight_bytes
from quantloop.backend.schedule import build_schedule, format_schedule_txt, load_schema
from quantloop.backend.timeloop_export import folder_names, write_timeloop
from quantloop.cli import main
from quantloop.mapping import LevelMapping, Mapping
from quantloop.costmodel.model import evaluate
from quantloop.problem import DATASPACES, DIMS, Bits, Problem
from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
from quantloop.targets.registry import load_target

#: Timeloop's eyeriss_like conv3x3_C64_M64_P56 reference mapping (reference/timeloop), in our level form
REFERENCE_PROBLEM = Problem(C=64, M=64, P=56, Q=56, R=3, S=3, name="conv3x3")
REFERENCE_MAPPING = Mapping((
    LevelMapping((("Q", 4), ("C", 16), ("M", 2), ("P", 4)), keep=frozenset(DATASPACES)),
    LevelMapping((("M", 2), ("P", 14)), (("Q", 14),), (("S", 3), ("C", 4)), frozenset({"Inputs", "Outputs"})),
    LevelMapping(keep=frozenset({"Inputs"})),
    LevelMapping((("R", 3),), keep=frozenset({"Weights"})),
    LevelMapping((("M", 16),), keep=frozenset({"Outputs"})),
))


def _record(name, arch, problem, mapping, bits, kind="conv", signed_inputs=False):
    operands = {
        "Weights": OperandInfo(bits.weights, bits.scheme, True),
        "Inputs": OperandInfo(bits.inputs, "int", signed_inputs),
        "Outputs": OperandInfo(bits.outputs, "int", False),
    }
    cost = evaluate(arch, problem, mapping, bits, check=False)
    return LayerRecord(name, kind, problem, bits, operands, mapping, cost, True, 10, None)


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def random_mapping(arch, problem, rng) -> Mapping:
    """Every prime factor of every dim on a random level (temporal), random loop orders and keeps."""
    temporal = [dict() for _ in arch.levels]
    for d in DIMS:
        for prime in _primes(getattr(problem, d)):
            lvl = temporal[int(rng.integers(len(arch.levels)))]
            lvl[d] = lvl.get(d, 1) * prime
    levels = []
    for i, lvl in enumerate(arch.levels):
        loops = list(temporal[i].items())
        rng.shuffle(loops)
        keep = set(lvl.must_keep) | {ds for ds in lvl.may_keep if rng.random() < 0.5}
        levels.append(LevelMapping(tuple(loops), keep=frozenset(keep if i else set(DATASPACES))))
    return Mapping(tuple(levels))


@pytest.fixture(scope="module")
def eyeriss():
    return load_target("eyeriss")


@pytest.fixture(scope="module")
def records(eyeriss):
    reference = _record("conv3x3", eyeriss, REFERENCE_PROBLEM, REFERENCE_MAPPING, Bits.parse("w4a8"))
    rng = np.random.default_rng(3)
    out = [reference]
    for i, p in enumerate([Problem(C=32, M=64, P=14, Q=14), Problem(G=32, P=28, Q=28, R=3, S=3, Wstride=2, Hstride=2),
                           Problem(N=1, C=128, M=10)]):
        kind = ("conv", "depthwise", "gemm")[i]
        bits = Bits.parse(["w8a8", "w2a4", "w6a8"][i], scheme=["int", "pot", "int"][i])
        out.append(_record(f"/layer.{i}/Conv", eyeriss, p.with_dims(name=f"l{i}"), random_mapping(eyeriss, p, rng), bits, kind))
    return out


def _schedule(records, eyeriss):
    folders = folder_names([r.name for r in records])
    return build_schedule(records, eyeriss, [{"name": "pool", "op": "qnn.maxpool"}], "quantloop compile x", folders)


def test_schedule_validates_against_the_shipped_schema(records, eyeriss):
    schedule = _schedule(records, eyeriss)
    jsonschema.Draft202012Validator(load_schema()).validate(json.loads(json.dumps(schedule)))
    assert schedule["version"] == 1
    assert schedule["target"]["content_hash"] == eyeriss.content_hash


def test_schema_rejects_a_broken_schedule(records, eyeriss):
    schedule = json.loads(json.dumps(_schedule(records, eyeriss)))
    schedule["layers"][0]["mapping"][0]["temporal"][0] = ["K", 4]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(schedule, load_schema())
    del schedule["layers"][0]["cost"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(schedule, load_schema())


def test_reference_layer_mapping_tiles_and_totals(records, eyeriss):
    schedule = _schedule(records, eyeriss)
    conv = schedule["layers"][0]
    dram, glb = conv["mapping"][0], conv["mapping"][1]
    assert dram["temporal"] == [["Q", 4], ["C", 16], ["M", 2], ["P", 4]]
    assert glb["temporal"] == [["M", 2], ["P", 14]]
    assert glb["spatial_x"] == [["Q", 14]] and sorted(map(tuple, glb["spatial_y"])) == [("C", 4), ("S", 3)]
    assert glb["keep"] == ["Inputs", "Outputs"]
    # Timeloop's map.txt for this mapping: shared_glb holds Inputs 1024 and Outputs 6272 values
    assert glb["tiles"]["Inputs"]["values"] == 1024 and glb["tiles"]["Outputs"]["values"] == 6272
    for layer in schedule["layers"]:
        for level in layer["mapping"]:
            for ds, tile in level["tiles"].items():
                assert tile["words"] == ceil(tile["values"] / tile["values_per_word"]), (layer["name"], level["level"], ds)
                assert tile["bits"] == tile["words"] * level["word_bits"]
            assert level["buffer_bits"] == sum(t["bits"] for t in level["tiles"].values())
    totals = schedule["totals"]
    assert totals["energy_pj"] == pytest.approx(sum(r.cost.total_energy_pj for r in records), rel=1e-12)
    assert totals["cycles"] == sum(r.cost.cycles for r in records)
    assert sum(totals["energy_by_level_pj"].values()) == pytest.approx(totals["energy_pj"], rel=1e-9)
    assert sum(totals["energy_by_dataspace_pj"].values()) == pytest.approx(totals["energy_pj"], rel=1e-9)


def test_tile_sizes_match_the_cost_models_capacity(records, eyeriss):
    index = {lvl.name: l for l, lvl in enumerate(eyeriss.levels)}
    for r in records:
        tiles = tile_sizes(r.problem, r.mapping)
        for s in r.cost.per_level:
            assert s.utilized_capacity_words == ceil(tiles[index[s.level]][s.dataspace] / s.values_per_word)


def test_schedule_txt_has_a_block_per_layer_with_bits_and_energy(records, eyeriss):
    text = format_schedule_txt(records, eyeriss, "quantloop compile x")
    for r in records:
        assert f"=== layer {r.name} ({r.kind})" in text
    assert "Weights 4-bit int, Inputs 8-bit uint, Outputs 8-bit uint" in text
    assert "Weights 2-bit pot" in text
    assert "for Q in [0:4)" in text and "<< Compute >>" in text
    assert f"energy {records[0].cost.total_energy_pj / 1e6:.6g} uJ (" in text  # the total's unit, uJ
    assert "total energy" in text and " pJ (" not in text


def test_timeloop_folders_re_evaluate_to_the_schedule_numbers(records, eyeriss, tmp_path, capsys):
    folders = folder_names([r.name for r in records])
    assert folders["/layer.0/Conv"] == "layer.0_Conv"
    write_timeloop(tmp_path, records, eyeriss, folders)
    schedule = _schedule(records, eyeriss)
    for r, entry in zip(records, schedule["layers"]):
        folder = tmp_path / entry["timeloop"]
        problem, bits = read_problem(folder / "problem.yaml")
        mapping = read_mapping(folder / "map.yaml", eyeriss)
        assert mapping == r.mapping
        assert (problem.dims, bits.as_tuple()) == (r.problem.dims, r.bits.as_tuple())
        again = evaluate(eyeriss, problem, mapping, Bits(*bits.as_tuple(), scheme=r.bits.scheme), check=False)
        assert again.total_energy_pj == entry["cost"]["energy_pj"]
        assert again.cycles == entry["cost"]["cycles"]
    # the legal reference mapping also goes through `quantloop cost` itself
    ref = tmp_path / schedule["layers"][0]["timeloop"]
    assert main(["cost", "--target", "eyeriss", "--problem", str(ref / "problem.yaml"),
                 "--mapping", str(ref / "map.yaml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total_energy_pj"] == schedule["layers"][0]["cost"]["energy_pj"]
    assert result["cycles"] == schedule["layers"][0]["cost"]["cycles"]
    assert [(p["level"], p["dataspace"], p["energy_pj"]) for p in result["per_level"]] == [
        (p["level"], p["dataspace"], p["energy_pj"]) for p in schedule["layers"][0]["cost"]["per_level"]
    ]


def test_report_totals_are_the_sums_of_the_layers(records, eyeriss):
    manifest = {"layers": [
        {"name": "conv3x3", "length": 4608, "word_bits": 8},
        {"name": "/layer.0/Conv", "length": 1024, "word_bits": 64, "bias": {"length": 20}},
    ]}
    assert layer_weight_bytes(manifest) == {"conv3x3": 4608, "/layer.0/Conv": 1048}
    report = build_report(records, eyeriss, manifest, [{"name": "pool", "op": "qnn.maxpool"}], "cmd", ["a.png"],
                          {"pareto": {"points": [1, 2]}})
    total, layers = report["total"], report["layers"]
    assert total["energy_pj"] == pytest.approx(sum(layer["energy_pj"] for layer in layers), rel=1e-12)
    assert total["cycles"] == sum(layer["cycles"] for layer in layers)
    assert total["weight_bytes"] == sum(layer["weight_bytes"] for layer in layers) == 4608 + 1048
    for key in ("energy_by_level_pj", "energy_by_dataspace_pj"):
        for part, pj in total[key].items():
            assert pj == pytest.approx(sum(layer[key].get(part, 0.0) for layer in layers), rel=1e-12)
        assert sum(total[key].values()) == pytest.approx(total["energy_pj"], rel=1e-9)
    for layer, r in zip(layers, records):
        assert layer["bits"] == {"weights": r.bits.weights, "inputs": r.bits.inputs, "outputs": r.bits.outputs,
                                 "scheme": r.bits.scheme}
        assert sum(layer["energy_by_level_pj"].values()) == pytest.approx(layer["energy_pj"], rel=1e-9)
    assert report["host_ops"] == [{"name": "pool", "op": "qnn.maxpool"}]
    assert report["pareto"] == {"points": [1, 2]}
    with pytest.raises(ValueError, match="overwrite"):
        build_report(records, eyeriss, manifest, [], "cmd", [], {"total": 1})


def test_quantloop_report_prints_tables_extras_and_missing_plots(records, eyeriss, tmp_path, capsys):
    from quantloop.backend.report import write_report

    manifest = {"layers": []}
    report = build_report(records, eyeriss, manifest, [], "cmd", ["energy_by_level.png"], {"search": {"chosen": 3}})
    write_report(tmp_path, report)
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "also in report.json: search" in printed
    assert "energy_by_level.png (missing)" in printed
    assert "conv3x3" in printed and "Energy by level" in printed and "Energy by data space" in printed
    (tmp_path / "report.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a quantloop report" in capsys.readouterr().err
