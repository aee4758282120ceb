"""Time the frontend on MobileNetV2, ResNet-18, ResNet-50 and EfficientNet-B0: import, canonicalize,
print, parse, export.

Run: python bench/frontend_speed.py [--repeat 3]. Prints the best of `repeat` runs per step.
ResNet-50 and EfficientNet-B0 are the torch models of `frontend.zoo.torch_cnns` at full size
(224×224, 1000 classes), exported once with the TorchScript exporter at opset 13 (not timed).
The targets: import + canonicalize of each under 1 s.
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


def torch_model(name: str):
    import torch

    from quantloop.frontend.torch_import import torch_to_onnx
    from quantloop.frontend.zoo.torch_cnns import build

    return torch_to_onnx(build(name), torch.randn(1, 3, 224, 224), opset=13)


def bench(spec: str, repeat: int, model=None) -> dict[str, float]:
    model = load_zoo_model(spec) if model is None else model
    ctx = make_context()
    times: dict[str, float] = {}
    times["load+check+infer"], _ = _best(lambda: load_model(model), repeat)
    times["import"], _ = _best(lambda: import_onnx(model), repeat)

    def import_and_canonicalize():
        module = import_onnx(model)
        CanonicalizePass().apply(ctx, module)
        return module

    times["import+canonicalize"], module = _best(import_and_canonicalize, repeat)
    canonicalize = []
    for _ in range(repeat):  # timed on its own: a difference of two best-ofs can come out negative
        fresh = import_onnx(model)
        start = time.perf_counter()
        CanonicalizePass().apply(ctx, fresh)
        canonicalize.append(time.perf_counter() - start)
    times["canonicalize"] = min(canonicalize)
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
    for name in ("resnet50", "efficientnet_b0"):
        results[name] = bench(f"torch:{name}", args.repeat, torch_model(name))
    for label, key in (("MobileNetV2", "zoo:mobilenet_v2"), ("ResNet-50", "resnet50"), ("EfficientNet-B0", "efficientnet_b0")):
        seconds = results[key]["import+canonicalize"]
        verdict = "OK" if seconds < 1.0 else "TOO SLOW"
        print(f"{label} import + canonicalize: {seconds:.3f} s (limit 1 s): {verdict}")


if __name__ == "__main__":
    main()
