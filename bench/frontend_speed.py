"""Time the frontend on MobileNetV2 and ResNet-18: import, canonicalize, print, parse, export.

Run: python bench/frontend_speed.py [--repeat 3]. Prints the best of `repeat` runs per step.
The target: import + canonicalize of MobileNetV2 under 1 s.
"""

from __future__ import annotations

import argparse
import time

from quantloop.frontend import export_onnx, import_onnx
from quantloop.frontend.onnx_load import load_model
from quantloop.frontend.zoo import load_zoo_model
from quantloop.ir import make_context, parse_module, print_module
from quantloop.passes.canonicalize import CanonicalizePass


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench(spec: str, repeat: int) -> dict[str, float]:
    model = load_zoo_model(spec)
    ctx = make_context()
    times: dict[str, float] = {}
    times["load+check+infer"], _ = _best(lambda: load_model(model), repeat)
    times["import"], _ = _best(lambda: import_onnx(model), repeat)

    def import_and_canonicalize():
        module = import_onnx(model)
        CanonicalizePass().apply(ctx, module)
        return module

    times["import+canonicalize"], module = _best(import_and_canonicalize, repeat)
    times["canonicalize"] = times["import+canonicalize"] - times["import"]
    times["print (elided)"], _ = _best(lambda: print_module(module), repeat)
    times["parse (elided)"], _ = _best(lambda: parse_module(print_module(module), spec), repeat)
    times["print (full weights)"], text = _best(lambda: print_module(module, elide_weights_over=None), repeat)
    times["parse (full weights)"], _ = _best(lambda: parse_module(text, spec), repeat)
    times["export_onnx"], _ = _best(lambda: export_onnx(module), repeat)
    ops = sum(1 for _ in module.walk())
    print(f"{spec}: {ops} ops after canonicalize, {len(text) / 1e6:.1f} MB of text with full weights")
    for step, seconds in times.items():
        print(f"  {step:<22} {seconds * 1000:8.1f} ms")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {spec: bench(spec, args.repeat) for spec in ("zoo:mobilenet_v2", "zoo:resnet18")}
    mnv2 = results["zoo:mobilenet_v2"]["import+canonicalize"]
    verdict = "OK" if mnv2 < 1.0 else "TOO SLOW"
    print(f"MobileNetV2 import + canonicalize: {mnv2:.3f} s (limit 1 s): {verdict}")


if __name__ == "__main__":
    main()
