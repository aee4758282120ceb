"""`quantloop compile` end to end through the CLI: IR dumps that parse back, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantloop.cli import main
from quantloop.progress import is_progress_line
from quantloop.ir.qnn import parse_module

HEADER = re.compile(r"^// -----// IR Dump After (\S+) //----- //$", re.M)


def _split_dumps(text: str) -> list[tuple[str, str]]:
    """(pass name, module text) for every dump in `text`."""
    marks = list(HEADER.finditer(text))
    dumps = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[mark.end() : end]
        module_end = body.rfind("\n}")
        dumps.append((mark.group(1), body[: module_end + 2].strip()))
    return dumps


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


MAX_LINE = 240


def _check_dumps(dumps: list[tuple[str, str]], tmp_path: Path, capsys) -> None:
    """Every dump prints back identically through `quantloop opt`, and no line is over MAX_LINE."""
    for name, text in dumps:
        longest = max(text.splitlines(), key=len)
        assert len(longest) <= MAX_LINE, f"dump after {name}: a line of {len(longest)} characters: {longest[:300]}"
        path = tmp_path / f"{name}.mlir"
        path.write_text(text + "\n")
        code, reprinted, err = _run(["opt", str(path)], capsys)
        assert code == 0, err
        assert reprinted.strip() == text, f"dump after {name} does not print back identically"


@pytest.mark.slow
def test_print_ir_after_all_on_mobilenet_v2_dumps_every_pass_and_each_dump_parses_back(capsys, tmp_path):
    code, out, err = _run(["compile", "zoo:mobilenet_v2", "--print-ir-after-all"], capsys)
    assert code == 0, err
    assert "IR Dump" not in out
    dumps = _split_dumps(err)
    assert [name for name, _ in dumps] == ["qnn-canonicalize", "qnn-fold-quant", "qnn-assign-bits"]
    _check_dumps(dumps, tmp_path, capsys)
    assert "!qnn.int<bits = 8, signed = true>" in dumps[-1][1]
    # the custom syntax: enum activations, compact arrays, defaults left out
    assert 'qnn.conv2d %input, %conv_1.weight, %conv_1.bias {strides = [2, 2], pads = [1, 1, 1, 1], act = clip' in dumps[0][1]


@pytest.mark.slow
def test_mobilenet_v2_on_eyeriss_every_dump_is_readable_and_round_trips(capsys, tmp_path):
    """Calibrated per-channel scales print once (aliases at the top), mappings and costs on wrapped lines."""
    code, out, err = _run(
        ["compile", "zoo:mobilenet_v2", "--target", "eyeriss", "--print-ir-after-all", "--cache-dir", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0, err
    dumps = _split_dumps(err)
    assert [name for name, _ in dumps] == [
        "qnn-canonicalize", "qnn-fold-quant", "qnn-assign-bits", "qnn-calibrate", "accel-lower", "accel-map"
    ]
    _check_dumps(dumps, tmp_path, capsys)
    mapped = dumps[-1][1]
    assert mapped.startswith("!qnn_q0 = !qnn.uniform<i8:f32:0, {") and "#accel.cost<" in mapped


@pytest.mark.slow
def test_compile_with_a_target_dumps_lowering_and_mapping_and_they_parse_back(capsys, tmp_path):
    dump_dir = tmp_path / "ir"
    argv = [
        "compile",
        "zoo:cnn_digits",
        "--target",
        "eyeriss",
        "--bits",
        "w4a8",
        "--data",
        "zoo:digits-calib",
        "--print-ir-after-all",
        "--dump-ir",
        str(dump_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    names = [name for name, _ in _split_dumps(err)]
    assert names == ["qnn-canonicalize", "qnn-fold-quant", "qnn-assign-bits", "qnn-calibrate", "accel-lower", "accel-map"]
    files = sorted(p.name for p in dump_dir.iterdir())
    assert files == [
        "00_input.mlir",
        "01_qnn-canonicalize.mlir",
        "02_qnn-fold-quant.mlir",
        "03_qnn-assign-bits.mlir",
        "04_qnn-calibrate.mlir",
        "05_accel-lower.mlir",
        "06_accel-map.mlir",
    ]
    mapped = parse_module((dump_dir / "06_accel-map.mlir").read_text(), "06_accel-map.mlir")
    layers = [op for op in mapped.walk() if op.name == "accel.layer"]
    assert layers and all(op.properties.get("mapping") is not None for op in layers)
    assert "#accel.mapping<" in err and "#accel.cost<" in err
    # IR dumps go to stderr (as mlir-opt prints them), the result table to stdout
    assert "total" in out and "optimal" in out and "IR Dump" not in out


@pytest.mark.slow
def test_compile_writes_artefacts_and_refuses_to_overwrite_without_force(capsys, tmp_path):
    out_dir = tmp_path / "build"
    argv = ["compile", "zoo:cnn_digits", "--target", "simba", "-o", str(out_dir), "--cache-dir", str(tmp_path / "c"),
            "--emit", "all"]
    code, out, err = _run(argv + ["--data", "zoo:digits-calib"], capsys)
    assert code == 0, err
    for name in ("schedule.json", "schedule.txt", "weights.bin", "weights.json", "report.json", "model.quant.onnx"):
        assert (out_dir / name).is_file(), name
    before = (out_dir / "schedule.json").read_bytes()
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert len([x for x in err.strip().splitlines() if not is_progress_line(x)]) == 1 and str(out_dir) in err
    assert (out_dir / "schedule.json").read_bytes() == before


def _write_model(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _tiny_model(op_type: str = "Relu", symbolic: bool = False) -> onnx.ModelProto:
    dims = ["batch", 4] if symbolic else [1, 4]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    node = helper.make_node(op_type, ["x"], ["y"], name=f"my_{op_type.lower()}")
    graph = helper.make_graph([node], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = _write_model(tmp_path / "good.onnx", _tiny_model())
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a model\n" * 10)
    broken = _tiny_model()
    broken.graph.node[0].input[0] = "missing_tensor"
    checker = _write_model(tmp_path / "checker.onnx", broken)
    unsupported = _write_model(tmp_path / "unsupported.onnx", _tiny_model("Hardmax"))
    symbolic = _write_model(tmp_path / "symbolic.onnx", _tiny_model(symbolic=True))
    return {
        "missing file": (["compile", str(tmp_path / "nope.onnx")], "nope.onnx"),
        "not onnx": (["compile", str(not_onnx)], "notes.onnx"),
        "truncated": (["compile", str(truncated)], "truncated.onnx"),
        "checker": (["compile", str(checker)], "checker.onnx"),
        "unsupported op": (["compile", str(unsupported)], "Hardmax ×1 (first 'my_hardmax')"),
        "symbolic dim": (["compile", str(symbolic)], "--input-shape"),
        "unknown zoo name": (["compile", "zoo:alexnet"], "alexnet"),
        "unknown target": (["compile", str(good), "--target", "tpu9000"], "tpu9000"),
        "bad bits": (["compile", str(good), "--bits", "w9a8"], "w9a8"),
        "unknown pass": (["opt", str(tmp_path / "x.mlir"), "-p", "no-such-pass"], "no-such-pass"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "not onnx",
        "truncated",
        "checker",
        "unsupported op",
        "symbolic dim",
        "unknown zoo name",
        "unknown target",
        "bad bits",
        "unknown pass",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = _bad_inputs(tmp_path)
    (tmp_path / "x.mlir").write_text('builtin.module {\n}\n')
    argv, expected = cases[case]
    out_dir = tmp_path / "out"
    if argv[0] == "compile":
        argv = argv + ["-o", str(out_dir)] + ([] if "--target" in argv else ["--target", "eyeriss"])
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(argv, capsys)
    assert code == 2, err
    # progress lines of the phases that finished before the error, then the error's one line
    lines = [line for line in err.strip().splitlines() if not is_progress_line(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("quantloop: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unsupported_op_names_the_node_and_the_supported_ops(capsys, tmp_path):
    path = _write_model(tmp_path / "m.onnx", _tiny_model("Hardmax"))
    code, _, err = _run(["compile", str(path)], capsys)
    assert code == 2
    assert "my_hardmax" in err and "Conv" in err and "Gemm" in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, _, err = _run(["compile", str(tmp_path / "nope.onnx"), "--debug"], capsys)
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("quantloop: error: ")


def test_python_api_compiles_and_reports_layers(tmp_path):
    import quantloop

    result = quantloop.compile("zoo:cnn_digits", target="eyeriss", bits="w8a8", cache_dir=str(tmp_path), data="zoo:digits-calib")
    assert result.layers and all(layer.energy_pj > 0 for layer in result.layers)
    assert result.total_energy_pj == pytest.approx(sum(layer.energy_pj for layer in result.layers))
    assert np.isfinite(result.total_energy_pj)


def test_compile_accepts_an_output_width_for_the_network_outputs(capsys, tmp_path):
    """`--bits w4a8o16` as `map`/`cost` take it: the layer that writes the network's output stores its Outputs
    at 16 bits, the layer before it (whose outputs the next layer reads) at the activation width."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 8)), ("w2", (8, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = _write_model(tmp_path / "mlp.onnx", model)
    out_dir = tmp_path / "out"
    code, out, err = _run(["compile", str(src), "--target", "eyeriss?pe_type=int16", "--bits", "w4a8o16", "-o", str(out_dir),
                           "--cache-dir", str(tmp_path / "c"), "--emit", "report"], capsys)
    assert code == 0, err
    import json

    layers = {layer["name"]: layer for layer in json.loads((out_dir / "report.json").read_text())["layers"]}
    assert layers["fc1"]["bits"]["outputs"] == 8
    assert (layers["fc2"]["bits"]["weights"], layers["fc2"]["bits"]["inputs"], layers["fc2"]["bits"]["outputs"]) == (4, 8, 16)


