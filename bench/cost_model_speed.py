"""Mapping evaluations per second of `evaluate_batch` on one core.

Random legal mappings (structure, constraints and capacity) of a MobileNetV2 pointwise and a
depthwise layer on the built-in Eyeriss and Simba targets, stock and packed (w4a8) bit-widths.
Run: python bench/cost_model_speed.py [--batch 20000] [--repeat 5]
Rates use the process's CPU time (best of the repeats), so other jobs sharing the machine do not
distort the one-core figure; wall-clock rates are printed beside them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from quantloop.mapping import MappingArrays  # noqa: E402
from quantloop.costmodel.model import evaluate_batch  # noqa: E402
from quantloop.problem import Bits, Problem  # noqa: E402
from quantloop.costmodel.random_mappings import random_mappings  # noqa: E402
from quantloop.targets.registry import load_target  # noqa: E402

LAYERS = {
    # MobileNetV2 block 3 (56×56): 1×1 projection 144 → 24 and the 3×3 depthwise over 144 channels
    "mbv2_pw_C144_M24_P56": Problem(C=144, M=24, P=56, Q=56, name="mbv2_pw"),
    "mbv2_dw3x3_G144_P56": Problem(G=144, P=56, Q=56, R=3, S=3, name="mbv2_dw"),
}


def legal_mappings(arch, problem, count: int, bits: Bits, seed: int = 0):
    """`count` random mappings that also fit every level's capacity at these bit-widths."""
    chunks, have = [], 0
    while have < count:
        pool = random_mappings(arch, problem, count, seed)
        seed += 1
        legal = pool[np.flatnonzero(evaluate_batch(arch, problem, pool, bits).capacity_ok)]
        chunks.append(legal)
        have += legal.batch
    fields = ("temporal", "spatial_x", "spatial_y", "order", "keep")
    return MappingArrays(*(np.concatenate([getattr(c, f) for c in chunks])[:count] for f in fields))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"evaluate_batch, 1 thread, batch {args.batch}, best of {args.repeat}")
    print(f"{'target':8} {'layer':24} {'bits':8} {'legal B':>8} {'evals/cpu-s':>12} {'evals/wall-s':>12}")
    for target in ("eyeriss", "simba"):
        arch = load_target(target)
        for name, problem in LAYERS.items():
            for bits in (Bits(), Bits.parse("w4a8")):
                arrays = legal_mappings(arch, problem, args.batch, bits)
                evaluate_batch(arch, problem, arrays, bits)  # warm-up
                best_cpu = best_wall = float("inf")
                for _ in range(args.repeat):
                    c0, t0 = time.process_time(), time.perf_counter()
                    evaluate_batch(arch, problem, arrays, bits)
                    best_cpu = min(best_cpu, time.process_time() - c0)
                    best_wall = min(best_wall, time.perf_counter() - t0)
                label = "stock" if bits == Bits() else str(bits)
                print(f"{target:8} {name:24} {label:8} {arrays.batch:8d} {arrays.batch / best_cpu:12,.0f} "
                      f"{arrays.batch / best_wall:12,.0f}")


if __name__ == "__main__":
    main()
