"""`quantloop opt`: run passes on textual qnn / accel IR, like mlir-opt."""

from __future__ import annotations

import argparse
import sys

HELP = "run passes on a .mlir file (e.g. -p qnn-canonicalize,qnn-assign-bits{bits=w4a8},cse)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE.mlir", help="input IR ('-' reads standard input)")
    parser.add_argument(
        "-p",
        "--passes",
        default="",
        metavar="PIPELINE",
        help="comma-separated passes with options in braces, e.g. 'qnn-assign-bits{bits=w4a8 file=bits.json}'; "
        "xDSL's canonicalize, cse and dce run too (--list-passes)",
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="write the result here instead of standard output")
    parser.add_argument(
        "--print-ir-after-all",
        "--print-between-passes",
        action="store_true",
        help="print the IR after every pass to standard error, under MLIR's '// -----// IR Dump After' header "
        "(--print-between-passes is xdsl-opt's name for it)",
    )
    parser.add_argument(
        "--print-ir-after",
        action="append",
        default=[],
        metavar="PASS",
        help="print the IR after this pass (repeatable)",
    )
    parser.add_argument("--dump-ir", metavar="DIR", help="write 00_input.mlir, 01_<pass>.mlir, ... with all weights")
    parser.add_argument(
        "--elide-weights",
        type=int,
        metavar="N",
        help="print constants with more than N values as #qnn.dense<elided> "
        "(default: the result keeps every weight, IR dumps elide over 16)",
    )
    parser.add_argument(
        "--time-passes", action="store_true", help="print the wall time of every pass to standard error (MLIR's report)"
    )
    parser.add_argument(
        "--list-passes", action="store_true", help="list the available passes with their options and exit"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from quantloop.errors import QuantloopError
    from quantloop.ir.qnn import make_context, parse_module, print_module
    from quantloop.passes.pipeline import parse_pipeline, run_pipeline
    if args.list_passes:
        sys.stdout.write(list_passes())
        return 0
    if args.file is None:
        raise QuantloopError("quantloop opt: no input file given (FILE.mlir, or '-' for standard input)")
    passes = parse_pipeline(args.passes) if args.passes.strip() else []
    if args.file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        from quantloop.files import read_text

        path = Path(args.file)
        text = read_text(path, "MLIR file", max_bytes=1 << 30)
        source = str(path)
    elide = None if args.elide_weights is None or args.elide_weights < 0 else args.elide_weights
    ctx = make_context()
    module = parse_module(text, source_name=source, ctx=ctx)
    try:
        run_pipeline(
            module,
            passes,
            ctx,
            print_ir_after_all=args.print_ir_after_all,
            print_ir_after=set(args.print_ir_after),
            dump_dir=Path(args.dump_ir) if args.dump_ir else None,
            out=sys.stderr,
            elide_weights_over=16 if args.elide_weights is None else elide,
            time_passes=args.time_passes,
        )
    except QuantloopError as err:  # a pass's error (a layer, a target) is about this file's contents: name it
        message = str(err)
        raise QuantloopError(message if source in message else f"{source}: {message}", exit_code=err.exit_code) from None
    result = print_module(module, elide_weights_over=elide)
    if args.output:
        out_path = Path(args.output)
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_path.with_name(out_path.name + ".tmp")
            tmp.write_text(result)
            tmp.replace(out_path)
        except OSError as err:
            raise QuantloopError(f"{out_path}: cannot write the result ({err.strerror})") from None
    else:
        sys.stdout.write(result)
    return 0


def list_passes() -> str:
    """Every pass a pipeline may name: `name{option=default ...}`, its description and option types."""
    from quantloop.passes.registry import describe_pass, pipeline_passes

    lines = []
    for name, loader in pipeline_passes().items():
        info = describe_pass(name, loader())
        lines.append(f"{name}  {info.description}")
        for option in info.options:
            lines.append(f"    {option.name}: {option.type} = {option.default}")
    return "\n".join(lines) + "\n"
