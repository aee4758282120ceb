"""`quantloop map`: the best mapping of one layer (Timeloop problem YAML) on a target."""

from __future__ import annotations

import argparse

from quantloop.commands._common import add_bits_arguments, add_scheme_argument, add_target_argument, layer_bits, print_cost_tables

HELP = "find the best mapping of one layer (Timeloop problem YAML) on a target for energy, latency or EDP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_argument(parser)
    parser.add_argument("--problem", required=True, help="Timeloop v0.4 problem YAML (fork `bitwidths` honoured)")
    add_bits_arguments(parser)
    add_scheme_argument(parser)
    parser.add_argument("--objective", choices=["energy", "latency", "edp"], default="energy", help="what to minimise")
    parser.add_argument("--json", action="store_true", help="print JSON (the keys of `quantloop cost --json` plus the mapping)")
    parser.add_argument("--emit-timeloop", metavar="DIR", help="write the inputs timeloop-model needs (arch, ERT, ART, problem, map, constraints) to DIR")
    parser.add_argument("--cache-dir", help="mapper cache folder (default: $QUANTLOOP_CACHE_DIR or the user cache dir)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the mapper cache")
    parser.add_argument("--seed", type=int, default=0, help="search seed (results are deterministic for a seed)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from quantloop.costmodel.timeloop_yaml import format_map_txt, mapping_to_list, read_problem
    from quantloop.errors import QuantloopError
    from quantloop.mapper import MapCache, map_layer
    from quantloop.targets.registry import load_target

    arch = load_target(args.target)
    problem, file_bits = read_problem(args.problem)
    bits = layer_bits(args, arch, file_bits)
    cache = None if args.no_cache else MapCache(args.cache_dir)
    name = problem.name or Path(args.problem).stem
    result = map_layer(problem, arch, bits, args.objective, cache=cache, seed=args.seed, name=name)
    if args.emit_timeloop:
        out = Path(args.emit_timeloop)
        if out.exists() and not out.is_dir():
            raise QuantloopError(f"--emit-timeloop {out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        from quantloop.costmodel.timeloop_engine import layer_inputs, write_layer_inputs

        write_layer_inputs(out, layer_inputs(arch, problem, result.mapping, bits))
    if args.json:
        data = result.cost.to_json()
        data.update({
            "mapping": mapping_to_list(arch, result.mapping),
            "mappings_considered": result.mappings_considered,
            "optimal": result.optimal,
            "seconds": result.seconds,
            "cache_hit": result.cache_hit,
        })
        print(json.dumps(data, indent=1))
        return 0

    print(format_map_txt(arch, result.mapping, problem))
    print_cost_tables(arch.name, problem, bits, result.cost)
    proven = "proven optimal within the mapspace" if result.optimal else "not proven optimal (heuristic search)"
    source = "cache hit" if result.cache_hit else "searched"
    print(f"{result.mappings_considered:,} legal mappings considered; {result.seconds:.3f} s ({source}); {proven}")
    return 0
