"""The public Python API: the README's example runs as written, and the result carries per-layer data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import quantloop

ROOT = Path(__file__).resolve().parents[1]


def _readme_api_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: the Python API section has no python example"
    return match.group(1)


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUANTLOOP_CACHE_DIR", str(tmp_path / "cache"))
    code = _readme_api_example()
    for name in ("compile", "load_model", "load_dataset", "load_target", "map_layer", "cost", "to_json", "table"):
        assert name in code, f"README example does not show {name}"
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert {p.name for p in (tmp_path / "build" / "cnn_digits").iterdir()} == {
        "schedule.json", "schedule.txt", "weights.bin", "weights.json"}
    assert "/0/Conv" in result.table()
    schedule_txt = (tmp_path / "build" / "cnn_digits" / "schedule.txt").read_text()
    assert "command: quantloop.compile('zoo:cnn_digits', target='eyeriss', output_dir='build/cnn_digits'" in schedule_txt


def test_a_python_compile_records_its_call_as_the_command_line():
    from quantloop.driver import python_call
    from quantloop.options import CompileOptions

    options = CompileOptions(target="eyeriss", bits="w4a8", output_dir=Path("out"), emit="schedule")
    assert python_call("zoo:x", options) == "quantloop.compile('zoo:x', target='eyeriss', output_dir='out', emit='schedule', bits='w4a8')"
    assert python_call("zoo:x", CompileOptions()) == "quantloop.compile('zoo:x')"


def test_the_helpers_are_public_and_lazy():
    import subprocess
    import sys

    names = ["compile", "load_model", "load_dataset", "load_target", "map_layer", "cost", "CompileOptions", "CompileResult"]
    assert set(names) <= set(quantloop.__all__) and set(names) <= set(dir(quantloop))
    for name in names:
        assert callable(getattr(quantloop, name)) and getattr(quantloop, name).__doc__, name
    probe = "import sys, quantloop; print(any(m.split('.')[0] in ('xdsl', 'onnx', 'numpy') for m in sys.modules))"
    env_path = str(ROOT.parent)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False", "import quantloop pulled in heavy libraries"


def test_map_layer_and_cost_agree_and_take_problem_yaml(tmp_path):
    from quantloop.costmodel.timeloop_yaml import write_problem

    best = quantloop.map_layer({"M": 16, "C": 8, "P": 4, "Q": 4, "R": 3, "S": 3}, "eyeriss", bits="w4a4o8",
                               use_cache=False)
    assert best.bits.outputs == 8 and best.bits.inputs == 4 and best.cost.total_energy_pj > 0
    again = quantloop.cost(best.problem, best, "eyeriss", bits="w4a4o8")
    assert again.total_energy_pj == pytest.approx(best.cost.total_energy_pj, rel=1e-12)
    write_problem(tmp_path / "p.yaml", best.problem, best.bits)
    from_yaml = quantloop.cost(tmp_path / "p.yaml", best.mapping, "eyeriss")
    assert from_yaml.total_energy_pj == pytest.approx(best.cost.total_energy_pj, rel=1e-12)
    with pytest.raises(TypeError):
        quantloop.map_layer(42, "eyeriss")


def test_compile_result_is_structured_per_layer(tmp_path):
    result = quantloop.compile("zoo:cnn_digits", target="eyeriss", bits="w4a4", data="zoo:digits-calib",
                               cache_dir=str(tmp_path))
    assert len(result.layers) == 4
    first, second = result.layers[0], result.layers[1]
    assert first.problem["M"] == 16 and first.problem["Hstride"] == 1 and first.macs == 16 * 32 * 32 * 9
    assert first.operand_bits["Weights"] == {"bits": 4, "scheme": "int", "signed": True}
    assert first.operand_bits["Inputs"]["bits"] == 8 and second.operand_bits["Inputs"]["bits"] == 4
    levels = [lvl.level for lvl in first.mapping]
    assert levels == [lvl.name for lvl in result.target.levels]
    loops = {d: 1 for d in "NGCMPQRS"}
    for lvl in first.mapping:
        for dim, factor in lvl.temporal + lvl.spatial_x + lvl.spatial_y:
            loops[dim] *= factor
    assert all(loops[d] == first.problem[d] for d in "NGCMPQRS")
    by_level = sum(sum(parts.values()) for parts in first.energy_pj_by_level.values())
    assert by_level + first.leakage_pj == pytest.approx(first.energy_pj, rel=1e-9)
    data = json.loads(json.dumps(result.to_json()))
    assert data["layers"][0]["mapping"][0]["level"] == levels[0] and data["area"]["total_mm2"] > 0
    assert set(result.phases) >= {"import", "qnn-calibrate", "accel-map", "mapping"}
    table = result.table()
    assert "/0/Conv" in table and "reads the model input at 8 bits" in table


def test_report_keeps_long_layer_names_distinct_when_piped(tmp_path, capsys):
    from quantloop.backend.report import REPORT_VERSION
    from quantloop.cli import main

    names = [f"model/backbone/stage4/block3/conv_pointwise_expand_{i}" for i in (1, 2)]
    layer = {"kind": "conv", "bits": {"weights": 4, "inputs": 8, "outputs": 8, "scheme": "int"}, "energy_pj": 1e6,
             "cycles": 10, "utilization": 0.5, "weight_bytes": 64}
    report = {
        "version": REPORT_VERSION, "quantloop_version": quantloop.__version__, "command_line": "x",
        "target": {"name": "eyeriss", "content_hash": "0" * 16},
        "total": {"energy_pj": 2e6, "cycles": 20, "macs": 100, "utilization": 0.5, "weight_bytes": 128,
                  "energy_by_level_pj": {"DRAM": 2e6}, "energy_by_dataspace_pj": {"Weights": 2e6}},
        "layers": [{"name": n, **layer} for n in names], "host_ops": [], "plots": [],
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path)]) == 0  # capsys: stdout is not a terminal
    out = capsys.readouterr().out
    assert "…" not in out
    flat = "".join(line.strip("│ ") for line in out.splitlines())
    assert all(n.replace(" ", "") in flat.replace(" ", "") for n in names)


def test_emit_flag_and_keyword_choose_the_artefacts():
    import argparse

    from quantloop.backend.emit import DEFAULT_EMIT, STEPS, parse_emit
    from quantloop.errors import QuantloopError
    from quantloop.options import CompileOptions, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert CompileOptions.from_args(parser.parse_args([])).emit is None
    assert CompileOptions.from_args(parser.parse_args(["--emit", "weights,schedule"])).emit == ("schedule", "weights")
    assert parse_emit(None) == DEFAULT_EMIT and parse_emit("all") == STEPS and "onnx" not in DEFAULT_EMIT
    with pytest.raises(QuantloopError, match=r"--emit schedule,pngs: unknown artefact pngs \(choose from schedule,"):
        CompileOptions.from_args(parser.parse_args(["--emit", "schedule,pngs"]))
    with pytest.raises(QuantloopError, match="--emit"):
        quantloop.compile("zoo:cnn_digits", target="eyeriss", output_dir="never-written", emit=["plot"])
    assert not Path("never-written").exists()


def test_help_imports_no_heavy_library():
    """`quantloop --help` builds every sub-command's parser without numpy, xdsl, onnx, rich or matplotlib
    (their imports, not argparse, are what made it slow)."""
    import subprocess
    import sys

    probe = ("import sys; from quantloop.cli import build_parser; build_parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'xdsl', 'onnx', 'rich', 'matplotlib', 'yaml'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT.parent), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_fully_cached_mapping_with_two_workers_starts_no_process_pool(tmp_path, monkeypatch):
    """--workers 2 is never slower than 1 on a cached run: cache hits are answered in the calling process."""
    from quantloop.problem import Bits, Problem
    from quantloop.mapper import api as mapper_api
    from quantloop.mapper.cache import MapCache

    requests = [(f"l{i}", Problem(M=8 * (i + 1), C=4, P=2, Q=2), Bits.parse("w8a8")) for i in range(3)]
    cache = MapCache(tmp_path)
    first = mapper_api.map_layers(requests, "eyeriss", workers=1, cache=cache)

    class NoPool:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a process pool was started for cached layers")

    monkeypatch.setattr(mapper_api, "ProcessPoolExecutor", NoPool)
    heard = []

    class Listener:
        def start(self, name):
            heard.append(("start", name))

        def advance(self, name="", cache_hit=False):
            heard.append(("done", name, cache_hit))

    again = mapper_api.map_layers(requests, "eyeriss", workers=2, cache=cache, progress=Listener())
    assert [r.mapping for r in again] == [r.mapping for r in first] and all(r.cache_hit for r in again)
    assert heard == [("done", name, True) for name, *_ in requests]


def test_search_progress_is_plain_lines_when_piped():
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from quantloop.passes.search.engine import SearchOptions, _progress
    from quantloop.progress import is_progress_line

    stream = io.StringIO()
    options = SearchOptions(target="eyeriss", progress=True, objective="energy", generations=2, population=24)
    with _progress(Console(file=stream), options) as update:
        update(1, None, 0.0, 24)
        update(1, None, 0.0, 30)  # evaluations completing within a generation: no extra line when piped
        update(2, SimpleNamespace(energy_pj=1.5e6), 0.5, 48)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(is_progress_line(line) for line in lines), lines
    assert lines[0].startswith("quantloop: search generation 1 of 2 ") and "best feasible — µJ" in lines[0]
    assert "best feasible 1.5000 µJ, cache hits 50%, 48/48 evaluations" in lines[1]
    stream = io.StringIO()  # QAT in the loop: the PTQ phase, then as many generations again
    with _progress(Console(file=stream), SearchOptions(target="eyeriss", generations=2, population=24, accuracy="qat")) as update:
        update(3, None, 0.0, 72)
    assert stream.getvalue().startswith("quantloop: search generation 3 of 4 ") and "72/96 evaluations" in stream.getvalue()
