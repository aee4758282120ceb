"""All-or-nothing output folders.

Artefacts are written into a temporary folder beside the destination (same parent, so the final step is a
rename on one file system) called ``.<name>.tmp-XXXX``. Only when every writer succeeded does the folder
take the destination's place; an existing destination is renamed away first (``.<name>.old-XXXX``),
the new one renamed in, and the old one deleted. A failure or an interrupt (KeyboardInterrupt from SIGINT)
deletes the temporary folder and leaves the destination as it was. SIGINT/SIGTERM are blocked during the
two renames so an interrupt cannot fall between them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from quantloop.errors import QuantloopError


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def check_output_dir(out_dir: Path, force: bool = False) -> None:
    """Raise QuantloopError when ``out_dir`` cannot receive a compile's artefacts.

    Missing parents are fine (they are created); a file in the way, a parent that is not a writable
    folder, an existing non-empty folder without ``force``, or the current folder (or one containing it,
    which replacing would delete) are errors. An existing empty folder is
    replaced without ``force`` since nothing in it can be lost.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or out_dir.exists():
        cwd = Path.cwd().resolve()
        if out_dir.is_dir() and (out_dir.resolve() == cwd or out_dir.resolve() in cwd.parents):
            raise QuantloopError(f"{out_dir}: is the current folder or contains it; choose a new output folder")
        if not out_dir.is_dir():
            raise QuantloopError(f"{out_dir}: exists and is not a folder; choose another output path")
        if not force and any(out_dir.iterdir()):
            raise QuantloopError(f"{out_dir}: output folder exists and is not empty; pass --force to replace it")
    parent = out_dir.absolute().parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise QuantloopError(f"{out_dir}: cannot create the output folder because {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise QuantloopError(f"{out_dir}: cannot write to {existing} (permission denied)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise QuantloopError(f"{out_dir}: cannot write to {existing} ({err.strerror or err})") from None


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``out_dir``, on any exception it is deleted."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    except OSError as err:
        raise QuantloopError(f"{out_dir}: cannot create a folder in {parent} ({err.strerror})") from None
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        _swap_in(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, out_dir: Path, force: bool) -> None:
    with _signals_blocked():
        old: Path | None = None
        if out_dir.exists() or out_dir.is_symlink():
            check_output_dir(out_dir, force)
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=new.parent))
            os.rename(out_dir, old / "previous")
        try:
            os.rename(new, out_dir)
        except OSError as err:
            if old is not None:
                os.rename(old / "previous", out_dir)
                shutil.rmtree(old, ignore_errors=True)
            raise QuantloopError(f"{out_dir}: cannot move the finished output into place ({err.strerror})") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
