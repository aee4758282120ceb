"""Partial sums at the accumulator width vs the quantization fork's Outputs width, MobileNetV2 at w8a8,
and real Timeloop against quantloop's cost model on the mapped layers (same run).

Per target prints: the network energy with every layer mapped under each convention, how much the
fork's mappings cost once partial sums are held at accumulator width (and how many of them no
longer fit a buffer), then every accumulator-width mapping re-evaluated in real timeloop-model
(worst relative energy / cycle difference) and the time per evaluation of timeloop-model next to
quantloop's `evaluate` (one mapping per call) and `evaluate_batch` (all layers' mappings at once).

    QUANTLOOP_TIMELOOP=.../run python bench/psum_width.py [--net mobilenet_v2] [--targets eyeriss,simba]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mobilenet_v2")
    parser.add_argument("--targets", default="eyeriss,simba")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from quantloop.costmodel.model import evaluate, evaluate_batch
    from quantloop.mapping import MappingArrays
    from quantloop.problem import Bits
    from quantloop.costmodel.timeloop_engine import evaluate_timeloop, find_timeloop
    from quantloop.errors import QuantloopError
    from quantloop.frontend.zoo import load_zoo_model
    from quantloop.mapper import MapCache, map_layers
    from quantloop.mapper.layers_from_onnx import problems_from_onnx
    from quantloop.targets.registry import load_target

    tool = find_timeloop()
    layers = problems_from_onnx(load_zoo_model(f"zoo:{args.net}"))
    acc, fork = Bits(8, 8, 8), Bits(8, 8, 8, psum="outputs")
    cache = MapCache()
    for target in args.targets.split(","):
        arch = load_target(target)
        mapped = {}
        for bits in (acc, fork):
            results = map_layers([(n, p, bits) for n, p in layers], arch, "energy", workers=args.workers, cache=cache)
            mapped[bits.psum] = results
        e_acc = sum(r.cost.total_energy_pj for r in mapped["accumulator"])
        e_fork = sum(r.cost.total_energy_pj for r in mapped["outputs"])
        recost, misfit, per_layer = 0.0, 0, []
        for (name, problem), r_fork, r_acc in zip(layers, mapped["outputs"], mapped["accumulator"]):
            try:
                recost += evaluate(arch, problem, r_fork.mapping, acc, check=True).total_energy_pj
            except QuantloopError:
                misfit += 1
                recost += evaluate(arch, problem, r_fork.mapping, acc, check=False).total_energy_pj
            per_layer.append(r_acc.cost.total_energy_pj / r_fork.cost.total_energy_pj - 1)
        print(f"{args.net} on {target}, w8a8, {len(layers)} layers")
        print(f"  mapped with partial sums at accumulator width: {e_acc / 1e6:10.3f} uJ")
        print(f"  mapped with the fork's 8-bit partial sums:     {e_fork / 1e6:10.3f} uJ  "
              f"(accumulator width is {e_acc / e_fork - 1:+.2%}; per layer {min(per_layer):+.2%} .. {max(per_layer):+.2%})")
        print(f"  the fork's mappings at accumulator width:      {recost / 1e6:10.3f} uJ  "
              f"({recost / e_fork - 1:+.2%}); {misfit}/{len(layers)} no longer fit a buffer")

        worst_e = worst_c = 0.0
        t_tl = 0.0
        for (name, problem), r in zip(layers, mapped["accumulator"]):
            started = time.perf_counter()
            theirs, emulation = evaluate_timeloop(arch, problem, r.mapping, acc, tool=tool)
            t_tl += time.perf_counter() - started
            worst_e = max(worst_e, abs(theirs.total_energy_pj / r.cost.total_energy_pj - 1))
            worst_c = max(worst_c, abs(theirs.cycles / r.cost.cycles - 1))
        started = time.perf_counter()
        for (name, problem), r in zip(layers, mapped["accumulator"]):
            evaluate(arch, problem, r.mapping, acc, check=True)
        t_one = time.perf_counter() - started
        started = time.perf_counter()
        for (name, problem), r in zip(layers, mapped["accumulator"]):
            evaluate_batch(arch, problem, MappingArrays.stack([r.mapping]), acc)
        t_batch = time.perf_counter() - started
        n = len(layers)
        print(f"  real Timeloop on the accumulator-width mappings: worst energy {worst_e:.2e}, worst cycles {worst_c:.2e}")
        print(f"  time per evaluation: timeloop-model {t_tl / n * 1e3:8.1f} ms, quantloop evaluate {t_one / n * 1e3:6.2f} ms "
              f"({t_tl / t_one:,.0f}x), evaluate_batch of one {t_batch / n * 1e3:6.2f} ms ({t_tl / t_batch:,.0f}x)")


if __name__ == "__main__":
    main()
