"""The `quantloop` command line.

Each sub-command lives in its own module under `quantloop.commands` and exposes
`HELP: str`, `add_arguments(parser)` and `run(args) -> int`. Command modules import heavy
libraries inside `run`, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import threading
import traceback
import warnings

from quantloop.version import __version__
from quantloop.errors import QuantloopError

_ORDER = ["compile", "opt", "map", "cost", "targets", "zoo", "eval", "report"]


def _command_names() -> list[str]:
    import quantloop.commands as package

    found = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def _command_module(name: str):
    return importlib.import_module(f"quantloop.commands.{name}")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2, like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"quantloop: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quantloop",
        description="Compile quantized CNNs onto spatial DNN accelerators.",
    )
    parser.add_argument("--version", action="version", version=f"quantloop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _command_names():
        module = _command_module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
        module.add_arguments(p)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like SIGINT so a compile cleans up its temporary output folder."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line, like errors: `quantloop: warning: <message>` on stderr, without Python's source
    path and line (`--debug` keeps Python's format); other libraries' warnings also name their category."""
    text = str(message).replace("\n", " ")
    if not category.__module__.startswith("quantloop"):
        text = f"{category.__name__}: {text}"
    print(f"quantloop: warning: {text}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        return int(_command_module(args.command).run(args) or 0)
    except QuantloopError as err:
        if debug:
            traceback.print_exc()
        print(f"quantloop: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 0
    except OSError as err:
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        print(f"quantloop: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"quantloop: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


if __name__ == "__main__":
    raise SystemExit(main())
