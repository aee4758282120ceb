"""The sweep's figure, as QUIDAM's (paper 004): performance per area against energy, one colour per
PE type, the Pareto front ringed."""

from __future__ import annotations

from pathlib import Path


def write_explore_plot(path: Path, document: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, front = document["points"], set(document["front"])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    kinds = sorted({str(r["pe_type"]) for r in rows})
    colours = plt.get_cmap("tab10")
    for k, kind in enumerate(kinds):
        mine = [r for r in rows if str(r["pe_type"]) == kind]
        ax.scatter([r["energy_pj"] / 1e6 for r in mine], [r["perf_per_area_gmacs_per_mm2"] or 0 for r in mine],
                   s=22, color=colours(k), label=kind, alpha=0.85)
    on_front = [rows[i] for i in sorted(front)]
    ax.scatter([r["energy_pj"] / 1e6 for r in on_front], [r["perf_per_area_gmacs_per_mm2"] or 0 for r in on_front],
               s=90, facecolors="none", edgecolors="black", linewidths=1.2, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (µJ)")
    ax.set_ylabel("performance per area (GMAC/s/mm²)")
    objectives = ", ".join(k.removesuffix("_pj").removesuffix("_s").removesuffix("_mm2") for k, _ in document["objectives"])
    ax.set_title(f"{document['model']} on {document['target']}: {len(rows)} designs (front over {objectives})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
