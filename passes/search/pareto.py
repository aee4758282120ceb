"""The co-search's outputs: `pareto.json` (the front, the chosen point, references) and a plot.

`pareto.json` (version 1): `points` holds every non-dominated configuration (energy or EDP,
packed weight bytes, accuracy) with its per-layer bits in the `--bits-file` format, `chosen` the
index of the lowest-cost point meeting the accuracy constraint (null when none does),
`reference_w8a8` the uniform 8-bit point and `float_accuracy` the float model's on the same
(validation) data; `ablation` compares the chosen bits re-mapped against the w8a8 mappings kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PARETO_JSON = "pareto.json"
PARETO_PLOT = "pareto.png"
VERSION = 1


def point_json(result, point, chosen: bool = False) -> dict[str, Any]:
    space = result.space
    return {
        "label": point.config.label(),
        "scheme": point.config.scheme,
        "energy_pj": point.energy_pj,
        "cycles": point.cycles,
        "edp": point.edp,
        "weight_bytes": point.weight_bytes,
        "accuracy": point.accuracy,
        "feasible": point.feasible,
        "chosen": chosen,
        "bits": space.bits_file(point.config),
        "layer_bits": [
            {"layer": layer.name, "weights": w, "inputs": i, "outputs": o}
            for layer, (w, i, o) in zip(space.layers, space.layer_bits(point.config))
        ],
    }


def build_pareto(result, *, model: str, extra: dict | None = None) -> dict[str, Any]:
    """The JSON document of a `SearchResult` (`extra` adds e.g. the chosen point's test accuracy)."""
    options = result.options
    points = [point_json(result, p, p is result.chosen) for p in result.front]
    chosen = next((i for i, p in enumerate(result.front) if p is result.chosen), None)
    best = result.best_accuracy
    return {
        "version": VERSION,
        "model": model,
        "target": result.target_name,
        "objective": options.objective,
        "accuracy_metric": result.accuracy_metric,
        "max_accuracy_drop_pp": options.max_accuracy_drop,
        "float_accuracy": result.float_accuracy,
        "search": {
            "population": options.population,
            "generations": options.generations,
            "phases": ["qat" if qat_on else "ptq" for qat_on in options.phases],  # each of `generations`
            "generations_run": result.generations_run,
            "seed": options.seed,
            "bits": list(result.space.widths),
            "schemes": list(result.space.schemes),
            "evaluated": len(result.archive),
            "seconds": result.seconds,
            "mapper": {
                "lookups": result.mapper.lookups,
                "cache_hits": result.mapper.cache_hits,
                "cache_hit_rate": result.mapper.hit_rate,
                "mapped": result.mapper.mapped,
                "seconds": result.mapper.seconds,
            },
        },
        "layers": [layer.name for layer in result.space.layers],
        "reference_w8a8": point_json(result, result.reference),
        "best_accuracy": point_json(result, best, best is result.chosen),
        "chosen": chosen,
        "points": points,
        "ablation": result.ablation,
        "synergy": result.synergy,
        **(extra or {}),
    }


def write_pareto(out_dir: str | Path, data: dict[str, Any], result) -> dict[str, Path]:
    """Write `pareto.json` and `pareto.png` into `out_dir` (created if missing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / PARETO_JSON
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    plot_path = write_pareto_plot(out_dir / PARETO_PLOT, result, model=str(data.get("model", "")))
    return {"pareto_json": json_path, "pareto_plot": plot_path}


#: x axes spanning more than this ratio are drawn in log scale (one outlier would squash the rest)
LOG_X_RATIO = 20.0
#: points this many percentage points below the accuracy limit (and the w8a8 reference) are clipped
ACCURACY_WINDOW_PP = 15.0


def pareto_figure(result, model: str = ""):
    """Energy (or EDP / latency) against accuracy; weight memory as colour and marker size.

    Readable with outliers: a cost axis spanning more than `LOG_X_RATIO` is logarithmic, and points
    far below the accuracy limit are drawn on the bottom edge (▼, counted in the legend) instead of
    stretching the accuracy axis. The chosen point is labelled with its figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objective = result.options.objective
    scale, unit = {"energy": (1e6, "energy (µJ)"), "edp": (1.0, "EDP (pJ·cycles)"), "latency": (1.0, "latency (cycles)")}[
        objective
    ]
    limit = 100 * result.float_accuracy - result.options.max_accuracy_drop
    ref = result.reference
    bottom = max(0.0, math.floor(min(limit, 100 * ref.accuracy) - ACCURACY_WINDOW_PP))

    def xy(points):
        return [p.cost(objective) / scale for p in points], [max(100 * p.accuracy, bottom) for p in points]

    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    inside = [p for p in result.archive if 100 * p.accuracy >= bottom]
    below = [p for p in result.archive if 100 * p.accuracy < bottom]
    ax.scatter(*xy(inside), s=10, c="0.8", label="evaluated", zorder=1)
    if below:
        ax.scatter(*xy(below), s=18, c="0.6", marker="v", zorder=1, clip_on=False,
                   label=f"{len(below)} below {bottom:g}% (drawn on the edge)")
    front = result.front
    kib = [p.weight_bytes / 1024 for p in front]
    top = max(kib) if kib else 1.0
    sc = ax.scatter(*xy(front), c=kib, s=[30 + 170 * k / top for k in kib], cmap="viridis", edgecolors="k",
                    linewidths=0.4, label="Pareto front", zorder=3, clip_on=False)
    fig.colorbar(sc, ax=ax, label="packed weight memory (KiB)")
    ax.scatter(*xy([ref]), marker="*", s=220, c="tab:red", edgecolors="k", label="uniform w8a8", zorder=4)
    if result.chosen is not None:
        c = result.chosen
        (cx,), (cy,) = xy([c])
        ax.scatter([cx], [cy], s=320, facecolors="none", edgecolors="tab:orange", linewidths=2.5, label="chosen", zorder=5)
        ax.annotate(f"chosen: {cx:.4g} {unit.split(' (')[1].rstrip(')')}, {100 * c.accuracy:.1f}%", (cx, cy),
                    xytext=(14, -22), textcoords="offset points", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "tab:orange"})
    ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1,
               label=f"float − {result.options.max_accuracy_drop:g} pp")
    costs = [p.cost(objective) for p in result.archive if p.cost(objective) > 0]
    if costs and max(costs) / min(costs) > LOG_X_RATIO:
        ax.set_xscale("log")
    metric = "top-1 accuracy" if result.accuracy_metric == "top1" else "top-1 agreement with float"
    ax.set_xlabel(unit + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(f"{metric} on validation data (%)")
    what = f"{model} on {result.target_name}" if model else result.target_name
    ax.set_title(f"Bit-width co-search, {what}, {objective}: {len(front)} Pareto points of {len(result.archive)}",
                 fontsize=10)
    ax.set_ylim(bottom, 100.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_pareto_plot(path: Path, result, model: str = "") -> Path:
    pareto_figure(result, model).savefig(path, dpi=120)
    return path
