"""`quantloop compile --search`: search per-layer bits with the mapper in the loop, then compile the chosen point.

This sits beside the driver, not in passes/: it writes artefacts (the Pareto front beside the usual
ones, in the same atomic output folder) and calls the driver for the chosen bits. The search
itself is the `qnn-search-bits` pass's engine (`quantloop.passes.search`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from xdsl.dialects.builtin import ModuleOp

from quantloop.backend.artifacts import write_artifacts
from quantloop.backend.atomic import atomic_output_dir, check_output_dir
from quantloop.errors import QuantloopError, onnxruntime_failures
from quantloop.frontend import import_onnx
from quantloop.frontend.zoo.digits import packaged_data
from quantloop.ir import make_context
from quantloop.options import CompileOptions
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.search.engine import search_bits
from quantloop.passes.search.pareto import build_pareto, write_pareto
from quantloop.passes.search_bits import (
    SearchData,
    SearchSettings,
    held_out_accuracies,
    no_feasible_error,
    resolve_data,
    search_options,
)


def run_search(model: Any, options: CompileOptions | SearchSettings, *, console=None, out: TextIO | None = None,
               **keywords: Any):
    """`quantloop compile --search`: search, write the front, compile the chosen point.

    `options` is the compile's `CompileOptions` with `search` set (or, shorter, the
    `SearchSettings` alone, with the other options as keywords); the bits are chosen here.
    Returns the driver's `CompileResult` with `search` holding the pareto.json document.
    """
    started = time.perf_counter()
    if isinstance(options, SearchSettings):
        options = CompileOptions.build(search=options, **keywords)
    else:
        options = CompileOptions.build(options, **keywords)
    searched = search_model(model, options, console=console)
    compiled = compile_chosen(searched, options, out=out)
    compiled.seconds = time.perf_counter() - started
    return compiled


@dataclass
class Searched:
    """A finished search: the canonical module, its data, the result and the pareto.json document."""

    module: ModuleOp
    data: SearchData
    result: Any
    document: dict[str, Any]
    qat_model: Any = None  # --accuracy qat: the chosen point's fine-tuned QONNX model (compiled instead)
    qat_table: dict | None = None
    source: Any = None  # the model as given (path, zoo spec, ModelProto, module): names the compiled result


def search_model(model: Any, options: CompileOptions, *, console=None) -> Searched:
    """The search half of `run_search` (raises the exit-3 error after writing the front)."""
    settings = options.search
    if settings is None:
        raise QuantloopError("search_model: the options have no search settings (CompileOptions.search)")
    if not options.target:
        raise QuantloopError("--search needs --target (the energy objective maps every layer on it)")
    if options.bits_file or options.bits_table is not None:
        raise QuantloopError("--search chooses the bits itself; drop --bits-file")
    if options.output_dir is not None:
        check_output_dir(Path(options.output_dir), force=options.force)
    if options.weight_scheme != "int":
        raise QuantloopError("--search chooses the weight scheme from the target's PEs; drop --scheme")

    module = model if isinstance(model, ModuleOp) else import_onnx(model, input_shapes=dict(options.input_shapes or {}))
    module = module.clone()
    CanonicalizePass().apply(make_context(), module)
    data = resolve_data(module, packaged_data(model), options.data, settings)
    if console is None and settings.progress:
        from rich.console import Console

        console = Console(stderr=True)
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else "<model>"
    with onnxruntime_failures(model_name):  # the search's own model runs: one line naming the model
        train = (data.train_x, data.train_y) if data.train_x is not None else None
        result = search_bits(module, search_options(options), data.calib_x, data.val_x, data.val_y, console=console,
                             data_names=(data.calib_name, data.val_name), train=train)
        extra: dict[str, Any] = {"data": {"calibration": data.calib_name, "validation": data.val_name, "test": data.test_name}}
        if result.chosen is not None and data.test_x is not None:
            extra["test"] = held_out_accuracies(result, data)
    qat_model = qat_table = None
    if settings.accuracy == "qat-front":
        qat_model, qat_table, extra["qat"] = qat_choice(result, data, settings)
    elif settings.accuracy == "qat":
        qat_model, qat_table, extra["qat"] = qat_loop_choice(result, data, settings, extra.get("test"))
    document = build_pareto(result, model=model_name, extra=extra)
    if qat_model is not None:
        return Searched(module, data, result, document, qat_model, qat_table, source=model)
    if result.chosen is None:
        if options.output_dir is not None:
            with atomic_output_dir(Path(options.output_dir), options.force) as tmp:
                write_pareto(tmp, document, result)
        raise no_feasible_error(result)
    return Searched(module, data, result, document, source=model)


def qat_loop_choice(result, data: SearchData, settings: SearchSettings,
                    test: dict | None) -> tuple[Any, dict | None, dict[str, Any]]:
    """`--accuracy qat` (QAT in the loop): the search already judged candidates after QAT; when its choice
    is a QAT'd point, train it again (deterministic: the same network) for its QONNX model, its validation
    accuracy (the deployed network's; `confirmed_validation_accuracy` is the lowest over the confirming runs, the
    search's figure) and its test accuracy (which replaces the PTQ one in `test`)."""
    from quantloop.passes.search.qat import export_qonnx

    stats = result.qat.stats
    summary: dict[str, Any] = {
        "mode": "loop", "train_data": data.train_name, "epochs": settings.qat_epochs, "chosen": None,
        "fine_tuned": stats.lookups, "trained": stats.evaluated, "trainings": result.qat.trainings,
        "cache_hits": stats.cache_hits, "seconds": stats.seconds, "qat_points": sum(p.qat for p in result.archive),
    }
    point = result.chosen
    if point is None or not point.qat:
        return None, None, summary
    network = result.qat.train(point.config)
    ref = result.reference
    summary["chosen"] = {
        "label": point.config.label(), "energy_pj": point.energy_pj, "cycles": point.cycles, "edp": point.edp,
        "weight_bytes": point.weight_bytes, "validation_accuracy": network.top1(result.qat.val_x, result.qat.val_y),
        "confirmed_validation_accuracy": point.accuracy, "ptq_validation_accuracy": point.ptq_accuracy,
        "saving_vs_w8a8": {"energy": 1 - point.energy_pj / ref.energy_pj, "edp": 1 - point.edp / ref.edp},
    }
    if data.test_x is not None and data.test_y is not None:
        summary["chosen"]["test_accuracy"] = network.top1(data.test_x, data.test_y)
        if test is not None:
            test["ptq_chosen_accuracy"] = test["chosen_accuracy"]
            test["chosen_accuracy"] = summary["chosen"]["test_accuracy"]
    return export_qonnx(network), result.bits_file(point), summary


def qat_choice(result, data: SearchData, settings: SearchSettings) -> tuple[Any, dict | None, dict[str, Any]]:
    """`--accuracy qat-front`: fine-tune the front in cost order (`passes.search.qat.qat_front`); the chosen
    point's QONNX model, its bits table and the summary for pareto.json (with its decomposition)."""
    from quantloop.passes.search.engine import decompose_chosen
    from quantloop.passes.search.qat import export_qonnx, qat_front

    choice = qat_front(result, data.calib_x, data.val_x, data.val_y, data.train_x, data.train_y,
                       epochs=settings.qat_epochs, seed=settings.seed)
    summary: dict[str, Any] = {"mode": "front", "train_data": data.train_name, "epochs": settings.qat_epochs,
                               "tried": choice.tried, "chosen": None}
    if choice.chosen is None:
        return None, None, summary
    point, ref = choice.chosen, result.reference
    chosen = {
        "label": point.config.label(), "energy_pj": point.energy_pj, "cycles": point.cycles, "edp": point.edp,
        "weight_bytes": point.weight_bytes, "validation_accuracy": choice.tried[-1]["qat_accuracy"],
        "saving_vs_w8a8": {"energy": 1 - point.energy_pj / ref.energy_pj, "edp": 1 - point.edp / ref.edp},
    }
    if data.test_x is not None and data.test_y is not None:
        chosen["test_accuracy"] = choice.network.top1(data.test_x, data.test_y)
    summary["chosen"] = chosen
    summary["synergy"] = decompose_chosen(result.energy_model, result.space, point, result.cache, result.options.seed)
    return export_qonnx(choice.network), result.bits_file(point), summary


def compile_chosen(searched: Searched, options: CompileOptions, *, out: TextIO | None = None):
    """The compile half of `run_search`: the chosen point through `driver.compile` (its bits table
    handed over in memory), artefacts with pareto.json, pareto.png and bits.json in the same atomic
    output folder."""
    from quantloop.driver import compile as compile_model
    from quantloop.driver import plot_title

    result, document, output_dir = searched.result, searched.document, options.output_dir
    if searched.qat_model is not None:  # the fine-tuned model carries its own bits and scales
        table = searched.qat_table
        chosen_options = options.replace(bits_file=None, bits_table=None, weight_scheme="int", output_dir=None,
                                         search=None, data=None, scheduler=None, synergy=False)
        compiled = compile_model(import_onnx(searched.qat_model), chosen_options, out=out)
    else:
        table = result.bits_file(result.chosen)
        chosen_options = options.replace(
            bits_file=None, bits_table=table, weight_scheme=result.chosen.config.calibration_scheme, output_dir=None, search=None,
            data=options.data or searched.data.calib_spec, scheduler=None, synergy=False,
        )
        compiled = compile_model(searched.module, chosen_options, out=out)
    compiled.search = document
    # named after the model the user gave (the driver sees only the searched module), at the searched bits
    compiled.title = plot_title(searched.source, compiled.target, options.replace(bits_table=table))
    if options.synergy:  # the search decomposed the chosen point already: not computed a second time
        compiled.synergy = search_decomposition(document)
    if output_dir is not None:
        def write_search_files(folder: Path) -> dict[str, Path]:
            written = write_pareto(folder, document, result)
            bits_out = folder / "bits.json"
            bits_out.write_text(json.dumps(table, indent=1) + "\n")
            if searched.qat_model is not None:
                import onnx

                onnx.save(searched.qat_model, str(folder / "model.qat.onnx"))
                return {**written, "bits_json": bits_out, "qat_model": folder / "model.qat.onnx"}
            return {**written, "bits_json": bits_out}

        compiled.artifacts = write_artifacts(
            Path(output_dir), qnn_module=compiled.qnn_module, accel_module=compiled.module, target=compiled.target,
            command_line=options.command_line, force=options.force, emit=options.emit, title=compiled.title,
            extra_reports={"search": report_summary(document)}, extra_writers=[write_search_files],
        )
    return compiled


def search_decomposition(document: dict[str, Any]) -> dict | None:
    """The synergy decomposition of the compiled point: the one `--accuracy qat-front` made of the point it
    fine-tuned and chose, else the search's of its chosen point (QAT in the loop chooses that very point)."""
    qat = document.get("qat") or {}
    if qat.get("chosen") is not None and "synergy" in qat:
        return qat["synergy"]
    return document.get("synergy")


def report_summary(document: dict[str, Any]) -> dict[str, Any]:
    """What report.json says about the search: the chosen point, the references, the ablation."""
    if document.get("chosen") is None:
        return {"pareto": "pareto.json", "qat": document.get("qat")}
    chosen = document["points"][document["chosen"]]
    return {
        "pareto": "pareto.json",
        "objective": document["objective"],
        "accuracy_metric": document["accuracy_metric"],
        "max_accuracy_drop_pp": document["max_accuracy_drop_pp"],
        "float_accuracy": document["float_accuracy"],
        "chosen": {k: chosen[k] for k in ("label", "energy_pj", "cycles", "weight_bytes", "accuracy")},
        "w8a8": {k: document["reference_w8a8"][k] for k in ("energy_pj", "cycles", "weight_bytes", "accuracy")},
        "ablation": document["ablation"],
        "synergy": document.get("synergy"),
        "qat": document.get("qat"),
        "test": document.get("test"),
    }


def print_qat_summary(console, qat: dict[str, Any]) -> None:
    if qat.get("mode") == "loop":
        console.print(f"QAT in the loop: {qat['fine_tuned']} candidates judged after fine-tuning ({qat['cache_hits']} from "
                      f"the cache; {qat['trainings']} training runs with the confirming runs) in {qat['seconds']:.1f} s",
                      markup=False, highlight=False)
        if qat["chosen"] is None:
            console.print("QAT: the chosen point needs no fine-tuning (PTQ keeps its accuracy)")
            return
    for t in qat.get("tried", []):
        console.print(f"QAT {t['label']} at {t['energy_pj'] / 1e6:,.3f} µJ: validation top-1 PTQ {100 * t['ptq_accuracy']:.2f} % "
                      f"-> QAT {100 * t['qat_accuracy']:.2f} %", markup=False, highlight=False)
    chosen = qat["chosen"]
    if chosen is None:
        console.print("QAT: no front point keeps the accuracy; nothing chosen")
        return
    test = f", test top-1 {100 * chosen['test_accuracy']:.2f} %" if "test_accuracy" in chosen else ""
    console.print(f"QAT chosen {chosen['label']}: energy {100 * chosen['saving_vs_w8a8']['energy']:.1f} % and EDP "
                  f"{100 * chosen['saving_vs_w8a8']['edp']:.1f} % below w8a8{test}", markup=False, highlight=False)
    from quantloop.passes.search.synergy import summary_lines

    for line in summary_lines(qat["synergy"]) if "synergy" in qat else []:  # loop mode: the search's own decomposition
        console.print(line, markup=False, highlight=False)


def print_search_summary(console, document: dict[str, Any]) -> None:
    """The search's lines under `quantloop compile --search`'s per-layer table."""
    if document.get("qat"):
        print_qat_summary(console, document["qat"])
    if document.get("chosen") is None:
        return
    chosen = document["points"][document["chosen"]]
    ref = document["reference_w8a8"]
    ablation = document["ablation"]
    metric = "top-1" if document["accuracy_metric"] == "top1" else "top-1 agreement"
    console.print(
        f"search: {len(document['points'])} Pareto points of {document['search']['evaluated']} configurations; "
        f"float {metric} {100 * document['float_accuracy']:.2f} % on {document['data']['validation']}"
    )
    console.print(
        f"chosen {chosen['label']}: {chosen['energy_pj'] / 1e6:,.3f} µJ ({100 * ablation['saving_vs_w8a8']:.1f} % below "
        f"w8a8's {ref['energy_pj'] / 1e6:,.3f} µJ), {chosen['weight_bytes']:,} weight bytes, {metric} "
        f"{100 * chosen['accuracy']:.2f} % (validation)"
    )
    test = document.get("test")
    if test:
        console.print(
            f"held-out {test['data']}: chosen {100 * test['chosen_accuracy']:.2f} %, w8a8 {100 * test['w8a8_accuracy']:.2f} %, "
            f"float {100 * test['float_accuracy']:.2f} %"
        )
    from quantloop.passes.search.synergy import percent, print_decomposition

    if document.get("synergy"):  # the decomposition replaces the one-line ablation
        print_decomposition(console, document["synergy"])
    else:
        console.print(
            f"re-mapping bought {percent(ablation['remapping_share_of_saving'], 1)} % of the saving (w8a8 mappings kept "
            f"at the chosen bits: {ablation['fixed_w8a8_mapping_energy_pj'] / 1e6:,.3f} µJ)"
        )
