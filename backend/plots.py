"""PNG plots of a report: per-layer energy stacked by level, and the energy share by data space.

Layers run down the y axis (horizontal bars) and the figure grows with the layer count, so every layer
label stays readable for networks of 50+ layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENERGY_BY_LEVEL = "energy_by_level.png"
ENERGY_BY_DATASPACE = "energy_by_dataspace.png"
_DPI = 100
_DATASPACE_ORDER = ("Weights", "Inputs", "Outputs", "compute", "leakage")


def _figure(width: float, height: float):
    """A figure drawn by the Agg canvas directly: no pyplot (its import and global state cost seconds).

    Axes are placed with fixed margins (:func:`_axes`) instead of a layout engine, which measured
    every tick label again and took longer than the drawing itself."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _axes(fig, left: float, right: float, top: float = 0.55, bottom: float = 0.6):
    """Axes with margins in inches (left of the axes, right of it, above, below)."""
    width, height = fig.get_size_inches()
    return fig.add_axes((left / width, bottom / height, 1 - (left + right) / width, 1 - (top + bottom) / height))


def _label_margin(names: list[str]) -> float:
    """Inches for the layer names left of a horizontal bar chart (7–8 pt labels) and the axis label."""
    return 0.45 + 0.062 * max((len(n) for n in names), default=4)


def _colors(name: str):
    from matplotlib import colormaps

    return colormaps[name].colors


def _layer_axis_height(n: int) -> float:
    return max(3.0, 0.24 * n + 1.6)


def _stacked_barh(ax, names: list[str], series: dict[str, np.ndarray], colors) -> None:
    """Horizontal stacked bars, one collection per series (a patch per bar costs ~10× more to draw)."""
    from matplotlib.collections import PolyCollection

    y = np.arange(len(names), dtype=float)
    left = np.zeros(len(names))
    for (label, values), color in zip(series.items(), colors):
        right = left + values
        boxes = np.stack([np.stack([left, y - 0.375], 1), np.stack([right, y - 0.375], 1),
                          np.stack([right, y + 0.375], 1), np.stack([left, y + 0.375], 1)], 1)
        ax.add_collection(PolyCollection(boxes, facecolors=[color], edgecolors="none", label=label))
        left = right
    ax.set_xlim(0, max(float(left.max(initial=0.0)) * 1.02, 1e-12))
    ax.set_yticks(y, names, fontsize=8 if len(names) < 40 else 7)
    ax.invert_yaxis()
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _series(layers: list[dict], key: str, order: list[str]) -> dict[str, np.ndarray]:
    return {name: np.array([layer[key].get(name, 0.0) for layer in layers]) for name in order}


def plot_energy_by_level(report: dict, path: Path, level_order: list[str], title: str = "") -> Path:
    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    levels = [lvl for lvl in level_order if any(lvl in layer["energy_by_level_pj"] for layer in layers)]
    series = {k: v / 1e6 for k, v in _series(layers, "energy_by_level_pj", levels).items()}
    fig = _figure(10, _layer_axis_height(len(names)))
    ax = _axes(fig, _label_margin(names), 1.6)
    _stacked_barh(ax, names, series, _colors("tab10"))
    ax.set_xlabel("energy (µJ)")
    ax.set_ylabel("layer")
    target = report["target"]["name"]
    total = report["total"]["energy_pj"] / 1e6
    ax.set_title(f"{title or target}: energy per layer by storage level, total {total:.4g} µJ")
    ax.legend(title="level", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, dpi=_DPI)
    return path


def plot_energy_by_dataspace(report: dict, path: Path, title: str = "") -> Path:
    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    totals = report["total"]["energy_by_dataspace_pj"]
    parts = [ds for ds in _DATASPACE_ORDER if totals.get(ds, 0.0) > 0]
    colors = dict(zip(_DATASPACE_ORDER, _colors("Set2")))
    height = _layer_axis_height(len(names))
    fig = _figure(12, height)
    pie_ax = fig.add_axes((0.02, 0.45, 0.3, min(0.5, 3.4 / height)))
    bar_ax = _axes(fig, 4.2 + _label_margin(names), 1.7)
    values = [totals[ds] for ds in parts]
    if values:
        share = [100.0 * v / sum(values) for v in values]
        wedges, _, _ = pie_ax.pie(values, autopct=lambda pct: f"{pct:.1f}%" if pct >= 3 else "",
                                  colors=[colors[ds] for ds in parts], startangle=90, counterclock=False)
        pie_ax.legend(wedges, [f"{ds} ({pct:.1f}%)" for ds, pct in zip(parts, share)], loc="upper center",
                      bbox_to_anchor=(0.5, 0.0), fontsize=8)
    else:  # no layer ran on the accelerator: nothing to share out
        pie_ax.set_axis_off()
        pie_ax.text(0.5, 0.5, "no accelerator energy", ha="center", va="center")
    pie_ax.set_title(f"Network energy share by data space\n(total {report['total']['energy_pj'] / 1e6:.4g} µJ)")
    raw = _series(layers, "energy_by_dataspace_pj", parts)
    layer_total = np.maximum(sum(raw.values()), 1e-30)
    shares = {ds: 100.0 * v / layer_total for ds, v in raw.items()}
    _stacked_barh(bar_ax, names, shares, [colors[ds] for ds in parts])
    bar_ax.set_xlim(0, 100)
    bar_ax.set_xlabel("share of the layer's energy (%)")
    bar_ax.set_ylabel("layer")
    bar_ax.set_title(f"{title or report['target']['name']}: energy share by data space per layer")
    bar_ax.legend(title="data space", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, dpi=_DPI)
    return path


def write_plots(out_dir: Path, report: dict, level_order: list[str], title: str = "") -> list[Path]:
    """Both plots; `title` (model, target, bits) heads them, the target's name when empty."""
    out_dir = Path(out_dir)
    return [
        plot_energy_by_level(report, out_dir / ENERGY_BY_LEVEL, level_order, title),
        plot_energy_by_dataspace(report, out_dir / ENERGY_BY_DATASPACE, title),
    ]
