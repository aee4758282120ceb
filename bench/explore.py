"""Co-exploration bench: zoo:mobilenet_v2_digits on Eyeriss-like designs (`quantloop explore`).

Sweeps a seeded random sample of pe × glb_kib × pe_type (int8, int16, LightPE-1, LightPE-2) twice from a
COLD mapper cache each time: in one process and on a Dask LocalCluster of 2 workers. Prints designs
evaluated per minute for both (and whether the two runs agree), the spread (max / min) of energy and of
performance per area across the sweep (QUIDAM reports 35× and 5× over its much larger space), and the
best design per PE type (highest performance per area) with its top-1 on the held-out test split.

Then a per-layer pot/int search on `eyeriss_hybrid` (every PE has an int8 multiplier and a LightPE-1 shift
path): the mixed-precision search itself (NSGA-II, a weight-scheme gene per layer, 8-bit weights and activations)
with the energy objective and at most --max-drop pp top-1 lost on a 400-image selection set (calibration +
validation splits); it prints the array (MAC) power and energy saving against all-int, next to Kalali & van
Leuken's 14.2–21.6 % lower array power (paper 003), and top-1 on the held-out test split.

    python bench/explore.py [--samples 8] [--seed 0] [--skip-dask] [--skip-kalali] [--skip-sweep] [--max-drop 0.5]
                            [--population 24] [--generations 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

AXES = {"pe": ["8x8", "14x12", "16x16"], "glb_kib": ["64", "128"], "pe_type": ["int8", "int16", "lightpe1", "lightpe2"]}
MODEL = "zoo:mobilenet_v2_digits"


def sweep(workers: int, args, cache: Path) -> tuple[dict, float]:
    from quantloop.explore.evaluate import EvalSettings
    from quantloop.explore.sweep import run_sweep

    settings = EvalSettings(model=MODEL, data="zoo:digits-calib", val_data="zoo:digits-val", cache_dir=str(cache))
    started = time.perf_counter()
    doc = run_sweep(settings, "eyeriss", AXES, sampling="random", samples=args.samples, seed=args.seed, workers=workers)
    return doc, time.perf_counter() - started


def test_accuracy(row: dict, cache: Path) -> float:
    import quantloop
    from quantloop.runtime.accuracy import top1
    from quantloop.runtime.dataset import load_dataset
    from quantloop.runtime.fakequant_export import export_fakequant_onnx

    result = quantloop.compile(MODEL, target=row["target"], bits=row["bits"], weight_scheme=row["scheme"],
                               data="zoo:digits-calib", cache_dir=str(cache))
    x, y = load_dataset("zoo:digits-test")
    return top1(export_fakequant_onnx(result.qnn_module), x, y)


def _compile_table(table: dict | None, scheme: str, cache: Path):
    import quantloop

    return quantloop.compile(MODEL, target="eyeriss_hybrid", bits="w8a8", bits_table=table, weight_scheme=scheme,
                             data="zoo:digits-calib", cache_dir=str(cache))


def _accuracy(result, split: str) -> float:
    from quantloop.runtime.accuracy import top1
    from quantloop.runtime.dataset import load_dataset
    from quantloop.runtime.fakequant_export import export_fakequant_onnx

    x, y = load_dataset(split)
    return top1(export_fakequant_onnx(result.qnn_module), x, y)


def _array(result) -> tuple[float, float]:
    """(MAC energy pJ, MAC power W = MAC energy / latency)."""
    mac = sum(v for layer in result.layers for v in layer.energy_pj_by_level.get("MAC", {}).values())
    return mac, mac * 1e-12 / result.ppa.latency_s


def kalali(args, tmp: Path) -> None:
    """The mixed-precision search (NSGA-II, one weight-scheme gene per layer) on eyeriss_hybrid at 8 bits:
    every layer int8 (multiplier) or pot (LightPE-1 shift path), energy objective, accuracy constraint on a
    400-image selection set (the calibration and validation splits: the 200-image validation split alone
    moves in 0.5 pp steps); reported on the 297-image test split, which the search never sees."""
    import numpy as np

    from quantloop.frontend import import_onnx
    from quantloop.runtime.dataset import load_dataset
    from quantloop.ir import make_context
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.passes.search.engine import SearchOptions, search_bits

    cache = tmp / "cache-kalali"
    calib_x, calib_y = load_dataset("zoo:digits-calib")
    val_x, val_y = load_dataset("zoo:digits-val")
    sel_x, sel_y = np.concatenate([calib_x, val_x]), np.concatenate([calib_y, val_y])
    module = import_onnx(MODEL)
    CanonicalizePass().apply(make_context(), module)
    options = SearchOptions(target="eyeriss_hybrid", widths=(8,), population=args.population,
                            generations=args.generations, seed=args.seed, max_accuracy_drop=args.max_drop,
                            cache_dir=str(cache), progress=False)
    started = time.perf_counter()
    result = search_bits(module, options, calib_x, sel_x, sel_y)
    seconds = time.perf_counter() - started
    if result.chosen is None:
        print(f"per-layer pot/int search on eyeriss_hybrid: nothing within {args.max_drop} pp")
        return
    config = result.chosen.config
    n = len(result.space.layers)
    pot = sum(config.layer_scheme(i) == "pot" for i in range(n))
    base = _compile_table(None, "int", cache)
    chosen = _compile_table(result.bits_file(result.chosen), config.calibration_scheme, cache)
    (e0, p0), (e1, p1) = _array(base), _array(chosen)
    print(f"per-layer pot/int search on eyeriss_hybrid (NSGA-II {args.population} x {args.generations}, "
          f"{len(result.archive)} candidates, {seconds:.0f} s; selection {len(sel_x)} images, <= {args.max_drop} pp): "
          f"{pot} of {n} layers on the shift path (w8 pot), the rest int8")
    print(f"  array (MAC) power {p0 * 1e3:.3f} -> {p1 * 1e3:.3f} mW ({100 * (1 - p1 / p0):.1f} % lower; Kalali & van Leuken: "
          f"14.2-21.6 %), array energy {100 * (1 - e1 / e0):.1f} % lower, total energy "
          f"{100 * (1 - chosen.total_energy_pj / base.total_energy_pj):.1f} % lower")

    def top1(result_, x, y) -> float:
        from quantloop.runtime.accuracy import top1 as run
        from quantloop.runtime.fakequant_export import export_fakequant_onnx

        return run(export_fakequant_onnx(result_.qnn_module), x, y)

    test_x, test_y = load_dataset("zoo:digits-test")
    print(f"  top-1 selection {100 * top1(base, sel_x, sel_y):.2f} -> {100 * top1(chosen, sel_x, sel_y):.2f} %, test "
          f"{100 * top1(base, test_x, test_y):.2f} -> {100 * top1(chosen, test_x, test_y):.2f} % "
          f"(float: selection {100 * result.float_accuracy:.2f} %; Kalali & van Leuken: 0.39-0.98 pp lower at 8 bits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-kalali", action="store_true")
    parser.add_argument("--max-drop", type=float, default=0.5, help="pp of selection top-1 the pot layers may cost")
    parser.add_argument("--population", type=int, default=24, help="NSGA-II population of the pot/int search")
    parser.add_argument("--generations", type=int, default=10, help="NSGA-II generations of the pot/int search")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quantloop-bench-explore-") as tmp:
        if not args.skip_kalali:
            kalali(args, Path(tmp))
        if args.skip_sweep:
            return
        doc, seconds = sweep(1, args, Path(tmp) / "cache1")
        n = len(doc["points"])
        print(f"{MODEL} on eyeriss: {n} designs ({args.samples} sampled of {3 * 2 * 4}, seed {args.seed})")
        print(f"1 worker : {n / seconds * 60:6.2f} designs/min ({seconds:.1f} s, cold mapper cache)")
        if not args.skip_dask:
            doc2, seconds2 = sweep(2, args, Path(tmp) / "cache2")
            same = json.dumps(doc, sort_keys=True) == json.dumps(doc2, sort_keys=True)
            print(f"2 workers: {n / seconds2 * 60:6.2f} designs/min ({seconds2:.1f} s, cold cache; "
                  f"{'identical' if same else 'DIFFERENT'} results)")
        print(f"spread across the sweep: energy {doc['spread']['energy']:.2f}×, performance per area "
              f"{doc['spread']['perf_per_area']:.2f}× (QUIDAM: 35× and 5× over its space)")
        print(f"Pareto front: {len(doc['front'])} of {n} designs")
        for kind in ("int8", "int16", "lightpe1", "lightpe2"):
            mine = [r for r in doc["points"] if r["pe_type"] == kind]
            if not mine:
                print(f"  {kind:9s}: not sampled")
                continue
            best = max(mine, key=lambda r: r["perf_per_area_gmacs_per_mm2"])
            print(f"  best {kind:9s}: {best['label']}: {best['perf_per_area_gmacs_per_mm2']:.3f} GMAC/s/mm², "
                  f"{best['energy_pj'] / 1e6:.2f} µJ, {best['latency_s'] * 1e3:.3f} ms, {best['area_mm2']:.2f} mm², "
                  f"val top-1 {100 * best['accuracy']:.2f} %, test top-1 {100 * test_accuracy(best, Path(tmp) / 'cache1'):.2f} %")


if __name__ == "__main__":
    main()
