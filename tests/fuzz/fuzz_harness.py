"""The contract every fuzzed input must meet, checked in-process (a subprocess per input is too slow).

`run` calls the CLI's `main` with stdout/stderr captured and a wall-clock alarm; `check` asserts: exit 0 with
a valid result, or exit 2 with 1–3 lines on stderr that name the file and hold no traceback; within the time
limit; and, unless it succeeded, no output folder (nor a temporary one) left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantloop.cli import main

TIME_LIMIT = 30.0  # seconds per input (a loaded 2-core CI machine); a hang is far beyond it
MAX_ERROR_LINES = 3
TOTALS: Counter[str] = Counter()  # "<kind>: <outcome>" → inputs; printed by conftest at the end


class Hang(BaseException):
    """Raised by the alarm when an input runs past TIME_LIMIT (BaseException: no `except Exception` eats it)."""


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float


def _alarm(signum, frame):
    raise Hang


def run(argv: list[str], limit: float = TIME_LIMIT) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    except Hang:
        code = -1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - started)


def finite_json(text: str) -> object:
    """Parse JSON output, refusing NaN/Infinity (which `json.loads` would accept)."""
    def refuse(name: str):
        raise AssertionError(f"output JSON holds {name}")

    data = json.loads(text, parse_constant=refuse)
    return data


def check(kind: str, argv: list[str], named: Path, out_dir: Path | None = None,
          valid: Callable[[Outcome], None] | None = None) -> Outcome:
    """Run `argv` and assert the contract; `named` is the fuzzed file the error must name."""
    result = run(argv)
    where = f"{kind} {named.name}: quantloop {' '.join(argv)}"
    assert result.code != -1, f"{where}: still running after {TIME_LIMIT:.0f} s"
    assert result.code in (0, 2), f"{where}: exit {result.code}\n{result.err[-3000:]}"
    assert "Traceback" not in result.err, f"{where}: traceback\n{result.err[-3000:]}"
    if result.code == 0:
        TOTALS[f"{kind}: exit 0"] += 1
        if valid is not None:
            valid(result)
        return result
    TOTALS[f"{kind}: exit 2"] += 1
    lines = [line for line in result.err.splitlines() if line.strip() and "warning" not in line.lower()]
    assert 1 <= len(lines) <= MAX_ERROR_LINES, f"{where}: {len(lines)} lines on stderr\n{result.err[-3000:]}"
    assert named.name in result.err, f"{where}: the error does not name the file: {result.err.strip()}"
    if out_dir is not None:
        assert not out_dir.exists(), f"{where}: failed but wrote {out_dir}"
        left = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]
        assert not left, f"{where}: left {left}"
    return result


def finite_numbers(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return True
