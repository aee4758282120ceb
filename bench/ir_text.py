"""Time building, verifying, printing and parsing a qnn module of MobileNetV2's size.

52 convolutions holding 3.5 M float32 weights in total (MobileNetV2's count), chained so the
module verifies. Prints seconds per step; the in-memory steps must stay far below the 1 s that
import + canonicalize of MobileNetV2 may take.
"""

from __future__ import annotations

import time

import numpy as np
from xdsl.dialects.builtin import TensorType, f32

from quantloop.ir.qnn import ConstantOp, Conv2dOp, MainBuilder, parse_module, print_module


def build(total_weights: int = 3_500_000, layers: int = 52):
    per_layer = total_weights // layers
    channels = int(np.sqrt(per_layer / 9))
    rng = np.random.default_rng(0)
    b = MainBuilder([TensorType(f32, [1, channels, 14, 14])])
    x = b.args[0]
    for i in range(layers):
        w = b.add(ConstantOp(rng.standard_normal((channels, channels, 3, 3), dtype=np.float32), name=f"w{i}"))
        x = b.add(Conv2dOp(x, w, pads=(1, 1, 1, 1), act="relu", name=f"conv{i}"))
    return b.finish([x]), layers * channels * channels * 9


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:32s} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    module, count = timed("build (numpy arrays kept)", build)
    print(f"{'weights':32s} {count:8d}")
    timed("verify", module.verify)
    elided = timed("print, weights elided", lambda: print_module(module))
    full = timed("print, full weights", lambda: print_module(module, elide_weights_over=None))
    print(f"{'text size full / elided (MB)':32s} {len(full) / 1e6:8.1f} / {len(elided) / 1e6:.3f}")
    timed("parse, weights elided", lambda: parse_module(elided))
    timed("parse, full weights", lambda: parse_module(full))


if __name__ == "__main__":
    main()
