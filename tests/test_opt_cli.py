"""`quantloop opt` through the CLI entry point."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import TensorType, f32

from quantloop.cli import main
from quantloop.ir.qnn import ConstantOp, Conv2dOp, MainBuilder, ReluOp, parse_module, print_module
from quantloop.passes.pipeline import dump_header


@pytest.fixture
def model_file(tmp_path):
    b = MainBuilder([TensorType(f32, [1, 3, 6, 6])])
    w = b.add(ConstantOp(np.linspace(-1, 1, 4 * 27, dtype=np.float32).reshape(4, 3, 3, 3), name="conv1.weight"))
    conv = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1), name="conv1"))
    relu = b.add(ReluOp(conv, name="relu1"))
    path = tmp_path / "model.mlir"
    path.write_text(print_module(b.finish([relu]), elide_weights_over=None))
    return path


def test_round_trip_without_passes(model_file, capsys):
    assert main(["opt", str(model_file)]) == 0
    assert capsys.readouterr().out == model_file.read_text()


def test_runs_passes_and_writes_output(model_file, tmp_path, capsys):
    out = tmp_path / "sub" / "out.mlir"
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits{bits=w4a8}", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text()
    assert "tensor<4x3x3x3x!qnn.int<bits = 4, signed = true>>" in text
    assert "#qnn.dense<elided>" not in text
    weight = next(o for o in parse_module(text).walk() if isinstance(o, ConstantOp))
    np.testing.assert_array_equal(weight.array, np.linspace(-1, 1, 108, dtype=np.float32).reshape(4, 3, 3, 3))
    assert not list(out.parent.glob("*.tmp"))


def test_print_ir_after_all_goes_to_stderr(model_file, capsys):
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits", "--print-ir-after-all", "--elide-weights", "10"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(dump_header("qnn-assign-bits") + "\n")
    assert captured.err.count("#qnn.dense<elided>") == 1
    assert "#qnn.dense<elided>" in captured.out


def test_dump_ir_dir(model_file, tmp_path, capsys):
    dump = tmp_path / "ir"
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits", "--dump-ir", str(dump)]) == 0
    assert sorted(p.name for p in dump.iterdir()) == ["00_input.mlir", "01_qnn-assign-bits.mlir"]
    assert (dump / "01_qnn-assign-bits.mlir").read_text() == capsys.readouterr().out


def test_list_passes_shows_descriptions_and_options(capsys):
    assert main(["opt", "--list-passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert {"qnn-canonicalize", "qnn-assign-bits", "accel-map", "canonicalize", "cse", "dce"} <= set(names)
    header = next(i for i, line in enumerate(lines) if line.startswith("qnn-assign-bits "))
    assert "JSON" in lines[header]  # the one-line description
    assert '    bits: str = "w8a8"' in lines[header + 1 : header + 4]
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines if not line.startswith(" ")), "a pass without description"


def test_xdsl_passes_run_beside_quantloop_passes(tmp_path, capsys):
    b = MainBuilder([TensorType(f32, [1, 3, 6, 6])])
    w = b.add(ConstantOp(np.ones((4, 3, 3, 3), np.float32), name="w"))
    b.add(ReluOp(b.args[0], name="unused"))
    first = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1)))
    second = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1)))
    path = tmp_path / "dup.mlir"
    path.write_text(print_module(b.finish([first, second]), elide_weights_over=None))
    assert main(["opt", str(path), "-p", "cse,dce,canonicalize", "--time-passes"]) == 0
    captured = capsys.readouterr()
    module = parse_module(captured.out)
    assert [op.name for op in module.walk() if op.name.startswith("qnn.")] == ["qnn.constant", "qnn.conv2d"]
    assert "Execution time report" in captured.err
    assert [line.split()[-1] for line in captured.err.splitlines()[-4:]] == ["cse", "dce", "canonicalize", "Total"]


def test_print_between_passes_is_print_ir_after_all(model_file, capsys):
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits,cse", "--print-between-passes"]) == 0
    err = capsys.readouterr().err
    assert err.count("// -----// IR Dump After") == 2 and dump_header("cse") in err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("quantloop: error: ")
    return err


def test_missing_file(tmp_path, capsys):
    assert main(["opt", str(tmp_path / "nope.mlir")]) == 2
    assert "nope.mlir: cannot read: MLIR file not found" in one_line_error(capsys)


def test_parse_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.mlir"
    bad.write_text('builtin.module {\n  "qnn.bogus"() : () -> ()\n}\n')
    assert main(["opt", str(bad)]) == 2
    assert f"{bad}:2:" in one_line_error(capsys)


def test_verifier_error(model_file, capsys):
    model_file.write_text(model_file.read_text().replace("pads = [1, 1, 1, 1]", "pads = [1, 1]"))
    assert main(["opt", str(model_file)]) == 2
    assert "qnn.conv2d 'conv1': pads (top, left, bottom, right) must have 4 values" in one_line_error(capsys)


def test_unknown_pass(model_file, capsys):
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits,frob"]) == 2
    err = one_line_error(capsys)
    assert "unknown pass 'frob'" in err and "qnn-assign-bits" in err


def test_pass_error_is_one_line(model_file, capsys):
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits{bits=w4a3x}"]) == 2
    assert "bits 'w4a3x'" in one_line_error(capsys)


def test_no_file(capsys):
    assert main(["opt"]) == 2
    assert "no input file" in one_line_error(capsys)


def test_imported_zoo_model_through_canonicalize_and_assign_bits(tmp_path, capsys):
    from quantloop.frontend import import_onnx
    from quantloop.ir.qnn import IntType, element_type

    path = tmp_path / "digits.mlir"
    path.write_text(print_module(import_onnx("zoo:cnn_digits"), elide_weights_over=None))
    out = tmp_path / "out.mlir"
    assert main(["opt", str(path), "-p", "qnn-canonicalize,qnn-assign-bits{bits=w4a8}", "-o", str(out)]) == 0
    module = parse_module(out.read_text())
    layers = [op for op in module.walk() if isinstance(op, Conv2dOp) or op.name == "qnn.gemm"]
    assert layers
    for layer in layers:
        assert element_type(layer.operands[1]) == IntType(4, True)
        assert element_type(layer.results[0]).bits == 8


def test_warnings_print_as_one_quantloop_line(model_file, capsys):
    """A CalibrationWarning (no calibration data) reads like an error line: no Python source path or line."""
    assert main(["opt", str(model_file), "-p", "qnn-assign-bits,qnn-calibrate{samples=2 no_cache=true}", "-o", str(model_file.with_suffix(".out"))]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("quantloop: warning: qnn-calibrate: no calibration data given; ")
    assert ".py" not in lines[0] and "CalibrationWarning" not in lines[0]
