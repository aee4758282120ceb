"""`quantloop compile MODEL [--target T] [-o DIR] ...`: the main job."""

from __future__ import annotations

import argparse
import shlex
import sys

from quantloop.options import CompileOptions
from quantloop.options import add_arguments as add_option_flags

HELP = "Compile an ONNX model (or zoo:NAME) for a target: bit-widths, mappings, schedules, packed weights."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX file, or zoo:NAME (see `quantloop zoo`)")
    add_option_flags(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the result")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantloop.driver import compile as compile_model
    from quantloop.progress import make_progress

    options = CompileOptions.from_args(args, command_line=shlex.join(["quantloop", *sys.argv[1:]]))
    result = compile_model(args.model, options, progress=make_progress(sys.stderr, quiet=args.quiet))
    # the result (summary table) on stdout; IR dumps went to stderr, as mlir-opt and xdsl-opt do
    console = Console(width=None if sys.stdout.isatty() else 160)
    print_summary(console, result, args)
    if result.search is not None:
        from quantloop.cosearch import print_search_summary

        print_search_summary(console, result.search)
    return 0


def print_summary(console, result, args: argparse.Namespace) -> None:
    from rich.table import Table

    if result.target is None:
        from collections import Counter

        counts = Counter(op.name for op in result.module.walk() if op.name.startswith("qnn."))
        console.print("ops: " + ", ".join(f"{name} ×{n}" for name, n in sorted(counts.items())))
        console.print(f"[bold]done[/] in {result.seconds:.2f} s (add --target eyeriss|simba|FILE.yaml to map every layer)")
        return
    from quantloop.result import summary_table

    table = summary_table(result)
    console.print(table)
    if result.host_ops:
        console.print(f"host ops (not mapped onto the accelerator): {', '.join(result.host_ops)}")
    if result.timeloop_check is not None:
        print_timeloop_check(console, result.timeloop_check)
    if result.synergy is not None and result.search is None:  # under --search, the search summary prints it
        from quantloop.passes.search.synergy import print_decomposition

        print_decomposition(console, result.synergy)
    for kind, path in result.artifacts.items():
        console.print(f"wrote {kind}: {path}")
    console.print(f"[bold]done[/] in {result.seconds:.2f} s")


def print_timeloop_check(console, checks) -> None:
    """Per layer: quantloop's and real Timeloop's energy and cycles, relative differences, flags over 1 %."""
    from rich.table import Table

    from quantloop.backend.timeloop_verify import TOLERANCE

    table = Table(title="re-evaluated in real Timeloop (timeloop-model)")
    for column in ("layer", "energy (µJ)", "Timeloop (µJ)", "Δ energy", "cycles", "Timeloop cycles", "Δ cycles", ""):
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for c in checks:
        note = f"[red]> {TOLERANCE:.0%}[/]" if c.flagged else ""
        if c.mixed_levels:
            note += f" (packing not expressible at {', '.join(c.mixed_levels)})"
        table.add_row(c.name, f"{c.energy_pj / 1e6:,.3f}", f"{c.timeloop_energy_pj / 1e6:,.3f}", f"{c.energy_diff:+.2e}",
                      f"{c.cycles:,}", f"{c.timeloop_cycles:,}", f"{c.cycles_diff:+.2e}", note.strip())
    console.print(table)
    flagged = [c.name for c in checks if c.flagged]
    console.print(f"Timeloop agrees within {TOLERANCE:.0%} on {len(checks) - len(flagged)}/{len(checks)} layers"
                  + (f"; differs on {', '.join(flagged)}" if flagged else ""))
