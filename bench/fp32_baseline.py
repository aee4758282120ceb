"""The FP32 baseline against the integer and LightPE designs (issue 15, QUIDAM's four PE types).

Compiles one model on the default Eyeriss geometry (14x12 PEs, 128 KiB global buffer) with each PE type at its
native bits (int8 w8a8, int16 w16a16, LightPE-1 w4a8 pot, LightPE-2 w8a8 pot2, FP32 w32a32 float: the float
model, unquantized) and prints energy, latency, area, performance per area and top-1 on the digits test split,
then INT16 against FP32 next to QUIDAM's "INT16 achieves 1.8x more performance per area and 1.5x less energy
on average than the best FP32 configuration" (paper 004, §4.3).

    python bench/fp32_baseline.py [--model zoo:cnn_digits] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

PE_TYPES = ("int8", "int16", "lightpe1", "lightpe2", "fp32")


def main() -> None:
    import quantloop
    from quantloop.explore.space import native_bits
    from quantloop.frontend.zoo import load_zoo_model
    from quantloop.runtime.accuracy import top1
    from quantloop.runtime.dataset import load_dataset
    from quantloop.runtime.fakequant_export import export_fakequant_onnx
    from quantloop.targets.registry import load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:cnn_digits")
    parser.add_argument("--cache-dir", default=None, help="mapper cache (default: a fresh temporary folder)")
    args = parser.parse_args()
    x, y = load_dataset("zoo:digits-test")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        for pe in PE_TYPES:
            target = f"eyeriss?pe_type={pe}"
            bits, scheme = native_bits(load_target(target))
            is_float = load_target(target).compute.float_only
            result = quantloop.compile(args.model, target=target, bits=bits, weight_scheme=scheme, cache_dir=cache,
                                       data=None if is_float else "zoo:digits-calib")
            p = result.ppa
            accuracy = top1(export_fakequant_onnx(result.qnn_module), x, y)
            rows[pe] = p
            label = bits if scheme == "int" else f"{bits}:{scheme}"
            print(f"{pe:9s} {label:13s} energy {p.energy_pj / 1e6:8.3f} µJ  "
                  f"latency {p.latency_s * 1e3:7.4f} ms  area {p.area_mm2:6.2f} mm²  "
                  f"{p.perf_per_area:7.4f} GMAC/s/mm²  test top-1 {100 * accuracy:6.2f} %")
    print(f"float model: test top-1 {100 * top1(load_zoo_model(args.model), x, y):6.2f} %"
          if args.model.startswith("zoo:") else "")
    int16, fp32 = rows["int16"], rows["fp32"]
    print(f"INT16 vs FP32 on {args.model}: {int16.perf_per_area / fp32.perf_per_area:.2f}x performance per area, "
          f"{fp32.energy_pj / int16.energy_pj:.2f}x less energy (QUIDAM, averaged over its workloads: 1.8x and 1.5x)")


if __name__ == "__main__":
    main()
