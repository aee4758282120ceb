"""Time the backend: writing every artefact of MobileNetV2 and VGG-16 (ImageNet sizes, w4a8 on Eyeriss).

What is timed: `write_artifacts` on an already calibrated, lowered and mapped module, split into its steps
(collecting layers = re-evaluating costs and quantizing weights to codes; schedule.json/txt; timeloop/;
weights.bin + weights.json = tiling + bit-packing + writing; model.quant.onnx; report.json + plots), plus
"weights total" = code quantization + packing + writing, the figure that must stay under 10 s for VGG-16's
138 M weights. Front end, calibration and mapping are not timed. Mappings come from the real mapper
(`--mapper accel-map`, default, through its on-disk cache) or are random legal mappings from the cost model
(`--mapper random`, no mapper at all).

    python bench/backend_speed.py [--models mobilenet_v2 vgg16] [--bits w4a8] [--target eyeriss]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _prepare(model: str, bits: str, target: str, mapper: str):
    import numpy as np

    from quantloop.costmodel.model import evaluate, evaluate_batch
    from quantloop.costmodel.random_mappings import random_mappings
    from quantloop.frontend.onnx_import import import_onnx
    from quantloop.frontend.zoo.registry import load_zoo_model
    from quantloop.ir.accel import MappingAttr, layers
    from quantloop.ir.qnn import make_context
    from quantloop.passes.accel_lower import AccelLowerPass
    from quantloop.passes.accel_map import AccelMapPass, cost_attr
    from quantloop.passes.assign_bits import AssignBitsPass
    from quantloop.passes.calibrate import CalibratePass
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.targets.registry import load_target

    ctx = make_context()
    qnn = import_onnx(load_zoo_model(f"zoo:{model}"))
    CanonicalizePass().apply(ctx, qnn)
    AssignBitsPass(bits=bits).apply(ctx, qnn)
    CalibratePass().apply(ctx, qnn)
    accel = qnn.clone()
    AccelLowerPass(target=target).apply(ctx, accel)
    arch = load_target(target)
    if mapper == "accel-map":
        AccelMapPass().apply(ctx, accel)
    else:
        names = [lvl.name for lvl in arch.levels]
        for i, op in enumerate(layers(accel)):
            problem, b = op.problem.to_costmodel(op.label), op.bits.to_costmodel()
            candidates = random_mappings(arch, problem, 256, rng=i)
            result = evaluate_batch(arch, problem, candidates, b)
            ok = np.flatnonzero(result.capacity_ok)
            best = int(ok[np.argmin(result.energy[ok])])
            mapping = candidates.mapping(best)
            op.properties["mapping"] = MappingAttr.from_costmodel(mapping, names)
            op.properties["cost"] = cost_attr(evaluate(arch, problem, mapping, b), optimal=False, mappings_considered=256)
    return qnn, accel, arch


def _timed_steps(artifacts) -> dict[str, float]:
    """Wrap collect_layers and every writer of `artifacts` with a timer."""
    times: dict[str, float] = {}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - start

        return timed

    artifacts.collect_layers = wrap("collect layers (costs + weight codes)", artifacts.collect_layers)
    for step in artifacts.STEPS:
        setattr(artifacts, f"write_{step}", wrap(step, getattr(artifacts, f"write_{step}")))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "vgg16"])
    parser.add_argument("--bits", default="w4a8")
    parser.add_argument("--target", default="eyeriss")
    parser.add_argument("--mapper", choices=["random", "accel-map"], default="accel-map")
    args = parser.parse_args(argv)

    from quantloop.backend import artifacts, weights
    from quantloop.ir.accel import layers

    times = _timed_steps(artifacts)
    print(f"backend write time, {args.bits} on {args.target}, mappings: {args.mapper} (front end, calibration and "
          f"mapping not timed)")
    for model in args.models:
        start = time.perf_counter()
        qnn, accel, arch = _prepare(model, args.bits, args.target, args.mapper)
        prepare = time.perf_counter() - start
        times.clear()
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            out = Path(tmp) / model
            start = time.perf_counter()
            artifacts.write_artifacts(out, qnn_module=qnn, accel_module=accel, target=arch,
                                      command_line=f"bench {model}")
            total = time.perf_counter() - start
            manifest = weights.read_manifest(out)
            count = sum(e["count"] for e in manifest["layers"])
            sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        print(f"\n{model}: {len(layers(accel))} layers, {count:,} weights, weights.bin {sizes['weights.bin']:,} B, "
              f"model.quant.onnx {sizes.get('model.quant.onnx', 0):,} B (prepare, not timed: {prepare:.1f} s)")
        for name, seconds in times.items():
            print(f"  {name:<40s} {seconds:7.2f} s")
        print(f"  {'write_artifacts total':<40s} {total:7.2f} s")
        weights_total = times["weights"] + times["collect layers (costs + weight codes)"]
        print(f"  {'weights total (codes + pack + write)':<40s} {weights_total:7.2f} s"
              f"  ({count / weights_total / 1e6:.1f} M weights/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
