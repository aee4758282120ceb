"""Progress of long work: phase timings for every compile, and what the user sees while it runs.

The driver opens a :class:`Progress` for a compile and makes it current (:func:`reporting`); the
pipeline runner, the accel-map pass and the artefact writers open phases on :func:`current`
without knowing how (or whether) they are shown. Every phase's wall time is recorded
(`Progress.phases`, what `CompileResult.phases` and `bench/compile_speed.py` report).

How it is shown depends on the stream: a live rich display on a terminal (the running phase, and
for per-item work such as mapping a bar with done / total, cache hits and the current item), one
plain line per finished phase otherwise (a log file or a pipe), nothing with `quiet`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

__all__ = ["Progress", "Phase", "current", "reporting", "make_progress"]


class Phase:
    """One running phase. `start(item)` / `advance(item, cache_hit)` report per-item work."""

    def __init__(self, owner: Progress, name: str, total: int | None) -> None:
        self.owner, self.name, self.total = owner, name, total
        self.done = 0
        self.cache_hits = 0
        self.item = ""

    def start(self, item: str) -> None:
        self.item = item
        self.owner._update(self)

    def advance(self, item: str = "", cache_hit: bool = False) -> None:
        self.done += 1
        self.cache_hits += bool(cache_hit)
        self.item = item or self.item
        self.owner._update(self)

    def summary(self) -> str:
        if self.total is None:
            return ""
        hits = f", {self.cache_hits} cache hits" if self.cache_hits else ""
        return f" ({self.done}/{self.total}{hits})"


class Progress:
    """Records phase times; shows nothing (quiet). Subclasses show them."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        """CPU seconds of this process per phase (on a loaded machine closer to the work than wall time)."""

    @contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Phase]:
        """Time `name` (repeated names add up); `total` announces per-item work."""
        handle = Phase(self, name, total)
        started, cpu = time.perf_counter(), time.process_time()
        self._begin(handle)
        failed = True
        try:
            yield handle
            failed = False
        finally:
            seconds = time.perf_counter() - started
            self.phases[name] = self.phases.get(name, 0.0) + seconds
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
            self._end(handle, seconds, failed)

    def close(self) -> None:
        """Stop any live display."""

    def _begin(self, phase: Phase) -> None:
        pass

    def _update(self, phase: Phase) -> None:
        pass

    def _end(self, phase: Phase, seconds: float, failed: bool) -> None:
        """`failed`: the phase raised (its error is reported by whoever catches it, not here)."""


def plain_line(name: str, seconds: float, summary: str = "") -> str:
    """`quantloop: mapping 1.23 s (31/31, 31 cache hits)`: a finished phase on a log or a pipe."""
    return f"quantloop: {name} {seconds:.2f} s{summary}"


_PLAIN_LINE = re.compile(r"^quantloop: (?!error: )[\w .-]+ \d+\.\d\d s( \(.*\))?$")


def is_progress_line(line: str) -> bool:
    """Whether `line` (of stderr) is a plain progress line rather than a message or an error."""
    return bool(_PLAIN_LINE.match(line))


class PlainProgress(Progress):
    """One line per finished phase (:func:`plain_line`), for logs and pipes. A phase that fails prints
    nothing: the error's one line says what went wrong."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def _end(self, phase: Phase, seconds: float, failed: bool) -> None:
        if not failed:
            print(plain_line(phase.name, seconds, phase.summary()), file=self.stream, flush=True)


class RichProgress(Progress):
    """A live rich display on a terminal; finished phases stay as one line each."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bars, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        self.bars = Bars(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), TextColumn("{task.fields[item]}"), console=self.console, transient=True,
        )
        self.tasks: dict[int, int] = {}
        self.bars.start()

    def _begin(self, phase: Phase) -> None:
        self.tasks[id(phase)] = self.bars.add_task(phase.name, total=phase.total, counts="", item="")

    def _update(self, phase: Phase) -> None:
        hits = f", {phase.cache_hits} cached" if phase.cache_hits else ""
        counts = f"{phase.done}/{phase.total}{hits}" if phase.total is not None else ""
        self.bars.update(self.tasks[id(phase)], completed=phase.done, counts=counts, item=phase.item)

    def _end(self, phase: Phase, seconds: float, failed: bool) -> None:
        self.bars.remove_task(self.tasks.pop(id(phase)))
        if not failed:
            self.console.print(f"[green]✓[/] {phase.name} [dim]{seconds:.2f} s{phase.summary()}[/]", highlight=False)

    def close(self) -> None:
        self.bars.stop()


def make_progress(stream: TextIO | None = None, *, quiet: bool = False) -> Progress:
    """What suits `stream` (default stderr): live on a terminal, plain lines otherwise, nothing if `quiet`."""
    if quiet:
        return Progress()
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", lambda: False)
    return RichProgress(stream) if isatty() else PlainProgress(stream)


_CURRENT: ContextVar[Progress | None] = ContextVar("quantloop_progress", default=None)


def current() -> Progress:
    """The progress of the running compile, or a silent one that only records."""
    progress = _CURRENT.get()
    return progress if progress is not None else Progress()


@contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make `progress` current for the block (and close its display at the end)."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
        progress.close()
