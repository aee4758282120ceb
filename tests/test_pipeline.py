"""Pass registry, pipeline parsing, and IR dumps."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.passes import ModulePass

from quantloop.errors import QuantloopError
from quantloop.ir.qnn import (
    ConstantOp,
    Conv2dOp,
    MainBuilder,
    ReluOp,
    make_context,
    parse_module,
    print_module,
)
from quantloop.passes.assign_bits import AssignBitsPass
from quantloop.passes.pipeline import dump_header, parse_pipeline, run_pipeline
from quantloop.passes.registry import PASS_MODULES, available_passes, load_pass


def small_model() -> ModuleOp:
    b = MainBuilder([TensorType(f32, [1, 3, 6, 6])])
    w = b.add(ConstantOp(np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3), name="conv1.weight"))
    conv = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1), name="conv1"))
    relu = b.add(ReluOp(conv, name="relu1"))
    return b.finish([relu])


@dataclass(frozen=True)
class RenamePass(ModulePass):
    """Test pass: renames every relu so the dumps differ between passes."""

    name = "test-rename"
    suffix: str = "x"

    def apply(self, ctx, op) -> None:
        from xdsl.dialects.builtin import StringAttr

        for o in op.walk():
            if isinstance(o, ReluOp):
                o.properties["name"] = StringAttr((o.node_name or "") + self.suffix)


@dataclass(frozen=True)
class BreakingPass(ModulePass):
    name = "test-break"

    def apply(self, ctx, op) -> None:
        for o in op.walk():
            if isinstance(o, Conv2dOp):
                from xdsl.dialects.builtin import DenseArrayBase, i64

                o.properties["strides"] = DenseArrayBase.from_list(i64, [1])


def test_registry_lists_installed_passes_lazily():
    passes = available_passes()
    assert "qnn-assign-bits" in passes
    assert passes["qnn-assign-bits"]() is AssignBitsPass
    assert set(passes) <= set(PASS_MODULES)
    assert load_pass("qnn-assign-bits").name == "qnn-assign-bits"


def test_parse_pipeline_with_options():
    (p,) = parse_pipeline("qnn-assign-bits{bits=w4a8 input-bits=6}")
    assert isinstance(p, AssignBitsPass)
    assert (p.bits, p.input_bits, p.file) == ("w4a8", 6, "")
    two = parse_pipeline("qnn-assign-bits,qnn-assign-bits{bits=w2a2}")
    assert [q.bits for q in two] == ["w8a8", "w2a2"]


def test_unknown_pass_lists_known_ones():
    with pytest.raises(QuantloopError, match=r"unknown pass 'qnn-nope' \(known passes: .*qnn-assign-bits"):
        parse_pipeline("qnn-assign-bits,qnn-nope")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("qnn-assign-bits{bogus=1}", "bogus"),
        ("qnn-assign-bits{bits=w4a8", "Malformed pass arguments"),
        ("qnn-assign-bits{input-bits=many}", "pass qnn-assign-bits"),
    ],
)
def test_bad_pass_options_are_user_errors(spec, needle):
    with pytest.raises(QuantloopError) as err:
        parse_pipeline(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_print_ir_after_all_prints_mlir_headers():
    out = io.StringIO()
    module = small_model()
    run_pipeline(module, [RenamePass("a"), RenamePass("b")], make_context(), print_ir_after_all=True, out=out)
    text = out.getvalue()
    assert text.count(dump_header("test-rename")) == 2
    assert text.startswith("// -----// IR Dump After test-rename //----- //\n")
    first, second = text.split(dump_header("test-rename"))[1:]
    assert 'name = "relu1a"' in first and 'name = "relu1ab"' in second
    assert "#qnn.dense<elided>" in first
    parse_module(first)  # dumps are valid IR


def test_print_ir_after_selected_passes_only():
    out = io.StringIO()
    passes = [RenamePass("a"), *parse_pipeline("qnn-assign-bits{bits=w4a8}")]
    run_pipeline(small_model(), passes, make_context(), print_ir_after={"qnn-assign-bits"}, out=out,
                 elide_weights_over=None)
    text = out.getvalue()
    assert dump_header("test-rename") not in text
    assert text.count(dump_header("qnn-assign-bits")) == 1
    assert "!qnn.int<bits = 4, signed = true>" in text and "#qnn.dense<elided>" not in text


def test_no_dump_without_flags():
    out = io.StringIO()
    run_pipeline(small_model(), "qnn-assign-bits", make_context(), out=out)
    assert out.getvalue() == ""


def test_dump_dir_gets_one_runnable_file_per_pass(tmp_path):
    module = small_model()
    run_pipeline(module, [RenamePass("a"), *parse_pipeline("qnn-assign-bits")], make_context(), dump_dir=tmp_path / "ir")
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["00_input.mlir", "01_test-rename.mlir", "02_qnn-assign-bits.mlir"]
    last = parse_module((tmp_path / "ir" / "02_qnn-assign-bits.mlir").read_text())
    assert print_module(last, None) == print_module(module, None)
    weight = next(o for o in last.walk() if isinstance(o, ConstantOp))
    np.testing.assert_array_equal(weight.array, np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3))
    first = parse_module((tmp_path / "ir" / "00_input.mlir").read_text())
    assert print_module(first, None) == print_module(small_model(), None)


def test_empty_pipeline_still_dumps_the_input(tmp_path):
    run_pipeline(small_model(), [], make_context(), dump_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["00_input.mlir"]


def test_a_pass_that_breaks_the_ir_is_named():
    with pytest.raises(QuantloopError, match=r"after pass test-break: qnn.conv2d 'conv1': strides must have 2 values") as err:
        run_pipeline(small_model(), [BreakingPass()], make_context())
    assert err.value.exit_code == 1


def test_a_second_run_continues_the_dump_numbering(tmp_path):
    module = small_model()
    run_pipeline(module, [RenamePass("a")], make_context(), dump_dir=tmp_path)
    run_pipeline(module, [RenamePass("b"), RenamePass("c")], make_context(), dump_dir=tmp_path, first_step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00_input.mlir",
        "01_test-rename.mlir",
        "02_test-rename.mlir",
        "03_test-rename.mlir",
    ]
    assert 'name = "relu1abc"' in (tmp_path / "03_test-rename.mlir").read_text()


def test_print_ir_after_an_unknown_pass_is_an_error(monkeypatch):
    monkeypatch.setitem(PASS_MODULES, "later-pass", "quantloop.passes.assign_bits")
    with pytest.raises(QuantloopError, match=r"print-ir-after: unknown pass qnn-asign-bits \(known passes: .*qnn-assign-bits"):
        run_pipeline(small_model(), "qnn-assign-bits", make_context(), print_ir_after={"qnn-asign-bits"})
    out = io.StringIO()  # a registered pass that a later pipeline runs is fine
    run_pipeline(small_model(), "qnn-assign-bits", make_context(), print_ir_after={"qnn-assign-bits", "later-pass"}, out=out)
    assert out.getvalue().count("IR Dump After") == 1
