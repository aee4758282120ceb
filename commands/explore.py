"""`quantloop explore`: sweep target parameters × bit-widths for a model, compile every design point,
and write the Pareto front over energy, latency, area (and accuracy with --val-data) as explore.json +
explore.png; `--compile-front` also writes each front design's full compile."""

from __future__ import annotations

import argparse

from quantloop.parallel import CLUSTER_MIN_DESIGNS, POOL_MAX_WORKERS

HELP = "hardware/model co-exploration: sweep target parameters and bits, Pareto front of energy, latency, area, accuracy"

DEFAULT_AXES = ("pe=8x8,14x12,16x16", "glb_kib=64,128", "pe_type=int8,int16,lightpe1,lightpe2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX file or zoo:NAME")
    parser.add_argument("--target", default="eyeriss", help="a parameterised target (default eyeriss); fixed parameters as eyeriss?psum_spad=32")
    parser.add_argument("--grid", action="append", metavar="NAME=V1,V2", default=None,
                        help=f"a swept parameter and its values (repeat; default: {' '.join(DEFAULT_AXES)})")
    parser.add_argument("--sampling", choices=["grid", "random", "nsga2"], default="grid",
                        help="every combination (default), --samples of them drawn with --seed, or NSGA-II "
                             "(--population × --generations, --seed) over the hardware axes")
    parser.add_argument("--samples", type=int, default=0, help="combinations drawn with --sampling random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", type=int, default=8, help="NSGA-II population (--sampling nsga2)")
    parser.add_argument("--generations", type=int, default=3, help="NSGA-II generations (--sampling nsga2)")
    parser.add_argument("--bits", default="", metavar="LIST",
                        help="bit-widths crossed with the hardware, e.g. w4a8,w8a8 (default: each PE type's native bits)")
    parser.add_argument("--scheme", choices=["int", "pot", "pot2"], help="weight scheme (default: the PE type's)")
    parser.add_argument("--data", metavar="NPZ", help="calibration data (.npz x, or zoo:digits-calib)")
    parser.add_argument("--val-data", metavar="NPZ", help="labelled data: accuracy becomes an objective")
    parser.add_argument("--objective", choices=["energy", "latency", "edp"], default="energy", help="what the mapper minimises")
    parser.add_argument("--workers", type=int, default=None,
                        help="evaluate on a Dask LocalCluster of this many processes (1: this process; default: one per "
                             f"core, up to {POOL_MAX_WORKERS}, for {CLUSTER_MIN_DESIGNS} or more designs, else this process)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="evaluate on this existing Dask cluster")
    parser.add_argument("--cache-dir", help="mapper cache folder (shared by every worker)")
    parser.add_argument("--compile-front", action="store_true", help="write each front design's full compile under designs/")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="write explore.json and explore.png here")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from quantloop.backend.atomic import atomic_output_dir, check_output_dir
    from quantloop.driver import compile as compile_model
    from quantloop.explore.evaluate import EvalSettings, compile_options
    from quantloop.explore.space import DesignPoint, parse_axis
    from quantloop.explore.sweep import run_sweep, write_sweep

    out = Path(args.output)
    check_output_dir(out, args.force)  # before any work
    axes = dict(parse_axis(text) for text in (args.grid or DEFAULT_AXES))
    bits = [b.strip() for b in args.bits.split(",") if b.strip()]
    settings = EvalSettings(model=args.model, data=args.data, val_data=args.val_data, objective=args.objective,
                            cache_dir=args.cache_dir)
    console = Console(stderr=True)

    def progress(done: int, total: int) -> None:
        console.print(f"explore: {done}/{total} evaluated" + (" (at most)" if args.sampling == "nsga2" else ""),
                      end="\r" if done < total else "\n")

    document = run_sweep(settings, args.target, axes, bits=bits, scheme=args.scheme, sampling=args.sampling,
                         samples=args.samples, seed=args.seed, workers=args.workers, scheduler=args.scheduler,
                         progress=progress, population=args.population, generations=args.generations)
    if args.sampling == "nsga2":
        console.print()  # NSGA-II may stop short of its upper bound: end the progress line
    with atomic_output_dir(out, args.force) as tmp:
        written = write_sweep(tmp, document)
        if args.compile_front:
            for i in document["front"]:
                row = document["points"][i]
                point = DesignPoint(row["target"], row["bits"], row["scheme"], tuple(sorted(row["parameters"].items())))
                compile_model(args.model, compile_options(point, settings).replace(output_dir=tmp / "designs" / f"{i:03d}"))
    rows, front = document["points"], document["front"]
    out_console = Console(soft_wrap=True)
    out_console.print(f"{len(rows)} designs evaluated ({len(document['skipped'])} skipped: PEs cannot run those bits), "
                      f"{len(front)} on the Pareto front over {', '.join(k for k, _ in document['objectives'])}")
    spread = document["spread"]
    if spread["energy"] and spread["perf_per_area"]:
        out_console.print(f"spread across the sweep: energy {spread['energy']:.1f}×, performance per area {spread['perf_per_area']:.1f}×")
    for i in front:
        r = rows[i]
        acc = "" if r["accuracy"] is None else f", top-1 {100 * r['accuracy']:.2f} %"
        out_console.print(f"  front: {r['label']}: {r['energy_pj'] / 1e6:,.3f} µJ, {r['latency_s'] * 1e3:,.4g} ms, "
                          f"{r['area_mm2']:,.3f} mm², {r['perf_per_area_gmacs_per_mm2']:,.3g} GMAC/s/mm²{acc}")
    out_console.print(f"wrote {out / written['explore_json'].name}, {out / written['explore_png'].name}")
    return 0
