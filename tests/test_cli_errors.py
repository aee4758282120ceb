"""Errors outside any one command: usage errors, OS errors, truncated IR, --debug, bad bit-widths."""

from __future__ import annotations

import pytest

from quantloop.cli import main
from quantloop.progress import is_progress_line
from quantloop.ir.qnn import parse_module, print_module
from quantloop.errors import QuantloopError


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # phases that finished before the error may have printed their progress line (stderr is not a terminal)
    lines = [line for line in err.strip().splitlines() if not is_progress_line(line)]
    assert len(lines) == 1 and lines[0].startswith("quantloop: error: "), err
    return lines[0]


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "zoo:cnn_digits", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus" in err[0]


def test_an_unwritable_dump_folder_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(capsys, ["compile", "zoo:cnn_digits", "--dump-ir", str(blocker / "ir")])
    assert str(blocker) in line


def test_output_under_an_unwritable_place_fails_before_any_work(capsys):
    line = _one_line_error(capsys, ["compile", "zoo:cnn_digits", "--target", "eyeriss", "-o", "/proc/quantloop/out"])
    assert "/proc" in line


def test_top_level_debug_shows_the_traceback(capsys, tmp_path):
    code = main(["--debug", "compile", str(tmp_path / "missing.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err


def test_truncated_ir_is_a_located_error_not_a_hang(capsys, tmp_path):
    from quantloop.frontend import import_onnx

    text = print_module(import_onnx("zoo:cnn_digits"), elide_weights_over=None)
    cut = text[: text.index('#qnn.dense<"0x') + 200]
    path = tmp_path / "cut.mlir"
    path.write_text(cut)
    line = _one_line_error(capsys, ["opt", str(path)])
    assert "cut.mlir:" in line and "not closed" in line
    with pytest.raises(QuantloopError, match="not closed"):
        parse_module('builtin.module {\n  %0 = "qnn.constant"() <{name = "a\\"b}>\n}\n')


@pytest.mark.parametrize("flags", [["--bits", "w1a8"], ["--bits-weights", "1"], ["--bits-outputs", "32"]])
def test_cost_rejects_unsupported_bit_widths(capsys, flags):
    import os

    ref = os.path.join(os.environ["QUANTLOOP_REFERENCE_DIR"], "eyeriss_like", "pw1x1_C32_M64_P56")
    argv = ["cost", "--target", "eyeriss", "--problem", f"{ref}/problem.yaml", "--mapping", f"{ref}/map.yaml", *flags]
    assert "not a supported bit-width" in _one_line_error(capsys, argv)


def test_negative_elision_is_refused(capsys):
    assert "--elide-weights" in _one_line_error(capsys, ["compile", "zoo:cnn_digits", "--elide-weights", "-5"])
