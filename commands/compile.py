"""`quantloop compile MODEL [--target T] [-o DIR] ...`: the main job."""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "Compile an ONNX model (or zoo:NAME) for a target: bit-widths, mappings, schedules, packed weights."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX file, or zoo:NAME (see `quantloop zoo`)")
    parser.add_argument("--target", help="target name (see `quantloop targets`) or a target YAML file")
    parser.add_argument("-o", "--output", metavar="DIR", help="write schedules, packed weights and the report here")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    from quantloop.backend.emit import emit_help

    parser.add_argument("--emit", metavar="LIST", help=emit_help())
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the summary")
    parser.add_argument("--bits", default="w8a8", help="uniform bit-widths, e.g. w8a8, w4a8 (default: w8a8)")
    parser.add_argument("--bits-file", metavar="JSON", help='per-layer bits: {"conv1": {"weights": 4, "activations": 8}}')
    parser.add_argument("--objective", choices=["energy", "latency", "edp"], default="energy")
    parser.add_argument(
        "--input-shape", action="append", metavar="NAME=DxD..", help="fix a symbolic input shape, e.g. x=1x3x224x224"
    )
    parser.add_argument("--data", metavar="NPZ", help="calibration data: .npz with array x (or zoo:digits-calib)")
    parser.add_argument("--weight-clip", choices=["minmax", "mse"], default="minmax")
    parser.add_argument("--act-range", choices=["minmax", "percentile"], default="minmax",
                        help="activation ranges from calibration: extremes or percentiles (default minmax)")
    parser.add_argument("--percentile", type=float, default=99.99, help="with --act-range percentile (default 99.99)")
    parser.add_argument("--scheme", choices=["int", "pot", "pot2"], default="int", help="weight quantization scheme")
    parser.add_argument("--workers", type=int, default=1, help="map layers in this many processes")
    parser.add_argument("--cache-dir", help="mapper cache folder (default: the user cache directory)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the mapper cache")
    parser.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS", help="print the IR after PASS")
    parser.add_argument("--dump-ir", metavar="DIR", help="write one numbered .mlir file per pass into DIR")
    parser.add_argument(
        "--elide-weights",
        type=int,
        default=16,
        metavar="N",
        help="in printed IR, elide constants with more than N values (0: print all; default 16)",
    )
    from quantloop.passes.search.flags import add_search_arguments

    add_search_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from quantloop.driver import compile as compile_model
    from quantloop.errors import QuantloopError
    from quantloop.frontend.onnx_load import parse_input_shapes
    from quantloop.passes.search.flags import search_settings
    from quantloop.progress import make_progress

    if args.workers < 1:
        raise QuantloopError(f"--workers {args.workers}: must be at least 1")
    if args.elide_weights < 0:
        raise QuantloopError(f"--elide-weights {args.elide_weights}: must be 0 (print every weight) or more")
    result = compile_model(
        args.model,
        target=args.target,
        bits=args.bits,
        bits_file=args.bits_file,
        objective=args.objective,
        input_shapes=parse_input_shapes(args.input_shape),
        output_dir=args.output,
        force=args.force,
        data=args.data,
        weight_clip=args.weight_clip,
        act_range=args.act_range,
        percentile=args.percentile,
        weight_scheme=args.scheme,
        workers=args.workers,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=args.print_ir_after,
        dump_ir=args.dump_ir,
        elide_weights_over=None if args.elide_weights == 0 else args.elide_weights,
        command_line=shlex.join(["quantloop", *sys.argv[1:]]),
        search=search_settings(args),
        emit=args.emit,
        progress=make_progress(sys.stderr, quiet=args.quiet),
    )
    to_stderr = args.print_ir_after_all or bool(args.print_ir_after)
    stream = sys.stderr if to_stderr else sys.stdout
    console = Console(stderr=to_stderr, width=None if stream.isatty() else 160)
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
    table = Table(title=f"{args.model} on {result.target.name} ({args.objective})")
    for column in ("layer", "kind", "shape", "bits", "energy (µJ)", "cycles", "util.", "mapper (s)", "optimal"):
        table.add_column(
            column, justify="right" if column not in ("layer", "kind", "shape", "bits") else "left", no_wrap=True
        )
    for layer in result.layers:
        table.add_row(
            layer.name,
            layer.kind,
            layer.shape,
            layer.bits,
            f"{layer.energy_pj / 1e6:,.3f}",
            f"{layer.cycles:,}",
            f"{layer.utilization:.0%}",
            "cache" if layer.cache_hit else f"{layer.mapper_seconds:.2f}",
            "yes" if layer.optimal else "no",
        )
    table.add_section()
    table.add_row(
        "total",
        f"{len(result.layers)} layers",
        f"{len(result.host_ops)} host ops",
        "",
        f"{result.total_energy_pj / 1e6:,.3f}",
        f"{result.total_cycles:,}",
        "",
        f"{sum(layer.mapper_seconds for layer in result.layers):.2f}",
        f"{sum(layer.optimal for layer in result.layers)}/{len(result.layers)}",
    )
    console.print(table)
    if result.host_ops:
        console.print(f"host ops (not mapped onto the accelerator): {', '.join(result.host_ops)}")
    for kind, path in result.artifacts.items():
        console.print(f"wrote {kind}: {path}")
    console.print(f"[bold]done[/] in {result.seconds:.2f} s")
