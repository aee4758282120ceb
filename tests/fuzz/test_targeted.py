"""The targeted cases of the reliability campaign (issue #12), each as a fixture through the same contract as
the fuzz harness: exit 0 with a valid result, or exit 2 with a short message naming the file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from fuzz_harness import check, finite_json, finite_numbers, run
from test_fuzz import SEEDS, TARGET_YAML, _npz_with_header, _SEED_MLIR, tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]


def _cost_target(path: Path) -> list[str]:
    return ["cost", "--target", str(path), "--problem", str(SEEDS / "problem.yaml"), "--mapping", str(SEEDS / "map.yaml"),
            "--json"]


def _edited_target(edit) -> str:
    spec = yaml.safe_load(TARGET_YAML)
    edit(spec)
    return yaml.safe_dump(spec, sort_keys=False)


def _glb(spec):
    return spec["levels"][1]


TARGETS = {
    "non_utf8": TARGET_YAML.encode().replace(b"Eyeriss-like", b"Eyeriss\xff\xfe", 1),
    "depth_2_63": _edited_target(lambda s: _glb(s).update(depth=2**63)),
    "factor_zero": _edited_target(lambda s: s["levels"][2]["constraints"]["temporal"]["factors"].update(M=0)),
    "factor_negative": _edited_target(lambda s: s["levels"][2]["constraints"]["temporal"]["factors"].update(M=-4)),
    "factor_huge": _edited_target(lambda s: s["levels"][2]["constraints"]["temporal"]["factors"].update(M=2**70)),
    "permutation_twice": _edited_target(
        lambda s: s["levels"][2]["constraints"]["temporal"].update(permutation=["N", "M", "M", "P", "Q", "R", "S"])),
    "energy_nan": TARGET_YAML.replace("read: 59.4555", "read: .nan", 1),
    "energy_inf": TARGET_YAML.replace("read: 59.4555", "read: .inf", 1),
    "energy_huge": TARGET_YAML.replace("read: 59.4555", "read: 1.0e+300", 1),
    "mac_energy_nan": TARGET_YAML.replace("energy_pj: 1.11349", "energy_pj: .nan", 1),
    "word_bits_huge": TARGET_YAML.replace("word_bits: 8", "word_bits: 1000000"),
    "duplicate_key": TARGET_YAML.replace("  depth: 16384\n", "  depth: 16384\n  depth: 8\n", 1),
    "deep_nesting": TARGET_YAML + "extra: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "huge_int": TARGET_YAML.replace("depth: 16384", "depth: " + "9" * 5000, 1),
}


@pytest.mark.parametrize("case", sorted(TARGETS))
def test_target_yaml(tmp_path, case):
    path = tmp_path / f"{case}.yaml"
    data = TARGETS[case]
    assert data != TARGET_YAML, f"{case}: the edit did not apply to the seed"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    result = check("targeted target", _cost_target(path), path)
    assert result.code == 2, f"{case}: accepted\n{result.out[:500]}"


DEGENERATE = {
    "only_dram": lambda s: s.update(levels=s["levels"][:1]),
    "no_global_buffer": lambda s: s.update(levels=[s["levels"][0]] + s["levels"][2:]),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_targets_map_or_refuse(tmp_path, case):
    path = tmp_path / f"{case}.yaml"
    path.write_text(_edited_target(DEGENERATE[case]))
    check("targeted target", ["map", "--target", str(path), "--problem", str(SEEDS / "tiny_problem.yaml")], path)


def test_one_broken_file_on_the_target_path_is_reported_and_the_others_listed(tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text(TARGET_YAML.replace("name: eyeriss", "name: good", 1))
    (tmp_path / "broken.yaml").write_bytes(b"name: [\xff")
    monkeypatch.setenv("QUANTLOOP_TARGET_PATH", str(tmp_path))
    result = run(["targets", "--json"])
    assert result.code == 0, result.err
    names = [t["name"] for t in json.loads(result.out)]
    assert "good" in names and "eyeriss" in names and "broken" not in names
    assert "broken.yaml" in result.err and len(result.err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ problem / mapping / bits

PROBLEMS = {
    "dim_2_63": "C: 32", "dim_abc": "C: abc", "dim_null": "C: null", "dim_float": "C: 16.7", "dim_big": "C: 9223372036854775808",
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_problem_yaml(tmp_path, case):
    text = (SEEDS / "problem.yaml").read_text()
    replacement = {"dim_2_63": "C: 9223372036854775807"}.get(case, PROBLEMS[case])
    path = tmp_path / f"{case}.yaml"
    path.write_text(text.replace("C: 32", replacement, 1))
    result = check("targeted problem", ["cost", "--target", "eyeriss", "--problem", str(path), "--mapping",
                                        str(SEEDS / "map.yaml"), "--json"], path)
    assert result.code == 2


MAPPINGS = {
    "keep_wrong_shape": ("keep:\n      - Outputs", "keep: Outputs"),
    "split_not_int": ("type: spatial", "type: spatial\n    split: 1.5"),
    "factor_zero": ("C1 M1", "C0 M1"),
    "factors_multiply_wrong": ("P14", "P7"),
}


@pytest.mark.parametrize("case", sorted(MAPPINGS))
def test_mapping_yaml(tmp_path, case):
    old, new = MAPPINGS[case]
    text = (SEEDS / "map.yaml").read_text()
    assert old in text, case
    path = tmp_path / f"{case}.yaml"
    path.write_text(text.replace(old, new, 1))
    result = check("targeted mapping", ["cost", "--target", "eyeriss", "--problem", str(SEEDS / "problem.yaml"),
                                        "--mapping", str(path), "--json"], path)
    assert result.code == 2


def _compile_argv(model: Path, out: Path, *extra: str) -> list[str]:
    return ["compile", str(model), "--target", "eyeriss", "-o", str(out), "--emit", "report", "--cache-dir",
            str(out.parent / "cache"), "-q", *extra]


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(tiny_model(), path)
    return path


BITS = {
    "huge_int": '{"conv1": {"weights": ' + "9" * 5000 + ', "activations": 8}}',
    "deep": '{"conv1": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "weights_abc": '{"conv1": {"weights": "abc", "activations": 8}}',
    "weights_zero": '{"conv1": {"weights": 0, "activations": 8}}',
    "duplicate_key": '{"conv1": {"weights": 4, "weights": 8, "activations": 8}}',
    "nan": '{"conv1": {"weights": NaN, "activations": 8}}',
}


@pytest.mark.parametrize("case", sorted(BITS))
def test_bits_json(tmp_path, model, case):
    path = tmp_path / f"{case}.json"
    path.write_text(BITS[case])
    out = tmp_path / "out"
    assert check("targeted bits", _compile_argv(model, out, "--bits-file", str(path)), path, out).code == 2


def test_npz_header_claiming_a_huge_shape(tmp_path, model):
    path = tmp_path / "huge.npz"
    path.write_bytes(_npz_with_header("(100000, 100000, 3, 3)", "<f4", b"\0" * 64))
    out = tmp_path / "out"
    assert check("targeted npz", _compile_argv(model, out, "--data", str(path)), path, out).code == 2


# ------------------------------------------------------------------------------------------ ONNX


def _onnx_case(edit) -> onnx.ModelProto:
    model = tiny_model()
    edit(model)
    return model


def _external_data(model: onnx.ModelProto, location: str) -> None:
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.append(onnx.StringStringEntryProto(key="location", value=location))


def _clip_with_vector_bounds(model: onnx.ModelProto) -> None:
    lo = numpy_helper.from_array(np.zeros(4, np.float32), "lo")
    hi = numpy_helper.from_array(np.full(4, 6, np.float32), "hi")
    model.graph.initializer.extend([lo, hi])
    model.graph.node[1].op_type = "Clip"
    model.graph.node[1].input.extend(["lo", "hi"])


ONNX = {
    "clip_vector_min_max": _clip_with_vector_bounds,
    "external_missing": lambda m: _external_data(m, "missing.bin"),
    "external_absolute": lambda m: _external_data(m, "/etc/passwd"),
    "external_outside": lambda m: _external_data(m, "../outside.bin"),
    "no_graph_outputs": lambda m: m.graph.ClearField("output"),
    "huge_pads": lambda m: m.graph.node[0].attribute[1].ints.__setitem__(slice(None), [100000] * 4),
    "stride_beyond_input": lambda m: m.graph.node[0].attribute.append(helper.make_attribute("strides", [100, 100])),
    "huge_input": lambda m: [d.__setattr__("dim_value", 100000) for d in m.graph.input[0].type.tensor_type.shape.dim[2:]],
    "auto_pad_bogus": lambda m: m.graph.node[0].attribute.append(helper.make_attribute("auto_pad", "BOGUS")),
    "bias_huge": lambda m: m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.full(4, 1e12, np.float32), "b1")),
}


def test_a_bias_int32_cannot_hold_is_refused_naming_the_layer(tmp_path):
    path = tmp_path / "bias.onnx"
    onnx.save(_onnx_case(ONNX["bias_huge"]), path)
    out = tmp_path / "out"
    result = check("targeted onnx", _compile_argv(path, out, "--emit", "weights"), path, out)
    assert result.code == 2 and "conv1" in result.err and "bias" in result.err


@pytest.mark.parametrize("case", sorted(ONNX))
def test_onnx(tmp_path, case):
    path = tmp_path / f"{case}.onnx"
    onnx.save(_onnx_case(ONNX[case]), path)
    out = tmp_path / "out"
    check("targeted onnx", _compile_argv(path, out), path, out)


def test_a_300_character_node_name_compiles_with_short_file_names(tmp_path):
    model = tiny_model()
    model.graph.node[0].name = "n" * 300
    path = tmp_path / "long.onnx"
    onnx.save(model, path)
    out = tmp_path / "out"
    result = check("targeted onnx", ["compile", str(path), "--target", "eyeriss", "-o", str(out), "--emit",
                                     "schedule,timeloop,weights,report", "--cache-dir", str(tmp_path / "cache"), "-q"],
                   path, out)
    assert result.code == 0, result.err
    assert all(len(p.name) <= 255 for p in out.rglob("*"))


# ------------------------------------------------------------------------------------------ MLIR


MLIR = {
    "invalid_escape": _SEED_MLIR.replace('"conv1"', '"\\q' + "a" * 44 + '"', 1),
    "one_digit_hex": _SEED_MLIR.replace('"conv1"', '"\\1' + "z" * 44 + '"', 1),
    "deep_nesting": _SEED_MLIR.replace("pads = [1, 1, 1, 1]", "pads = " + "[" * 20000 + "]" * 20000, 1),
    "int_over_4300_digits": _SEED_MLIR.replace("pads = [1, 1, 1, 1]", "pads = [" + "9" * 5000 + ", 1, 1, 1]", 1),
    "huge_attribute": _SEED_MLIR.replace("pads = [1, 1, 1, 1]", "pads = [4611686018427387904, 1, 1, 1]", 1),
}


@pytest.mark.parametrize("case", sorted(MLIR))
def test_mlir(tmp_path, case):
    path = tmp_path / f"{case}.mlir"
    path.write_text(MLIR[case])
    assert check("targeted mlir", ["opt", str(path), "-p", "qnn-assign-bits{bits=w4a8}"], path).code == 2


# ------------------------------------------------------------------------------------------ report / zoo / cache


REPORTS = {
    "missing_total": lambda r: r.pop("total"),
    "wrong_types": lambda r: r.update(total="lots"),
    "missing_bits": lambda r: [layer.pop("bits", None) for layer in r.get("layers", [])],
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """One complete output folder (compiled once for the report cases)."""
    folder = tmp_path_factory.mktemp("compiled")
    onnx.save(tiny_model(), folder / "model.onnx")
    assert run(_compile_argv(folder / "model.onnx", folder / "out")).code == 0
    return folder / "out"


@pytest.mark.parametrize("case", sorted(REPORTS))
def test_malformed_report_json(tmp_path, compiled, case):
    out = tmp_path / "out"
    out.mkdir()
    report = json.loads((compiled / "report.json").read_text())
    REPORTS[case](report)
    (out / "report.json").write_text(json.dumps(report))
    assert check("targeted report", ["report", str(out)], out / "report.json").code == 2


@pytest.mark.parametrize("spec", ["zoo:vgg16?width=100", "zoo:mobilenet_v2?resolution=320000", "zoo:mobilenet_v2?width=nan",
                                  "zoo:mobilenet_v2?seed=-1"])
def test_zoo_options_are_validated(tmp_path, spec):
    result = run(["compile", spec])
    assert result.code == 2 and spec in result.err and len(result.err.strip().splitlines()) == 1


def _mapper_entries(cache: Path) -> list[Path]:
    return sorted((cache / "mapper").rglob("*.json"))


def _break(entry: Path, trouble: str) -> None:
    if trouble == "fifo":
        entry.unlink()
        os.mkfifo(entry)
    elif trouble == "deep":
        entry.write_text("[" * 100_000 + "]" * 100_000)
    elif trouble == "dev_zero":
        entry.unlink()
        entry.symlink_to("/dev/zero")
    else:  # a flipped field: the checksum no longer matches
        text = entry.read_text()
        flipped = ('"optimal":false', '"optimal":true') if '"optimal":false' in text else ('"optimal":true', '"optimal":false')
        entry.write_text(text.replace(*flipped))


def test_broken_cache_entries_are_misses(tmp_path, model):
    """A FIFO, a deeply nested file, a symlink to /dev/zero and a tampered entry: each is a miss, never a hang,
    a crash or a trusted lie (the two mapper entries and the calibration entry get different troubles)."""
    out = tmp_path / "out"
    argv = _compile_argv(model, out, "--force")
    assert run(argv).code == 0
    cache = tmp_path / "cache"
    entries = sorted(cache.rglob("*.json"))
    assert len(entries) >= 3
    troubles = ["fifo", "dev_zero", "deep", "flipped"]
    for i, entry in enumerate(entries):
        _break(entry, troubles[i % len(troubles)])
    result = run(argv)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    report = json.loads((out / "report.json").read_text())
    assert finite_numbers(report)


def test_a_tampered_cache_entry_is_not_trusted(tmp_path):
    from quantloop.mapper.cache import MapCache

    cache = MapCache(tmp_path)
    cache.put("ab" * 32, {"optimal": False, "mappings_considered": 10})
    assert cache.get("ab" * 32) == {"optimal": False, "mappings_considered": 10}
    _break(cache.path("ab" * 32), "flipped")
    assert cache.get("ab" * 32) is None


@pytest.mark.parametrize("trouble", ["cache_is_a_file", "read_only"])
def test_a_broken_cache_warns_once_and_is_bypassed(tmp_path, model, trouble):
    cache = tmp_path / "cache"
    if trouble == "cache_is_a_file":
        cache.write_text("not a folder")
    else:
        cache.mkdir()
        cache.chmod(0o500)
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
    out = tmp_path / "out"
    result = run(["compile", str(model), "--target", "eyeriss", "-o", str(out), "--emit", "report", "--cache-dir",
                  str(cache), "-q"])
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "cache" in line]
    assert len(warnings) == 1 and "warning" in warnings[0]
