"""One design point: a full compile on its target (the cached mapper maps every layer) and, where
labelled data is given, the top-1 accuracy of its exact fake-quant model in onnxruntime.

The figures are the compile's own (`CompileResult.ppa`), so a point equals a separate `quantloop
compile` of it. Accuracy depends only on the bits and scheme, so it is cached per process.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantloop.explore.space import DesignPoint


@dataclass(frozen=True)
class EvalSettings:
    """What every point of a sweep shares (picklable: it travels to Dask workers)."""

    model: str
    data: str | None = None  # calibration data
    val_data: str | None = None  # labelled data for accuracy
    objective: str = "energy"
    cache_dir: str | None = None
    use_cache: bool = True


def compile_options(point: DesignPoint, settings: EvalSettings):
    """The compile of one point; a float point (float PEs) runs the float model: nothing to calibrate."""
    from quantloop.bits import FLOAT_SCHEME
    from quantloop.options import CompileOptions

    data = None if point.scheme == FLOAT_SCHEME else settings.data
    return CompileOptions(target=point.target, bits=point.bits, weight_scheme=point.scheme, data=data,
                          objective=settings.objective, cache_dir=settings.cache_dir, use_cache=settings.use_cache)


_ACCURACY: dict[tuple[EvalSettings, str, str], float] = {}
"""Top-1 per (settings, bits, scheme) in this process: the hardware does not change the numerics."""


def _accuracy(settings: EvalSettings, point: DesignPoint, qnn_module) -> float:
    from quantloop.runtime.accuracy import top1
    from quantloop.runtime.dataset import load_dataset
    from quantloop.runtime.fakequant_export import export_fakequant_onnx

    key = (settings, point.bits, point.scheme)
    if key not in _ACCURACY:
        x, y = load_dataset(settings.val_data)
        _ACCURACY[key] = top1(export_fakequant_onnx(qnn_module), x, y)
    return _ACCURACY[key]


def evaluate_point(point: DesignPoint, settings: EvalSettings) -> dict:
    """The point's energy (pJ), cycles, latency (s), area (mm²), performance per area and accuracy."""
    from quantloop.driver import compile as compile_model
    from quantloop.progress import Progress

    result = compile_model(settings.model, compile_options(point, settings), progress=Progress())
    p = result.ppa
    row = {**point.to_json(), "label": point.label, "pe_type": p.pe_type, "energy_pj": p.energy_pj, "cycles": p.cycles,
           "macs": p.macs, "latency_s": p.latency_s, "area_mm2": p.area_mm2, "clock_mhz": p.clock_mhz,
           "perf_per_area_gmacs_per_mm2": p.perf_per_area, "pe_count": result.target.pe_count}
    row["accuracy"] = _accuracy(settings, point, result.qnn_module) if settings.val_data else None
    return row
