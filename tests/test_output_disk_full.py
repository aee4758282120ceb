"""A full disk while the output folder is written: one line naming the output path, exit 2, nothing
written, and a previous output folder left exactly as it was."""

from __future__ import annotations

import errno
from pathlib import Path

from quantloop.backend import artifacts
from quantloop.cli import main
from quantloop.progress import is_progress_line

ARGV = ["compile", "zoo:cnn_digits", "--target", "eyeriss", "--emit", "schedule,weights,report"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _disk_full_in_weights(monkeypatch) -> None:
    """weights.bin gets a few bytes, then the disk is full (as a real ENOSPC from write(2) would be)."""

    def write_weights(tmp: Path, ctx) -> dict[str, Path]:
        path = tmp / "weights.bin"
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(artifacts, "write_weights", write_weights)


def _error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines()
             if not is_progress_line(line) and not line.startswith("quantloop: warning:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_keeps_the_previous_output(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main([*ARGV, "-o", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert "weights.bin" in before
    _disk_full_in_weights(monkeypatch)
    line = _error_line(capsys, [*ARGV, "-o", str(out), "--force"])
    assert str(out) in line and "No space left on device" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_full_disk_writes_no_new_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "new" / "out"
    _disk_full_in_weights(monkeypatch)
    line = _error_line(capsys, [*ARGV, "-o", str(out)])
    assert str(out) in line and "No space left on device" in line
    assert not out.exists() and list((tmp_path / "new").iterdir()) == []
