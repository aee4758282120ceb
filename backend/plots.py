"""PNG plots of a report: per-layer energy stacked by level, and the energy share by data space.

Layers run down the y axis (horizontal bars) and the figure grows with the layer count, so every layer
label stays readable for networks of 50+ layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENERGY_BY_LEVEL = "energy_by_level.png"
ENERGY_BY_DATASPACE = "energy_by_dataspace.png"
_DATASPACE_ORDER = ("Weights", "Inputs", "Outputs", "compute", "leakage")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _layer_axis_height(n: int) -> float:
    return max(3.0, 0.24 * n + 1.6)


def _stacked_barh(ax, names: list[str], series: dict[str, np.ndarray], colors) -> None:
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for (label, values), color in zip(series.items(), colors):
        ax.barh(y, values, left=left, label=label, color=color, height=0.75)
        left += values
    ax.set_yticks(y, names, fontsize=8 if len(names) < 40 else 7)
    ax.invert_yaxis()
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _series(layers: list[dict], key: str, order: list[str]) -> dict[str, np.ndarray]:
    return {name: np.array([layer[key].get(name, 0.0) for layer in layers]) for name in order}


def plot_energy_by_level(report: dict, path: Path, level_order: list[str]) -> Path:
    plt = _pyplot()
    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    levels = [lvl for lvl in level_order if any(lvl in layer["energy_by_level_pj"] for layer in layers)]
    series = {k: v / 1e6 for k, v in _series(layers, "energy_by_level_pj", levels).items()}
    fig, ax = plt.subplots(figsize=(10, _layer_axis_height(len(names))), layout="constrained")
    _stacked_barh(ax, names, series, plt.cm.tab10.colors)
    ax.set_xlabel("energy (µJ)")
    ax.set_ylabel("layer")
    target = report["target"]["name"]
    total = report["total"]["energy_pj"] / 1e6
    ax.set_title(f"Energy per layer by storage level — {target}, total {total:.4g} µJ")
    ax.legend(title="level", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_energy_by_dataspace(report: dict, path: Path) -> Path:
    plt = _pyplot()
    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    totals = report["total"]["energy_by_dataspace_pj"]
    parts = [ds for ds in _DATASPACE_ORDER if totals.get(ds, 0.0) > 0]
    colors = dict(zip(_DATASPACE_ORDER, plt.cm.Set2.colors))
    fig, (pie_ax, bar_ax) = plt.subplots(
        1, 2, figsize=(12, _layer_axis_height(len(names))), width_ratios=[1, 1.6], layout="constrained"
    )
    values = [totals[ds] for ds in parts]
    share = [100.0 * v / sum(values) for v in values]
    wedges, _, _ = pie_ax.pie(values, autopct=lambda pct: f"{pct:.1f}%" if pct >= 3 else "",
                              colors=[colors[ds] for ds in parts], startangle=90, counterclock=False)
    pie_ax.legend(wedges, [f"{ds} ({pct:.1f}%)" for ds, pct in zip(parts, share)], loc="upper center",
                  bbox_to_anchor=(0.5, 0.0), fontsize=8)
    pie_ax.set_title(f"Network energy share by data space\n(total {report['total']['energy_pj'] / 1e6:.4g} µJ)")
    raw = _series(layers, "energy_by_dataspace_pj", parts)
    layer_total = np.maximum(sum(raw.values()), 1e-30)
    shares = {ds: 100.0 * v / layer_total for ds, v in raw.items()}
    _stacked_barh(bar_ax, names, shares, [colors[ds] for ds in parts])
    bar_ax.set_xlim(0, 100)
    bar_ax.set_xlabel("share of the layer's energy (%)")
    bar_ax.set_ylabel("layer")
    bar_ax.set_title(f"Energy share by data space per layer — {report['target']['name']}")
    bar_ax.legend(title="data space", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(out_dir: Path, report: dict, level_order: list[str]) -> list[Path]:
    out_dir = Path(out_dir)
    return [
        plot_energy_by_level(report, out_dir / ENERGY_BY_LEVEL, level_order),
        plot_energy_by_dataspace(report, out_dir / ENERGY_BY_DATASPACE),
    ]
