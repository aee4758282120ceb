"""Map every Conv/Gemm layer of zoo MobileNetV1/V2 (ImageNet 224) on Eyeriss and Simba at w8a8 and
w4a4 with a cold cache, then again with the warm cache.

Prints per network × target × bits: wall and CPU time (self + worker processes), peak memory
(ru_maxrss of self and of the largest worker), total energy, how many layers were mapped (distinct
shapes), and the depthwise layers' utilization with their spatial G. Goals: < 60 s per network and
target on 2 cores (ZigZag: ~213 CPU-s for MobileNetV2 on one target), < 1 GB, warm ≥ 20× faster.

    python bench/map_network.py [--workers 2] [--nets mobilenet_v2,mobilenet_v1] [--targets eyeriss,simba]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np


def _cpu() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_mb() -> tuple[float, float]:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _spatial_g(mapping) -> int:
    g = 1
    for lm in mapping.levels:
        g *= dict(lm.spatial_x).get("G", 1) * dict(lm.spatial_y).get("G", 1)
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nets", default="mobilenet_v2,mobilenet_v1")
    parser.add_argument("--targets", default="eyeriss,simba")
    parser.add_argument("--bits", default="w8a8,w4a4")
    args = parser.parse_args()

    from quantloop.problem import Bits
    from quantloop.frontend.zoo import load_zoo_model
    from quantloop.mapper import MapCache, map_layers
    from quantloop.mapper.layers_from_onnx import problems_from_onnx
    from quantloop.targets.registry import load_target

    header = (f"{'network':13s} {'target':8s} {'bits':5s} {'layers':>6s} {'mapped':>6s} {'wall s':>7s} {'CPU s':>7s} "
              f"{'self MB':>8s} {'worker MB':>9s} {'energy uJ':>10s} {'optimal':>7s} {'dw util (min/mean)':>18s} "
              f"{'dw G spatial':>12s} {'warm s':>7s} {'speed-up':>8s}")
    print(header)
    for net in args.nets.split(","):
        layers = problems_from_onnx(load_zoo_model(f"zoo:{net}"))
        for target in args.targets.split(","):
            arch = load_target(target)
            for spec in args.bits.split(","):
                bits = Bits.parse(spec)
                requests = [(name, problem, bits) for name, problem in layers]
                with tempfile.TemporaryDirectory(prefix="quantloop-bench-") as tmp:
                    cpu0, t0 = _cpu(), time.perf_counter()
                    cold = map_layers(requests, arch, "energy", workers=args.workers, cache=MapCache(tmp))
                    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
                    t1 = time.perf_counter()
                    warm = map_layers(requests, arch, "energy", workers=args.workers, cache=MapCache(tmp))
                    warm_wall = time.perf_counter() - t1
                assert all(w.cache_hit for w in warm) and [w.cost for w in warm] == [c.cost for c in cold]
                self_mb, kid_mb = _peak_mb()
                energy = sum(r.cost.total_energy_pj for r in cold) / 1e6
                distinct = len({(tuple(vars(p).items())[:-1]) for _, p, _ in requests})
                dw = [(r.cost.utilization, _spatial_g(r.mapping)) for (_, p, _), r in zip(requests, cold) if p.G > 1]
                util = np.array([u for u, _ in dw]) if dw else np.array([np.nan])
                g_spatial = f"{sum(g > 1 for _, g in dw)}/{len(dw)}"
                optimal = sum(r.optimal for r in cold)
                print(f"{net:13s} {target:8s} {spec:5s} {len(requests):6d} {distinct:6d} {wall:7.1f} {cpu:7.1f} "
                      f"{self_mb:8.0f} {kid_mb:9.0f} {energy:10.1f} {optimal:7d} "
                      f"{util.min():8.3f}/{util.mean():.3f}   {g_spatial:>12s} {warm_wall:7.2f} {wall / warm_wall:7.0f}x",
                      flush=True)


if __name__ == "__main__":
    main()
