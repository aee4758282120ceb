"""Plots of a compile with no accelerator layer (only host ops) are written, not a matplotlib error."""

import warnings

from quantloop.backend import plots


def test_plots_of_a_model_without_accelerator_layers(tmp_path):
    report = {"layers": [], "total": {"energy_pj": 0.0, "energy_by_dataspace_pj": {}}, "target": {"name": "eyeriss"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib: empty legends and axes
        written = plots.write_plots(tmp_path, report, ["DRAM"], "empty")
    assert all(path.is_file() and path.stat().st_size > 0 for path in written)
