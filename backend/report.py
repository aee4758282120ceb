"""``report.json``: per-layer and network energy (by level and by data space), cycles, utilization,
weight memory and bits; host ops; plus whatever extra reports the driver passes (e.g. the search's
Pareto front) under their own keys.

Totals are sums over layers (layers run one after another). A layer's weight bytes are what it takes in
``weights.bin``: packed weight words plus its int32 bias (padded to a word); so ``total.weight_bytes`` is
the size of ``weights.bin``. Energy "by level" puts MAC energy under level ``MAC`` and adds a level's
leakage to it; "by data space" has ``Weights``, ``Inputs``, ``Outputs``, ``compute`` (MACs) and
``leakage``. ``target.area`` is the target's area per level, for the MACs and in total (mm²,
``targets/area.py``); ``total`` has the latency (s, cycles through the clock), the area (mm²) and
the performance per area (GMAC/s/mm², ``targets/ppa.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from quantloop.version import __version__
from quantloop.backend.layers import LayerRecord
from quantloop.backend.schedule import energy_breakdown
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch
from quantloop.targets.area import target_area
from quantloop.targets.ppa import ppa

REPORT_VERSION = 1
CORE_KEYS = ("version", "quantloop_version", "command_line", "target", "total", "layers", "host_ops", "plots")


def layer_weight_bytes(manifest: dict) -> dict[str, int]:
    out = {}
    for entry in manifest["layers"]:
        size = entry["length"]
        bias = entry.get("bias")
        if bias:
            word_bytes = entry["word_bits"] // 8
            size += -(-bias["length"] // word_bytes) * word_bytes
        out[entry["name"]] = size
    return out


def _sum_into(total: dict[str, float], parts: dict[str, float]) -> None:
    for key, value in parts.items():
        total[key] = total.get(key, 0.0) + value


def layer_report(record: LayerRecord, weight_bytes: int) -> dict:
    by_level: dict[str, float] = {}
    by_dataspace: dict[str, float] = {}
    for level, parts in energy_breakdown(record).items():
        by_level[level] = sum(parts.values())
        _sum_into(by_dataspace, parts)
    c = record.cost
    o = record.operands
    return {
        "name": record.name,
        "kind": record.kind,
        "energy_pj": c.total_energy_pj,
        "cycles": c.cycles,
        "utilization": c.utilization,
        "macs": c.macs,
        "bits": {
            "weights": o["Weights"].bits,
            "inputs": o["Inputs"].bits,
            "outputs": o["Outputs"].bits,
            "scheme": o["Weights"].scheme,
        },
        "weight_bytes": weight_bytes,
        "energy_by_level_pj": by_level,
        "energy_by_dataspace_pj": by_dataspace,
        "optimal": record.optimal,
    }


def _ppa_keys(target: Arch, energy_pj: float, cycles: int, macs: int) -> dict:
    """Latency (s), area (mm²) and performance per area (GMAC/s/mm²; `targets/ppa.py`)."""
    p = ppa(target, energy_pj, cycles, macs)
    return {"latency_s": p.latency_s, "area_mm2": p.area_mm2, "perf_per_area_gmacs_per_mm2": p.perf_per_area}


def build_report(
    records: Sequence[LayerRecord],
    target: Arch,
    manifest: dict,
    host_ops: list[dict],
    command_line: str,
    plots: list[str],
    extra_reports: dict | None = None,
) -> dict:
    weight_bytes = layer_weight_bytes(manifest)
    layers = [layer_report(r, weight_bytes.get(r.name, 0)) for r in records]
    by_level: dict[str, float] = {}
    by_dataspace: dict[str, float] = {}
    for layer in layers:
        _sum_into(by_level, layer["energy_by_level_pj"])
        _sum_into(by_dataspace, layer["energy_by_dataspace_pj"])
    cycles = sum(layer["cycles"] for layer in layers)
    macs = sum(layer["macs"] for layer in layers)
    report = {
        "version": REPORT_VERSION,
        "quantloop_version": __version__,
        "command_line": command_line,
        "target": {"name": target.name, "content_hash": target.content_hash, "pe_count": target.pe_count,
                   "area": target_area(target).to_json(), "clock_mhz": target.compute.clock_mhz,
                   "pe_type": target.compute.pe_type},
        "total": {
            "energy_pj": sum(layer["energy_pj"] for layer in layers),
            "cycles": cycles,
            "macs": macs,
            "utilization": macs / (cycles * target.pe_count) if cycles else 0.0,
            "weight_bytes": sum(layer["weight_bytes"] for layer in layers),
            **_ppa_keys(target, sum(layer["energy_pj"] for layer in layers), cycles, macs),
            "energy_by_level_pj": by_level,
            "energy_by_dataspace_pj": by_dataspace,
        },
        "layers": layers,
        "host_ops": host_ops,
        "plots": plots,
    }
    for key, value in (extra_reports or {}).items():
        if key in CORE_KEYS:
            raise ValueError(f"report.json: extra report {key!r} would overwrite a core entry")
        report[key] = value
    return report


def write_report(out_dir: Path, report: dict) -> Path:
    path = Path(out_dir) / "report.json"
    path.write_text(json.dumps(report, indent=1, default=_jsonable))
    return path


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report.json: cannot store a {type(value).__name__}")


def read_report(out_dir: Path) -> dict:
    path = Path(out_dir) / "report.json"
    if Path(out_dir).is_file():
        raise QuantloopError(f"{out_dir}: is a file; pass the output folder of `quantloop compile`")
    from quantloop.files import load_json

    if not (path.exists() or path.is_symlink()):
        raise QuantloopError(f"{path}: not found; pass the output folder of `quantloop compile`")
    report = load_json(path, "report")
    if not isinstance(report, dict) or report.get("version") != REPORT_VERSION:
        raise QuantloopError(f"{path}: not a quantloop report of version {REPORT_VERSION}")
    _validate(report, path)
    return report


def _validate(report: dict, path: Path) -> None:
    """Check `report` against report.schema.json (what `quantloop report` reads); the first problem is an error."""
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("quantloop.backend").joinpath("report.schema.json").read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(report))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise QuantloopError(f"{path}: not a valid report at {where}: {error.message[:200]}")
