"""`quantloop cost`: evaluate one Timeloop-format mapping of one layer on a target."""

from __future__ import annotations

import argparse


from quantloop.commands._common import add_bits_arguments, add_scheme_argument, add_target_argument, layer_bits, print_cost_tables
from quantloop.errors import QuantloopError

HELP = "energy, cycles and per-level accesses of one mapping (Timeloop problem + map YAML) on a target"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_argument(parser)
    parser.add_argument("--problem", required=True, help="Timeloop v0.4 problem YAML (fork `bitwidths` honoured)")
    parser.add_argument("--mapping", required=True, help="Timeloop v0.4 mapping YAML")
    add_bits_arguments(parser)
    add_scheme_argument(parser)
    parser.add_argument(
        "--mac-energy",
        choices=["target", "fixed"],
        default="target",
        help="'fixed': MAC energy does not change with bits (the quantization fork); default: as the target declares",
    )
    parser.add_argument(
        "--engine", choices=["quantloop", "timeloop"], default="quantloop",
        help="'timeloop': evaluate in real timeloop-model (found through QUANTLOOP_TIMELOOP or PATH); "
             "default: quantloop's own cost model",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _naming_inputs(message: str, args) -> str:
    """An error of the (problem, mapping, target) combination names every file it may come from."""
    from pathlib import Path

    named = [f"problem {args.problem}"] if str(args.problem) not in message else []
    if Path(args.target).exists() and str(args.target) not in message:
        named.append(f"target {args.target}")
    if str(args.mapping) not in message:
        message = f"{args.mapping}: {message.removeprefix('mapping: ')}"
    return f"{message} ({', '.join(named)})" if named else message


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from quantloop.costmodel.model import evaluate
    from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
    from quantloop.targets.area import format_mm2, target_area
    from quantloop.targets.registry import load_target

    arch = load_target(args.target)
    if args.mac_energy == "fixed":
        arch = dataclasses.replace(arch, compute=dataclasses.replace(arch.compute, energy_mode="fixed"))
    problem, file_bits = read_problem(args.problem)
    bits = layer_bits(args, arch, file_bits)
    try:
        mapping = read_mapping(args.mapping, arch)
    except QuantloopError as err:
        raise QuantloopError(_naming_inputs(str(err), args)) from None
    tool = None
    if args.engine == "timeloop":
        from quantloop.costmodel.timeloop_engine import find_timeloop

        tool = find_timeloop()
    try:
        result = evaluate(arch, problem, mapping, bits, check=True)  # legality: one-line errors before Timeloop runs
    except QuantloopError as err:
        raise QuantloopError(_naming_inputs(str(err), args)) from None
    if tool is not None:
        import sys

        from quantloop.costmodel.timeloop_engine import evaluate_timeloop

        result, emulation = evaluate_timeloop(arch, problem, mapping, bits, tool=tool)
        if emulation.mixed:
            print(f"quantloop: note: stock Timeloop has one word width per level; at these bits "
                  f"{', '.join(emulation.mixed)} keep data spaces that pack differently, so its counts there "
                  f"are not quantloop's", file=sys.stderr)
    area = target_area(arch)
    if args.json:
        print(json.dumps({**result.to_json(), "area": area.to_json()}, indent=1))
        return 0
    print_cost_tables(arch.name, problem, bits, result)
    parts = [f"{name} {format_mm2(mm2)}" for name, mm2 in area.levels.items()] + [f"{arch.compute.name} {format_mm2(area.compute)}"]
    print(f"area (all instances): {', '.join(parts)}; total {format_mm2(area.total_mm2)}")
    return 0
