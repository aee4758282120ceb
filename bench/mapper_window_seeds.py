"""The sampled search's window-order seeds (`mapper.search._try_window_orders`): mapper CPU time and
energy of MobileNetV2 3×3 layers on Eyeriss and Simba at w8a8, with and without them, seeds 0..2.

    python bench/mapper_window_seeds.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

from quantloop.costmodel.model import evaluate  # noqa: E402
from quantloop.mapper import search as S  # noqa: E402
from quantloop.problem import Bits, Problem  # noqa: E402
from quantloop.targets.registry import load_target  # noqa: E402

LAYERS = {
    # MobileNetV2: the stem (3×3 stride 2, 3 → 32 at 224) and a block-3 depthwise 3×3 over 144 channels
    "mbv2_stem_C3_M32_P112_s2": Problem(C=3, M=32, P=112, Q=112, R=3, S=3, Wstride=2, Hstride=2),
    "mbv2_dw3x3_G144_P56": Problem(G=144, P=56, Q=56, R=3, S=3),
}


def run(with_seeds: bool) -> dict:
    saved = S._try_window_orders
    if not with_seeds:
        S._try_window_orders = lambda *args: None
    out = {}
    try:
        for target in ("eyeriss", "simba"):
            arch = load_target(target)
            for name, problem in LAYERS.items():
                for seed in range(3):
                    t0 = time.process_time()
                    found = S.search(arch, problem, Bits(8, 8, 8), "energy", seed=seed)
                    cpu = time.process_time() - t0
                    energy = evaluate(arch, problem, found.arrays.mapping(0), Bits(8, 8, 8)).total_energy_pj
                    out[(target, name, seed)] = (cpu, energy, found.considered)
    finally:
        S._try_window_orders = saved
    return out


def main() -> None:
    off, on = run(False), run(True)
    print(f"{'target':8} {'layer':26} seed {'cpu-s off':>9} {'cpu-s on':>9} {'energy off (pJ)':>16} {'energy on (pJ)':>16} {'on/off':>8}")
    for key in off:
        (c0, e0, _), (c1, e1, _) = off[key], on[key]
        print(f"{key[0]:8} {key[1]:26} {key[2]:4} {c0:9.2f} {c1:9.2f} {e0:16.6e} {e1:16.6e} {e1 / e0:8.4f}")
    c0, c1 = sum(v[0] for v in off.values()), sum(v[0] for v in on.values())
    e0, e1 = sum(v[1] for v in off.values()), sum(v[1] for v in on.values())
    print(f"total: cpu {c0:.2f} s -> {c1:.2f} s, energy {e0:.6e} -> {e1:.6e} pJ ({e1 / e0:.4f}); "
          f"better {sum(on[k][1] < off[k][1] for k in off)}, worse {sum(on[k][1] > off[k][1] for k in off)} of {len(off)}")


if __name__ == "__main__":
    main()
