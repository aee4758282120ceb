"""Co-exploration bench: zoo:mobilenet_v2_digits on Eyeriss-like designs (`quantloop explore`).

Sweeps a seeded random sample of pe × glb_kib × pe_type (int8, int16, LightPE-1, LightPE-2) twice from a
COLD mapper cache each time: in one process and on a Dask LocalCluster of 2 workers. Prints designs
evaluated per minute for both (and whether the two runs agree), the spread (max / min) of energy and of
performance per area across the sweep (QUIDAM reports 35× and 5× over its much larger space), and the
best design per PE type (highest performance per area) with its top-1 on the held-out test split.

Then a per-layer pot/int search on `eyeriss_hybrid` (every PE has an int8 multiplier and a LightPE-1 shift
path): greedy, layer by layer in graph order, a layer's weights become 4-bit power-of-two (shift) when the
validation top-1 stays within --max-drop pp of all-int w8a8; it prints the array (MAC) power and energy saving
against all-int, next to Kalali & van Leuken's 14.2–21.6 % lower array power (paper 003), and test top-1.

    python bench/explore.py [--samples 8] [--seed 0] [--skip-dask] [--skip-kalali] [--max-drop 0.5]
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


def _compile_with_schemes(pot_layers: set[str], layers: list[str], cache: Path, tmp: Path):
    import quantloop

    table = {name: ({"weights": 4, "scheme": "pot"} if name in pot_layers else {"weights": 8}) for name in layers}
    bits = tmp / "bits.json"
    bits.write_text(json.dumps(table))
    return quantloop.compile(MODEL, target="eyeriss_hybrid", bits="w8a8", bits_file=str(bits),
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
    cache = tmp / "cache-kalali"
    base = _compile_with_schemes(set(), [], cache, tmp)
    layers = [layer.name for layer in base.layers]
    base_acc = _accuracy(base, "zoo:digits-val")
    started, pot = time.perf_counter(), set()
    for name in layers:
        trial = _compile_with_schemes(pot | {name}, layers, cache, tmp)
        if base_acc - _accuracy(trial, "zoo:digits-val") <= args.max_drop / 100:
            pot.add(name)
    chosen = _compile_with_schemes(pot, layers, cache, tmp)
    (e0, p0), (e1, p1) = _array(base), _array(chosen)
    print(f"per-layer pot/int search on eyeriss_hybrid ({len(layers)} layers, {time.perf_counter() - started:.0f} s): "
          f"{len(pot)} layers on the shift path (w4 pot), the rest int8")
    print(f"  array (MAC) power {p0 * 1e3:.3f} -> {p1 * 1e3:.3f} mW ({100 * (1 - p1 / p0):.1f} % lower; Kalali & van Leuken: "
          f"14.2-21.6 %), array energy {100 * (1 - e1 / e0):.1f} % lower, total energy "
          f"{100 * (1 - chosen.total_energy_pj / base.total_energy_pj):.1f} % lower")
    print(f"  top-1 val {100 * base_acc:.2f} -> {100 * _accuracy(chosen, 'zoo:digits-val'):.2f} %, test "
          f"{100 * _accuracy(base, 'zoo:digits-test'):.2f} -> {100 * _accuracy(chosen, 'zoo:digits-test'):.2f} % "
          f"(Kalali & van Leuken: 0.39-0.98 pp lower at 8 bits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-kalali", action="store_true")
    parser.add_argument("--max-drop", type=float, default=0.5, help="pp of validation top-1 the pot layers may cost")
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
