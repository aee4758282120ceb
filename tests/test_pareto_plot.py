"""The co-search's Pareto plot stays readable when one point is an outlier in energy or accuracy."""

from __future__ import annotations

from types import SimpleNamespace

from quantloop.passes.search.pareto import pareto_figure


class _Point(SimpleNamespace):
    def cost(self, objective: str) -> float:
        return self.energy_pj


def _result(points, chosen):
    return SimpleNamespace(
        options=SimpleNamespace(objective="energy", max_accuracy_drop=1.0), float_accuracy=0.95,
        reference=points[0], archive=points, front=points[1:], chosen=chosen, accuracy_metric="top1",
        target_name="eyeriss",
    )


def test_outliers_do_not_squash_the_axes_and_the_chosen_point_is_labelled():
    points = [_Point(energy_pj=e * 1e6, accuracy=a, weight_bytes=w) for e, a, w in
              [(10, 0.95, 4096), (6, 0.94, 2048), (5, 0.93, 1024), (0.2, 0.05, 256), (400, 0.95, 8192)]]
    fig = pareto_figure(_result(points, points[1]), model="zoo:cnn_digits")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 0.2 .. 400 µJ
    low, high = ax.get_ylim()
    assert 70 <= low <= 80 and high > 95  # the 5 % point is drawn on the edge, not at 5 %
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("chosen: 6 µJ, 94.0%") for t in texts), texts
    assert "zoo:cnn_digits on eyeriss" in ax.get_title()
    assert any("1 below" in t.get_text() for t in ax.get_legend().get_texts())


def test_without_outliers_the_axes_stay_linear():
    points = [_Point(energy_pj=e * 1e6, accuracy=a, weight_bytes=w) for e, a, w in
              [(10, 0.95, 4096), (6, 0.94, 2048), (5, 0.93, 1024)]]
    ax = pareto_figure(_result(points, None)).axes[0]
    assert ax.get_xscale() == "linear" and not ax.texts
