"""Fault test: a compile killed by SIGKILL, SIGTERM or SIGINT at any point leaves the output folder either the
previous complete one or the new complete one, and the next run removes whatever the killed run left."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantloop.backend.atomic import PAUSE_ENV, clean_leftovers

ROOT = Path(__file__).resolve().parents[1]
MARKER = "previous.marker"
# Runs the CLI; with "rename" the platform's atomic exchange is disabled, so the two-rename fallback is used.
RUNNER = (
    "import sys\n"
    "import quantloop.backend.atomic as atomic\n"
    "if sys.argv[1] == 'rename':\n"
    "    atomic._exchange = lambda a, b: False\n"
    "from quantloop.cli import main\n"
    "raise SystemExit(main(sys.argv[2:]))\n"
)
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
STAGES = [("exchange", "before-swap"), ("exchange", "after-swap"), ("rename", "between-renames")]


def _env(cache: Path, pause: str | None) -> dict[str, str]:
    env = dict(os.environ, QUANTLOOP_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT.parent))
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = pause
    return env


def _compile(mode: str, out: Path, cache: Path, pause: str | None = None) -> subprocess.Popen:
    argv = ["compile", "zoo:cnn_digits", "--target", "eyeriss", "-o", str(out), "--force"]
    return subprocess.Popen([sys.executable, "-c", RUNNER, mode, *argv], env=_env(cache, pause), cwd=out.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _assert_complete(out: Path, reference: list[str], previous: dict[str, bytes], case: str) -> str:
    assert out.is_dir(), f"{case}: the output folder vanished"
    if (out / MARKER).exists():
        assert {f: (out / f).read_bytes() for f in _files(out)} == previous, case
        return "previous"
    assert _files(out) == reference, case
    json.loads((out / "report.json").read_text())
    return "new"


def _fresh_previous(out: Path, saved: Path) -> dict[str, bytes]:
    if not (out / MARKER).exists():
        shutil.rmtree(out)
        shutil.copytree(saved, out)
    return {f: (out / f).read_bytes() for f in _files(out)}


@pytest.mark.slow
def test_kills_at_any_point_keep_a_complete_output_folder(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "build"
    first = _compile("exchange", out, cache)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    reference = _files(out)
    saved = tmp_path / "saved"
    shutil.copytree(out, saved)
    (saved / MARKER).write_text("from the previous run")
    rng = random.Random(12)
    cases = [(mode, stage, sig) for mode, stage in STAGES[1:] for sig in SIGNALS]  # between the renames
    cases += [("exchange", "before-swap", signal.SIGKILL), ("exchange", None, rng.choice(SIGNALS))]
    seen = []
    for mode, stage, sig in cases:
        previous = _fresh_previous(out, saved)
        proc = _compile(mode, out, cache, pause=stage and f"{stage}:{30 if mode == 'exchange' else 1}")
        try:
            if stage:
                while (line := proc.stderr.readline()) and line.strip() != f"quantloop-swap: {stage}":
                    pass
                assert line, f"the run ended before reaching {stage}"
            else:
                time.sleep(rng.uniform(0.5, 4.0))
            proc.send_signal(sig)
            proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
        case = f"{signal.Signals(sig).name} at {stage or 'a random time'} ({mode})"
        if mode == "exchange":  # the name is never empty; the rename fallback may need the next run's restore
            seen.append(_assert_complete(out, reference, previous, case))
        clean_leftovers(out)  # what the next run does first
        assert _leftovers(tmp_path) == [], case
        seen.append(_assert_complete(out, reference, previous, case))
    assert "previous" in seen and "new" in seen
    last = _compile("exchange", out, cache)
    assert last.wait(timeout=120) == 0
    assert _leftovers(tmp_path) == [] and not (out / MARKER).exists()
    assert seen.count("previous") + seen.count("new") == len(seen)


def test_the_next_run_restores_a_destination_left_between_the_renames(tmp_path):
    out = tmp_path / "build"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".build.old-{dead.pid}-x1"
    (old / "previous").mkdir(parents=True)
    (old / "previous" / "schedule.json").write_text("kept")
    (tmp_path / f".build.tmp-{dead.pid}-x2").mkdir()
    live = tmp_path / f".build.tmp-{os.getpid()}-x3"  # a running compile's folder stays
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead.pid}-x4"  # another destination's leftovers are not ours
    other.mkdir()
    clean_leftovers(out)
    assert (out / "schedule.json").read_text() == "kept"
    assert _leftovers(tmp_path) == sorted([live.name, other.name])
