"""`qnn-search-bits`: per-layer bit-widths chosen by NSGA-II together with every layer's mapping.

The search (the engine is `quantloop.passes.search`) evaluates candidates on three objectives —
network energy (or EDP / latency) from the mapper at each layer's bits, packed weight memory and
the exact fake-quant model's accuracy on validation data — under `max_accuracy_drop` percentage
points against the float model, and picks the lowest-cost point that meets it. The pass then
writes that point's bits into the types exactly as `qnn-assign-bits` with its bits file would.

Data: `data` calibrates activation ranges (default: `zoo:digits-calib` for the digits zoo models,
else 32 seeded N(0, 1) inputs, as qnn-calibrate does); `val_data` selects (default
`zoo:digits-val` for digits models; the ImageNet zoo models use the fidelity proxy: top-1
agreement with the float model on `PROXY_SAMPLES` seeded N(0, 1) inputs; other models must name
one). The test split is never read by the search; `run_search` reports the chosen point on it.

For `quantloop compile --search`: `add_search_arguments(parser)` adds the flags and
`search_settings(args)` reads them; the driver hands them to `run_search`, which searches, writes
`pareto.json` + `pareto.png`, and compiles the chosen point through `driver.compile` with its
bits file. No point meets the constraint → QuantloopError with exit code 3 after the front is
written.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from quantloop.errors import QuantloopError
from quantloop.passes.search.flags import (  # noqa: F401 - re-exported for compile.py and the driver
    DEFAULT_GENERATIONS,
    DEFAULT_POPULATION,
    PROXY_SAMPLES,
    SearchSettings,
    add_search_arguments,
    search_settings,
)

CALIB_RANDOM_SAMPLES = 32
NO_FEASIBLE_EXIT = 3


# ----------------------------------------------------------------------------- data


def _zoo_name(model: Any) -> str | None:
    if isinstance(model, (str, os.PathLike)) and str(model).startswith("zoo:"):
        return str(model)[4:].partition("?")[0]
    return None


def _input_shape(module: ModuleOp) -> tuple[int, ...]:
    from quantloop.ir.builder import main_func

    args = list(main_func(module).body.block.args)
    if len(args) != 1:
        raise QuantloopError(f"qnn-search-bits: the model has {len(args)} inputs; the search feeds exactly one")
    return tuple(args[0].type.get_shape())


def _random_inputs(module: ModuleOp, count: int, seed: int) -> np.ndarray:
    shape = _input_shape(module)
    return np.random.default_rng(seed).standard_normal((count, *shape[1:])).astype(np.float32)


@dataclass
class SearchData:
    calib_x: np.ndarray
    calib_name: str
    val_x: np.ndarray
    val_y: np.ndarray | None
    val_name: str
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    test_name: str | None


def resolve_data(module: ModuleOp, model: Any, data: str | None, settings: SearchSettings) -> SearchData:
    """Calibration, validation and test data for the search (see the module docstring)."""
    from quantloop.frontend.dataset import load_dataset
    from quantloop.frontend.zoo.digits import DIGITS_MODELS

    zoo = _zoo_name(model)
    digits = zoo in DIGITS_MODELS
    imagenet_zoo = zoo is not None and not digits
    if data:
        calib_x, calib_name = load_dataset(data)[0], data
    elif digits:
        calib_x, calib_name = load_dataset("zoo:digits-calib")[0], "zoo:digits-calib"
    else:
        calib_x, calib_name = _random_inputs(module, CALIB_RANDOM_SAMPLES, 0), "random N(0,1) inputs (seed 0)"
    val_spec = settings.val_data or ("zoo:digits-val" if digits else None)
    if val_spec:
        val_x, val_y = load_dataset(val_spec)
        if val_y is None:
            raise QuantloopError(f"{val_spec}: validation data needs labels (array y)")
        val_name = val_spec
    elif imagenet_zoo:
        val_x, val_y = _random_inputs(module, settings.proxy_samples, 1), None
        val_name = f"fidelity proxy: top-1 agreement with float on {settings.proxy_samples} N(0,1) inputs (seed 1)"
    else:
        raise QuantloopError("--search: --val-data is required (a labelled .npz with x and y) for this model")
    test_spec = settings.test_data or ("zoo:digits-test" if digits else None)
    if test_spec:
        test_x, test_y = load_dataset(test_spec)
        if test_y is None:
            raise QuantloopError(f"{test_spec}: test data needs labels (array y)")
        test_name = test_spec
    elif imagenet_zoo and not settings.val_data:
        test_x, test_y = _random_inputs(module, settings.proxy_samples, 2), None
        test_name = f"fidelity proxy: top-1 agreement with float on {settings.proxy_samples} N(0,1) inputs (seed 2)"
    else:
        test_x = test_y = test_name = None
    return SearchData(calib_x, calib_name, val_x, val_y, val_name, test_x, test_y, test_name)


# ----------------------------------------------------------------------------- the pass


def _options(target: str, objective: str, settings: SearchSettings, workers: int, cache_dir: str | None,
             use_cache: bool, weight_clip: str, act_range: str = "minmax", percentile: float = 99.99):
    from quantloop.passes.search.engine import SearchOptions
    from quantloop.passes.search.space import parse_bits_range

    return SearchOptions(
        target=target, objective=objective, max_accuracy_drop=settings.max_accuracy_drop,
        widths=parse_bits_range(settings.bits_range), population=settings.population,
        generations=settings.generations, seed=settings.seed, workers=workers, cache_dir=cache_dir or None,
        use_cache=use_cache, weight_clip=weight_clip, act_range=act_range, percentile=percentile,
        progress=settings.progress,
    )


def no_feasible_error(result) -> QuantloopError:
    best = result.best_accuracy
    table = json.dumps(result.bits_file(best), separators=(",", ":"))
    return QuantloopError(
        f"qnn-search-bits: no configuration keeps the accuracy within {result.options.max_accuracy_drop:g} pp of the "
        f"float model ({100 * result.float_accuracy:.2f} %); the best found reaches {100 * best.accuracy:.2f} % "
        f"({best.config.label()}, bits {table})",
        exit_code=NO_FEASIBLE_EXIT,
    )


def apply_bits(module: ModuleOp, table: dict, ctx: Context | None = None) -> None:
    """Run qnn-assign-bits with `table` as its per-layer bits file."""
    from quantloop.ir import make_context
    from quantloop.passes.assign_bits import AssignBitsPass

    with tempfile.TemporaryDirectory(prefix="quantloop-bits-") as tmp:
        path = Path(tmp) / "bits.json"
        path.write_text(json.dumps(table))
        AssignBitsPass(file=str(path)).apply(ctx or make_context(), module)


@dataclass(frozen=True)
class SearchBitsPass(ModulePass):
    """`qnn-search-bits{target=eyeriss val_data=... ...}` on a canonicalized float module.

    The pass does not know which model it runs on, so `val_data` is required (labelled `.npz` or
    `zoo:digits-val`) and `data` empty means seeded random calibration inputs; `output` (a folder)
    receives pareto.json and pareto.png.
    """

    name = "qnn-search-bits"

    target: str = "eyeriss"
    objective: str = "energy"
    data: str = ""
    val_data: str = ""
    max_accuracy_drop: float = 0.5
    generations: int = DEFAULT_GENERATIONS
    population: int = DEFAULT_POPULATION
    seed: int = 0
    bits_range: str = "2..8"
    workers: int = 1
    cache_dir: str = ""
    no_cache: bool = False
    weight_clip: str = "minmax"
    act_range: str = "minmax"
    percentile: float = 99.99
    output: str = ""
    progress: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from quantloop.passes.search.engine import search_bits

        settings = SearchSettings(self.max_accuracy_drop, self.val_data or None, None, self.generations,
                                  self.population, self.seed, self.bits_range, self.progress)
        data = resolve_data(op, None, self.data, settings)
        options = _options(self.target, self.objective, settings, self.workers, self.cache_dir,
                           not self.no_cache, self.weight_clip, self.act_range, self.percentile)
        result = search_bits(op, options, data.calib_x, data.val_x, data.val_y,
                             data_names=(data.calib_name, data.val_name))
        if self.output:
            from quantloop.backend.pareto import build_pareto, write_pareto

            write_pareto(self.output, build_pareto(result, model="<module>"), result)
        if result.chosen is None:
            raise no_feasible_error(result)
        apply_bits(op, result.bits_file(result.chosen), ctx)


# ----------------------------------------------------------------------------- the compile flow


def run_search(model: Any, settings: SearchSettings, *, console=None, **compile_kwargs: Any):
    """`quantloop compile --search`: search, write the front, compile the chosen point.

    `compile_kwargs` are `driver.compile`'s (target, output_dir, force, data, objective, workers,
    cache_dir, use_cache, weight_clip, input_shapes, ...); `bits` / `bits_file` are chosen here.
    Returns the driver's `CompileResult` with `search` holding the pareto.json document.
    """
    import time

    started = time.perf_counter()
    searched = search_model(model, settings, console=console, **compile_kwargs)
    compiled = compile_chosen(searched, **compile_kwargs)
    compiled.seconds = time.perf_counter() - started
    return compiled


@dataclass
class Searched:
    """A finished search: the canonical module, its data, the result and the pareto.json document."""

    module: ModuleOp
    data: SearchData
    result: Any
    document: dict[str, Any]


def search_model(model: Any, settings: SearchSettings, *, console=None, **compile_kwargs: Any) -> Searched:
    """The search half of `run_search` (raises the exit-3 error after writing the front)."""
    from quantloop.backend.pareto import build_pareto, write_pareto
    from quantloop.frontend import import_onnx
    from quantloop.ir import make_context
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.passes.search.engine import search_bits

    target = compile_kwargs.get("target")
    if not target:
        raise QuantloopError("--search needs --target (the energy objective maps every layer on it)")
    if compile_kwargs.get("bits_file"):
        raise QuantloopError("--search chooses the bits itself; drop --bits-file")
    output_dir = compile_kwargs.get("output_dir")
    if output_dir is not None:
        from quantloop.backend.atomic import check_output_dir

        check_output_dir(Path(output_dir), force=compile_kwargs.get("force", False))
    if compile_kwargs.get("weight_scheme", "int") != "int":
        raise QuantloopError("--search chooses the weight scheme from the target's PEs; drop --scheme")

    module = model if isinstance(model, ModuleOp) else import_onnx(model, input_shapes=dict(compile_kwargs.get("input_shapes") or {}))
    module = module.clone()
    CanonicalizePass().apply(make_context(), module)
    data = resolve_data(module, model, compile_kwargs.get("data"), settings)
    options = _options(target, compile_kwargs.get("objective", "energy"), settings, compile_kwargs.get("workers", 1),
                       compile_kwargs.get("cache_dir"), compile_kwargs.get("use_cache", True),
                       compile_kwargs.get("weight_clip", "minmax"), compile_kwargs.get("act_range", "minmax"),
                       compile_kwargs.get("percentile", 99.99))
    if console is None and settings.progress:
        from rich.console import Console

        console = Console(stderr=True)
    result = search_bits(module, options, data.calib_x, data.val_x, data.val_y, console=console,
                         data_names=(data.calib_name, data.val_name))
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else "<model>"
    extra: dict[str, Any] = {"data": {"calibration": data.calib_name, "validation": data.val_name, "test": data.test_name}}
    if result.chosen is not None and data.test_x is not None:
        extra["test"] = held_out_accuracies(result, data)
    document = build_pareto(result, model=model_name, extra=extra)
    if result.chosen is None:
        if output_dir is not None:
            from quantloop.backend.atomic import atomic_output_dir

            with atomic_output_dir(Path(output_dir), compile_kwargs.get("force", False)) as tmp:
                write_pareto(tmp, document, result)
        raise no_feasible_error(result)
    return Searched(module, data, result, document)


def compile_chosen(searched: Searched, **compile_kwargs: Any):
    """The compile half of `run_search`: the chosen point through `driver.compile`, artefacts with
    pareto.json, pareto.png and bits.json in the same atomic output folder."""
    from quantloop.backend.pareto import write_pareto
    from quantloop.driver import compile as compile_model

    result, document, output_dir = searched.result, searched.document, compile_kwargs.get("output_dir")
    table = result.bits_file(result.chosen)
    with tempfile.TemporaryDirectory(prefix="quantloop-search-") as tmp:
        bits_path = Path(tmp) / "bits.json"
        bits_path.write_text(json.dumps(table, indent=1))
        kwargs = dict(compile_kwargs, bits_file=str(bits_path), weight_scheme=result.chosen.config.scheme, output_dir=None)
        if not kwargs.get("data") and searched.data.calib_name == "zoo:digits-calib":
            kwargs["data"] = "zoo:digits-calib"
        compiled = compile_model(searched.module, **kwargs)
    compiled.search = document
    if output_dir is not None:
        from quantloop.backend.artifacts import write_artifacts

        def write_search_files(folder: Path) -> dict[str, Path]:
            written = write_pareto(folder, document, result)
            bits_out = folder / "bits.json"
            bits_out.write_text(json.dumps(table, indent=1) + "\n")
            return {**written, "bits_json": bits_out}

        compiled.artifacts = write_artifacts(
            Path(output_dir), qnn_module=compiled.qnn_module, accel_module=compiled.module, target=compiled.target,
            command_line=compile_kwargs.get("command_line", ""), force=compile_kwargs.get("force", False),
            extra_reports={"search": report_summary(document)}, extra_writers=[write_search_files],
        )
    return compiled


def report_summary(document: dict[str, Any]) -> dict[str, Any]:
    """What report.json says about the search: the chosen point, the references, the ablation."""
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
        "test": document.get("test"),
    }


def held_out_accuracies(result, data: SearchData) -> dict[str, Any]:
    """Float, w8a8 and chosen accuracy on the held-out test data (never seen by the search)."""
    from quantloop.passes.search.fakequant import FakeQuantEvaluator, check_inputs, float_predict

    space = result.space
    num_classes = int(np.prod([d.dim_value for d in space.model.graph.output[0].type.tensor_type.shape.dim[1:]]))
    x, y = check_inputs(space, data.test_x, data.test_y, data.test_name or "test data", num_classes)
    float_top = np.argmax(float_predict(space, x).reshape(len(x), -1), axis=1)
    metric = "top1" if y is not None else "agreement"
    y = float_top if y is None else y
    options = result.options
    evaluator = FakeQuantEvaluator(
        space, data.calib_x, weight_clip=options.weight_clip, act_range=options.act_range, percentile=options.percentile
    )
    return {
        "data": data.test_name,
        "metric": metric,
        "samples": int(len(x)),
        "float_accuracy": float(np.mean(float_top == y)),
        "w8a8_accuracy": evaluator.top1(result.reference.config, x, y),
        "chosen_accuracy": evaluator.top1(result.chosen.config, x, y),
    }


def print_search_summary(console, document: dict[str, Any]) -> None:
    """The search's lines under `quantloop compile --search`'s per-layer table."""
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
    console.print(
        f"re-mapping bought {100 * ablation['remapping_share_of_saving']:.1f} % of the saving (w8a8 mappings kept at the "
        f"chosen bits: {ablation['fixed_w8a8_mapping_energy_pj'] / 1e6:,.3f} µJ)"
    )
