"""All-or-nothing output folders.

Artefacts are written into a temporary folder beside the destination (same parent, so the final step is a
rename on one file system) called ``.<name>.tmp-<pid>-XXXX``. Only when every writer succeeded does the
folder take the destination's place. On Linux an existing destination is swapped with the new folder in one
``renameat2(RENAME_EXCHANGE)`` call, so the name is never empty, whatever signal (even SIGKILL) lands when;
the old content, now in the temporary folder, is then deleted. Elsewhere the destination is renamed away
first (``.<name>.old-<pid>-XXXX/previous``) and the new folder renamed in, with SIGINT/SIGTERM deferred
between the two renames. A failure or an interrupt (KeyboardInterrupt; the CLI turns SIGTERM into one)
deletes the temporary folder and leaves the destination as it was.

A run killed outright (SIGKILL) can leave its temporary folder, or in the fallback its ``.old-`` folder,
behind: the next run to the same destination removes leftovers whose process is gone and, if the
destination is missing, puts ``previous`` back first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
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


PAUSE_ENV = "QUANTLOOP_TEST_SWAP_PAUSE"  # test hook: "STEP" or "STEP:SECONDS", pause at that step of the swap


def _test_pause(step: str) -> None:
    """Let the fault test land a signal exactly at ``step`` of the swap (a no-op unless PAUSE_ENV names it)."""
    wanted, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if wanted == step:
        print(f"quantloop-swap: {step}", file=sys.stderr, flush=True)
        time.sleep(float(seconds or 30))


def _leftover_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-(\d+)-[^/]*$")


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def clean_leftovers(out_dir: Path) -> None:
    """Remove the ``.tmp-``/``.old-`` folders of ``out_dir`` left by killed runs (their process is gone);
    restore ``previous`` from an ``.old-`` folder when the destination itself is missing."""
    out_dir = Path(out_dir)
    parent = out_dir.absolute().parent
    pattern = _leftover_pattern(out_dir.name)
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not _process_gone(int(match.group(2))) or entry.is_symlink() or not entry.is_dir():
            continue
        previous = entry / "previous"
        if match.group(1) == "old" and previous.is_dir() and not (out_dir.exists() or out_dir.is_symlink()):
            with contextlib.suppress(OSError):
                os.rename(previous, out_dir)
        shutil.rmtree(entry, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False when the platform or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside the block take effect after it (their handlers run at its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``out_dir``, on any exception it is deleted."""
    out_dir = Path(out_dir)
    clean_leftovers(out_dir)
    check_output_dir(out_dir, force)
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as err:
        raise QuantloopError(f"{out_dir}: cannot create a folder in {parent} ({err.strerror})") from None
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        _swap_in(tmp, out_dir, force)
    except OSError as err:  # e.g. a full disk: name the output folder, which the OS error may not
        shutil.rmtree(tmp, ignore_errors=True)
        raise QuantloopError(f"{out_dir}: cannot write the output ({err.strerror or err})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, out_dir: Path, force: bool) -> None:
    _test_pause("before-swap")
    if out_dir.exists() or out_dir.is_symlink():
        check_output_dir(out_dir, force)
        if not out_dir.is_symlink() and _exchange(new, out_dir):
            _test_pause("after-swap")
            shutil.rmtree(new, ignore_errors=True)  # now holds the previous output
            return
    else:
        try:
            os.rename(new, out_dir)
        except OSError as err:
            raise QuantloopError(f"{out_dir}: cannot move the finished output into place ({err.strerror})") from None
        return
    with _signals_deferred():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=new.parent))
        os.rename(out_dir, old / "previous")
        _test_pause("between-renames")
        try:
            os.rename(new, out_dir)
        except OSError as err:
            os.rename(old / "previous", out_dir)
            shutil.rmtree(old, ignore_errors=True)
            raise QuantloopError(f"{out_dir}: cannot move the finished output into place ({err.strerror})") from None
    shutil.rmtree(old, ignore_errors=True)