def test_a_warm_compile_skips_the_calibration_export_and_writes_identical_artefacts(capsys, tmp_path, monkeypatch):
    """The second compile with the same settings takes ranges and weight scales from the calibration cache
    (no float export for calibration) and writes byte-identical artefacts."""
    from quantloop.runtime.fakequant_export import FakeQuantExporter

    exports: list[str] = []
    original = FakeQuantExporter.export

    def counting(self, graph_name, *args, **kwargs):
        exports.append(graph_name)
        return original(self, graph_name, *args, **kwargs)

    monkeypatch.setattr(FakeQuantExporter, "export", counting)
    builds = []
    for run in ("cold", "warm"):
        out_dir = tmp_path / run
        argv = ["compile", "zoo:cnn_digits", "--target", "eyeriss", "--data", "zoo:digits-calib", "-o", str(out_dir),
                "--cache-dir", str(tmp_path / "c"), "--emit", "schedule,weights,onnx"]
        code, out, err = _run(argv, capsys)
        assert code == 0, err
        builds.append({p.name: p.read_bytes() for p in sorted(out_dir.iterdir()) if p.is_file()})
        if run == "cold":
            assert "calibration" in exports
            exports.clear()
    assert "calibration" not in exports
    assert "model.quant.onnx" in builds[0] and "weights.bin" in builds[0]
    assert builds[0] == builds[1]
