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
`search_settings(args)` reads them; the driver hands them to `quantloop.cosearch.run_search`,
which searches, writes `pareto.json` + `pareto.png`, and compiles the chosen point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from quantloop.bits import PSUM_MODES
from quantloop.errors import QuantloopError, onnxruntime_failures
from quantloop.ir import make_context
from quantloop.passes.assign_bits import AssignBitsTablePass
from quantloop.passes.search.engine import SearchOptions, search_bits
from quantloop.passes.search.space import parse_bits_range
from quantloop.runtime.dataset import load_dataset
from quantloop.options import (  # noqa: F401 - SearchSettings and its flags re-exported
    DEFAULT_ACT_RANGE,
    DEFAULT_PERCENTILE,
    DEFAULT_WEIGHT_CLIP,
    CompileOptions,
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
    calib_spec: str | None = None  # the data spec calibration read (None: seeded random inputs)
    train_x: np.ndarray | None = None  # QAT training data (--accuracy qat only)
    train_y: np.ndarray | None = None
    train_name: str | None = None


def _labelled(spec: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_dataset(spec)
    if y is None:
        raise QuantloopError(f"{spec}: {what} data needs labels (array y)")
    return x, y


def _fidelity_proxy(module: ModuleOp, samples: int, seed: int) -> tuple[np.ndarray, None, str]:
    """Seeded random inputs on which top-1 agreement with the float model stands in for accuracy."""
    name = f"fidelity proxy: top-1 agreement with float on {samples} N(0,1) inputs (seed {seed})"
    return _random_inputs(module, samples, seed), None, name


def resolve_data(module: ModuleOp, packaged: dict[str, str] | None, data: str | None,
                 settings: SearchSettings) -> SearchData:
    """Calibration, validation and test data for the search (see the module docstring).

    `packaged`: the data set packaged with a zoo model by split (`frontend.zoo.digits.packaged_data`: split → data
    spec), `{}` for a zoo model without one (the fidelity proxy stands in), None for a model from outside the zoo.
    """
    defaults = packaged or {}
    imagenet_zoo = packaged == {}
    if data:
        calib_x, calib_name = load_dataset(data)[0], data
    elif "calib" in defaults:
        calib_x, calib_name = load_dataset(defaults["calib"])[0], defaults["calib"]
    else:
        calib_x, calib_name = _random_inputs(module, CALIB_RANDOM_SAMPLES, 0), "random N(0,1) inputs (seed 0)"
    val_spec = settings.val_data or defaults.get("val")
    if val_spec:
        (val_x, val_y), val_name = _labelled(val_spec, "validation"), val_spec
    elif imagenet_zoo:
        val_x, val_y, val_name = _fidelity_proxy(module, settings.proxy_samples, 1)
    else:
        raise QuantloopError("--search: --val-data is required (a labelled .npz with x and y) for this model")
    test_spec = settings.test_data or defaults.get("test")
    if test_spec:
        (test_x, test_y), test_name = _labelled(test_spec, "test"), test_spec
    elif imagenet_zoo and not settings.val_data:
        test_x, test_y, test_name = _fidelity_proxy(module, settings.proxy_samples, 2)
    else:
        test_x = test_y = test_name = None
    calib_spec = None if calib_name.startswith("random") else calib_name
    found = SearchData(calib_x, calib_name, val_x, val_y, val_name, test_x, test_y, test_name, calib_spec)
    if settings.accuracy != "ptq":
        train_spec = settings.train_data or defaults.get("train")
        if not train_spec:
            raise QuantloopError("--accuracy qat: --train-data is required (a labelled .npz with x and y) for this model")
        if val_y is None:
            raise QuantloopError("--accuracy qat: needs labelled validation data (--val-data)")
        (found.train_x, found.train_y), found.train_name = _labelled(train_spec, "training"), train_spec
    return found


# ----------------------------------------------------------------------------- the pass


def search_options(options: CompileOptions) -> SearchOptions:
    """The search engine's options from a compile's (`options.search` holds the search flags)."""
    settings = options.search
    return SearchOptions(
        target=options.target, objective=options.objective, max_accuracy_drop=settings.max_accuracy_drop,
        widths=parse_bits_range(settings.bits_range), population=settings.population,
        generations=settings.generations, seed=settings.seed, workers=options.workers, scheduler=options.scheduler,
        cache_dir=options.cache_dir or None, use_cache=options.use_cache, weight_clip=options.weight_clip,
        act_range=options.act_range, percentile=options.percentile, max_calib_samples=options.max_calib_samples,
        progress=settings.progress, psum_bits=options.psum_bits, accuracy="qat" if settings.accuracy == "qat" else "ptq",
        qat_epochs=settings.qat_epochs,
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
    """Run qnn-assign-bits with `table` as its per-layer bits (in memory)."""
    AssignBitsTablePass(table=table).apply(ctx or make_context(), module)


@dataclass(frozen=True)
class SearchBitsPass(ModulePass):
    """NSGA-II search of per-layer bit-widths with the mapper in the loop, on a canonicalized float module.

    `qnn-search-bits{target=eyeriss val_data=... ...}`.

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
    weight_clip: str = DEFAULT_WEIGHT_CLIP
    act_range: str = DEFAULT_ACT_RANGE
    percentile: float = DEFAULT_PERCENTILE
    output: str = ""
    progress: bool = False
    psum: str = PSUM_MODES[0]

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        settings = SearchSettings(self.max_accuracy_drop, self.val_data or None, None, self.generations,
                                  self.population, self.seed, self.bits_range, self.progress)
        data = resolve_data(op, None, self.data, settings)
        options = CompileOptions(
            target=self.target, objective=self.objective, workers=self.workers, cache_dir=self.cache_dir or None,
            use_cache=not self.no_cache, weight_clip=self.weight_clip, act_range=self.act_range,
            percentile=self.percentile, search=settings, psum_bits=self.psum,
        )
        with onnxruntime_failures(self.name):
            result = search_bits(op, search_options(options), data.calib_x, data.val_x, data.val_y,
                                 data_names=(data.calib_name, data.val_name))
        if self.output:
            from quantloop.passes.search.pareto import build_pareto, write_pareto

            write_pareto(self.output, build_pareto(result, model="<module>"), result)
        if result.chosen is None:
            raise no_feasible_error(result)
        apply_bits(op, result.bits_file(result.chosen), ctx)


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
