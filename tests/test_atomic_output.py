"""Atomic output: a failed or interrupted compile leaves the output folder as it was, with no temp folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from xdsl.dialects.builtin import ModuleOp

from quantloop.backend import artifacts
from quantloop.backend.atomic import atomic_output_dir, check_output_dir
from quantloop.cli import main
from quantloop.errors import QuantloopError


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture
def existing(tmp_path) -> Path:
    out = tmp_path / "build"
    (out / "timeloop").mkdir(parents=True)
    (out / "schedule.json").write_text("old")
    (out / "timeloop" / "x.yaml").write_text("old yaml")
    return out


def _fake_writers(monkeypatch, fail_in: str | None = None):
    """Replace the module-derived parts of write_artifacts with writers of small files."""
    monkeypatch.setattr(artifacts, "collect_layers", lambda module, target: [])
    monkeypatch.setattr(artifacts, "host_op_list", lambda module: [])

    def writer(step):
        def write(tmp: Path, ctx) -> dict[str, Path]:
            if step == fail_in:
                raise RuntimeError(f"injected failure in {step}")
            path = tmp / f"{step}.txt"
            path.write_text(step)
            return {step: path}

        return write

    for step in artifacts.STEPS:
        monkeypatch.setattr(artifacts, f"write_{step}", writer(step))


def _write(out: Path, force: bool = False) -> dict[str, Path]:
    return artifacts.write_artifacts(out, qnn_module=None, accel_module=ModuleOp([]), target="eyeriss",
                                     command_line="test", force=force, emit="all")


@pytest.mark.parametrize("step", ["schedule", "weights", "report"])
def test_an_injected_failure_leaves_the_existing_folder_untouched(existing, monkeypatch, step):
    before = _snapshot(existing)
    _fake_writers(monkeypatch, fail_in=step)
    with pytest.raises(RuntimeError, match="injected"):
        _write(existing, force=True)
    assert _snapshot(existing) == before
    assert _leftovers(existing.parent) == []


def test_an_injected_failure_creates_no_folder(tmp_path, monkeypatch):
    _fake_writers(monkeypatch, fail_in="onnx")
    with pytest.raises(RuntimeError):
        _write(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_an_existing_folder_only_with_force(existing, monkeypatch):
    _fake_writers(monkeypatch)
    with pytest.raises(QuantloopError, match="pass --force"):
        _write(existing)
    written = _write(existing, force=True)
    assert sorted(_snapshot(existing)) == sorted(f"{s}.txt" for s in artifacts.STEPS)
    assert written["dir"] == existing and written["report"] == existing / "report.txt"
    assert _leftovers(existing.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert existing.stat().st_mode & 0o777 == 0o777 & ~umask


def test_extra_writers_join_the_atomic_output(existing, monkeypatch):
    _fake_writers(monkeypatch)
    before = _snapshot(existing)

    def pareto(tmp: Path) -> dict[str, Path]:
        (tmp / "pareto.json").write_text("[]")
        return {"pareto_json": tmp / "pareto.json"}

    def broken(tmp: Path) -> dict[str, Path]:
        raise RuntimeError("extra writer failed")

    with pytest.raises(RuntimeError, match="extra writer failed"):
        artifacts.write_artifacts(existing, qnn_module=None, accel_module=ModuleOp([]), target="eyeriss",
                                  command_line="x", force=True, extra_writers=[pareto, broken])
    assert _snapshot(existing) == before and _leftovers(existing.parent) == []
    written = artifacts.write_artifacts(existing, qnn_module=None, accel_module=ModuleOp([]), target="eyeriss",
                                        command_line="x", force=True, extra_writers=[pareto])
    assert written["pareto_json"] == existing / "pareto.json" and (existing / "pareto.json").read_text() == "[]"


def test_a_new_folder_and_missing_parents_are_created(tmp_path, monkeypatch):
    _fake_writers(monkeypatch)
    out = tmp_path / "a" / "b" / "build"
    _write(out)
    assert (out / "schedule.txt").read_text() == "schedule"


def test_check_output_dir_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(QuantloopError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(QuantloopError, match="is a file"):
        check_output_dir(tmp_path / "file" / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(QuantloopError, match="--force"):
        check_output_dir(tmp_path / "full")
    check_output_dir(tmp_path / "full", force=True)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")


def test_the_current_folder_is_never_replaced(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    (work / "model.onnx").write_text("precious")
    monkeypatch.chdir(work)
    for path in (Path("."), work, tmp_path):
        with pytest.raises(QuantloopError, match="current folder"):
            check_output_dir(path, force=True)
    assert (work / "model.onnx").read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_parent_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(QuantloopError, match="permission denied"):
            check_output_dir(parent / "out")
    finally:
        parent.chmod(0o755)


def test_a_read_only_parent_is_refused_by_its_access_check(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(QuantloopError, match=f"cannot write to {tmp_path}"):
        check_output_dir(tmp_path / "out")


def test_keyboard_interrupt_inside_the_block_cleans_up(existing):
    before = _snapshot(existing)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(existing, force=True) as tmp:
            (tmp / "half.json").write_text("{")
            raise KeyboardInterrupt
    assert _snapshot(existing) == before
    assert _leftovers(existing.parent) == []


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from xdsl.dialects.builtin import ModuleOp
    from quantloop.backend import artifacts

    artifacts.collect_layers = lambda module, target: []
    artifacts.host_op_list = lambda module: []

    def slow_schedule(tmp, ctx):
        (tmp / "schedule.json").write_text("half")
        print("writing", flush=True)
        time.sleep(60)
        return {}

    artifacts.write_schedule = slow_schedule
    artifacts.write_artifacts(Path(sys.argv[1]), qnn_module=None, accel_module=ModuleOp([]), target="eyeriss",
                              command_line="sigint test", force=True)
    """
)


def test_sigint_mid_write_leaves_the_folder_untouched_and_no_temp_folder(existing, tmp_path):
    before = _snapshot(existing)
    script = tmp_path / "slow_writer.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(existing)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(".tmp-" in p.name for p in existing.parent.iterdir())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert _snapshot(existing) == before
    assert _leftovers(existing.parent) == []


def test_compile_style_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["report", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
