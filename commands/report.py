"""`quantloop report DIR`: the tables of a finished compile's report.json and the paths of its plots."""

from __future__ import annotations

import argparse

HELP = "print the energy, cycles, bits and weight memory of a compile's output folder, and its plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="output folder of `quantloop compile -o DIR`")
    parser.add_argument("--sort", choices=["order", "energy"], default="order",
                        help="list layers in network order (default) or by energy, highest first")


def _fmt_pj(pj: float) -> str:
    return f"{pj / 1e6:,.3f}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from quantloop.backend.report import read_report

    out_dir = Path(args.dir)
    report = read_report(out_dir)
    console = Console(width=max(Console().width, 120))
    total = report["total"]
    target = report["target"]
    console.print(f"[bold]{out_dir}[/]: target [bold]{target['name']}[/] ({target['content_hash'][:12]}), "
                  f"quantloop {report['quantloop_version']}")
    console.print(f"command: {report['command_line']}")

    summary = Table(title="Network totals")
    for col in ("energy (µJ)", "cycles", "MACs", "utilization", "weight memory (bytes)", "layers", "host ops"):
        summary.add_column(col, justify="right")
    summary.add_row(_fmt_pj(total["energy_pj"]), f"{total['cycles']:,}", f"{total['macs']:,}",
                    f"{total['utilization']:.1%}", f"{total['weight_bytes']:,}", str(len(report["layers"])),
                    str(len(report["host_ops"])))
    console.print(summary)

    for key, title in (("energy_by_level_pj", "level"), ("energy_by_dataspace_pj", "data space")):
        table = Table(title=f"Energy by {title}")
        table.add_column(title)
        table.add_column("energy (µJ)", justify="right")
        table.add_column("share", justify="right")
        for part, pj in total[key].items():
            table.add_row(part, _fmt_pj(pj), f"{pj / total['energy_pj']:.1%}" if total["energy_pj"] else "-")
        console.print(table)

    layers = list(report["layers"])
    if args.sort == "energy":
        layers.sort(key=lambda layer: layer["energy_pj"], reverse=True)
    table = Table(title="Layers")
    # names are never cut to an ellipsis (two long names would look the same when piped): they fold
    table.add_column("layer", min_width=min(max((len(x["name"]) for x in layers), default=5), 60), overflow="fold")
    for col, justify in (("kind", "left"), ("bits W/I/O", "left"), ("scheme", "left"),
                         ("energy (µJ)", "right"), ("share", "right"), ("cycles", "right"),
                         ("utilization", "right"), ("weights (bytes)", "right")):
        table.add_column(col, justify=justify)
    for layer in layers:
        b = layer["bits"]
        share = layer["energy_pj"] / total["energy_pj"] if total["energy_pj"] else 0.0
        table.add_row(layer["name"], layer["kind"], f"{b['weights']}/{b['inputs']}/{b['outputs']}", b["scheme"],
                      _fmt_pj(layer["energy_pj"]), f"{share:.1%}", f"{layer['cycles']:,}",
                      f"{layer['utilization']:.1%}", f"{layer['weight_bytes']:,}")
    console.print(table)

    if report["host_ops"]:
        ops = ", ".join(f"{h['name'] or '?'} ({h['op']})" for h in report["host_ops"])
        console.print(f"host ops (run on the host, not the accelerator): {ops}", soft_wrap=True)
    from quantloop.backend.report import CORE_KEYS

    extra = [key for key in report if key not in CORE_KEYS]
    if extra:
        console.print(f"also in report.json: {', '.join(extra)}")
    for plot in report["plots"]:
        path = out_dir / plot
        console.print(f"plot: {path}" + ("" if path.exists() else " [red](missing)[/]"), soft_wrap=True)
    return 0
