"""`quantloop compile --synergy`: the saving against uniform w8a8 of a compile at other bits, decomposed
(`passes.search.synergy`), in report.json and on stdout; its parts add up to the total."""

from __future__ import annotations

import json

import pytest

from quantloop.cli import main
from quantloop.passes.search.synergy import METRICS, PARTS, percent


def test_compile_reports_the_decomposition(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "--bits", "w4a8", "--synergy", "-o", str(out),
                 "--emit", "report"]) == 0
    stdout = capsys.readouterr().out
    synergy = json.loads((out / "report.json").read_text())["synergy"]
    for metric in METRICS:
        parts = synergy["parts"][metric]
        assert sum(parts[p] for p in PARTS) == pytest.approx(parts["total"], abs=1e-12)
        w8a8, remapped = synergy["states"]["w8a8"][metric], synergy["states"]["remapped"][metric]
        assert parts["total"] == pytest.approx((w8a8 - remapped) / w8a8, abs=1e-12)
        assert parts["noise_floor"] >= 0.0
    energy = synergy["parts"]["energy_pj"]
    assert energy["total"] > 0.0 and energy["packing"] > 0.0  # 4-bit weights pack twice as many per word
    assert energy["remapping"] >= -1e-12  # warm-started from the kept w8a8 mapping
    dram = next(t for t in synergy["traffic"] if t["level"] == "DRAM")
    assert dram["remapped_words"] >= dram["compulsory_words"] > 0
    assert "saving against w8a8, decomposed" in stdout
    assert f"energy_pj saved {percent(energy['total'], width=6)} %" in stdout


def test_off_by_default(tmp_path):
    import quantloop

    result = quantloop.compile("zoo:cnn_digits", target="eyeriss", bits="w4a8")
    assert result.synergy is None and "synergy" not in result.to_json()


def test_percent_never_prints_negative_zero():
    assert percent(-1e-9) == "0.00"
    assert percent(-1e-9, 1) == "0.0"
    assert percent(-0.5) == "-50.00"


def test_search_summary_never_prints_minus_zero_and_the_decomposition_replaces_the_ablation_line():
    import io

    from rich.console import Console

    from quantloop.cosearch import print_search_summary

    point = {"label": "w4a8", "energy_pj": 1e6, "weight_bytes": 10, "accuracy": 0.99}
    ablation = {"saving_vs_w8a8": 0.3, "remapping_share_of_saving": -1e-9, "fixed_w8a8_mapping_energy_pj": 1e6}
    document = {"chosen": 0, "points": [point], "reference_w8a8": {"energy_pj": 1.4e6}, "ablation": ablation,
                "accuracy_metric": "top1", "search": {"evaluated": 5}, "float_accuracy": 0.99,
                "data": {"validation": "zoo:digits-val"}}

    def printed(doc: dict) -> str:
        buffer = io.StringIO()
        print_search_summary(Console(file=buffer, width=200, color_system=None), doc)
        return buffer.getvalue()

    text = printed(document)
    assert "re-mapping bought 0.0 % of the saving" in text and "-0.0" not in text
    parts = {"mac_energy": 0.1, "packing": 0.2, "remapping": -1e-9, "total": 0.3, "noise_floor": 0.0}
    synergy = {"parts": {m: parts for m in METRICS}, "traffic": []}
    text = printed({**document, "synergy": synergy})
    assert "bought" not in text and "re-mapping   0.00 %" in text and "-0.00" not in text


@pytest.mark.slow
def test_search_names_the_model_and_decomposes_the_chosen_point_once(tmp_path, capsys, monkeypatch):
    """`compile --search --synergy`: the result (table and plots) is titled after the model, not
    "model", and the chosen point's decomposition is computed (and printed) once, by the search."""
    from quantloop.passes.search import synergy

    calls = []
    original = synergy.decompose
    monkeypatch.setattr(synergy, "decompose", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = tmp_path / "out"
    assert main(["compile", "zoo:cnn_digits", "--target", "eyeriss", "--search", "--population", "4",
                 "--generations", "1", "--bits-range", "4,8", "--synergy", "-o", str(out), "--emit", "report",
                 "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    stdout = capsys.readouterr().out
    assert len(calls) == 1
    assert stdout.count("saving against w8a8, decomposed") == 1
    assert "zoo:cnn_digits on eyeriss, searched bits (energy)" in stdout and "model on eyeriss" not in stdout


def test_the_compiled_points_decomposition_is_the_one_of_the_point_compiled():
    """--search --synergy hands over the search's decomposition: of the QAT'd point `qat-front` chose, else of
    the search's chosen point (QAT in the loop, whose summary has none of its own, chose that very point)."""
    from quantloop.cosearch import search_decomposition

    search, front = {"of": "search's chosen"}, {"of": "qat-front's chosen"}
    assert search_decomposition({"synergy": search}) is search
    assert search_decomposition({"synergy": search, "qat": {"chosen": {"label": "w4a4"}, "synergy": front}}) is front
    assert search_decomposition({"synergy": search, "qat": {"mode": "loop", "chosen": {"label": "w4a4"}}}) is search
    assert search_decomposition({"synergy": search, "qat": {"chosen": None, "synergy": None}}) is search
