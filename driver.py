"""The compile flow: model -> qnn -> bits -> calibration -> accel layers -> mappings -> artefacts.

`compile()` is what `quantloop compile` and the Python API run, with one `CompileOptions`
(`quantloop.options`; its module docstring says how to add an option). It checks the output folder
before any work, runs every pass through one pipeline runner (so `--print-ir-after-all` and
`--dump-ir` see each of them), and hands the mapped module to the backend.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from quantloop.errors import QuantloopError
from quantloop.options import CompileOptions
from quantloop.result import CompileResult, LayerSummary, summarize_layers

__all__ = ["compile", "CompileResult", "LayerSummary", "summarize_layers", "qnn_passes", "accel_passes"]
from quantloop.progress import Progress, reporting


def _make_pass(name: str, **options: Any) -> ModulePass:
    from quantloop.passes.registry import load_pass

    return load_pass(name)(**options)


def check_float_options(options: CompileOptions, target_name: str) -> None:
    """On float PEs every layer stays float32 (`w32a32`): quantization options cannot apply and are refused
    rather than ignored (the default bits, w8a8, and scheme, int, are accepted: nothing was asked)."""
    from quantloop.bits import FLOAT_BITS_TEXT, FLOAT_SCHEME, is_float_bits, parse_bits
    from quantloop.options import DEFAULT_BITS

    given = [
        (options.bits not in (DEFAULT_BITS, FLOAT_BITS_TEXT) and not is_float_bits(parse_bits(options.bits)),
         f"--bits {options.bits}", ""),
        (options.bits_file is not None, f"--bits-file {options.bits_file}", ""),
        (options.bits_table is not None, "a per-layer bits table", ""),
        (options.weight_scheme not in ("int", FLOAT_SCHEME), f"--scheme {options.weight_scheme}", ""),
        (options.data is not None, f"--data {options.data}", ": there is nothing to calibrate"),
        (options.search is not None, "--search", ": there are no bit-widths to search"),
        (options.synergy, "--synergy", ": it measures the saving against uniform w8a8, which float PEs do not run"),
    ]
    for conflict, what, why in given:
        if conflict:
            raise QuantloopError(f"target {target_name}: its PEs execute float32 layers ({FLOAT_BITS_TEXT}); "
                                 f"{what} does not apply{why}")


def qnn_passes(options: CompileOptions, *, calibrate: bool, float_layers: bool = False) -> list[ModulePass]:
    """The graph-level passes: canonicalize, bit-widths, and (for artefacts or a target) calibration.

    `float_layers` (a target whose PEs execute float only, `targets.arch.ComputeLevel.float_only`): the layers
    stay float32, so neither bit-widths nor calibration run."""
    passes = [_make_pass("qnn-canonicalize"), _make_pass("qnn-fold-quant")]
    if float_layers:
        return passes
    if options.bits_table is not None:
        from quantloop.passes.assign_bits import AssignBitsTablePass

        passes.append(AssignBitsTablePass(bits=options.bits, table=options.bits_table))
    else:
        passes.append(_make_pass("qnn-assign-bits", bits=options.bits, file=options.bits_file or ""))
    if calibrate:
        passes.append(
            _make_pass(
                "qnn-calibrate", data=options.data or "", weight_clip=options.weight_clip, scheme=options.weight_scheme,
                act_range=options.act_range, percentile=options.percentile,
                max_samples=options.max_calib_samples, cache_dir=options.cache_dir or "", no_cache=not options.use_cache,
            )
        )
    return passes


def accel_passes(options: CompileOptions) -> list[ModulePass]:
    """Lowering onto the target and mapping every layer."""
    return [
        _make_pass("accel-lower", target=options.target, psum=options.psum_bits),
        _make_pass(
            "accel-map",
            objective=options.objective,
            workers=options.workers or 0,  # 0: the mapper's default
            cache_dir=options.cache_dir or "",
            no_cache=not options.use_cache,
        ),
    ]


def compile(  # noqa: A001 - the public API is quantloop.compile
    model: Any,
    options: CompileOptions | None = None,
    *,
    out: TextIO | None = None,
    progress: Progress | None = None,
    **keywords: Any,
) -> CompileResult:
    """Compile `model` (an ONNX path, `zoo:NAME`, an `onnx.ModelProto` or a qnn `ModuleOp`).

    `options` (`quantloop.options.CompileOptions`) and/or its fields as keywords
    (`compile(model, target="eyeriss", bits="w4a8")`) say how; `out` receives printed IR.
    Without `target` the flow stops at the graph level (bit-widths assigned); with a target the
    model is calibrated and every conv / gemm layer is lowered and mapped. `options.search`
    (`options.SearchSettings`) runs the mixed-precision co-search first and compiles
    its chosen point (`quantloop.cosearch.run_search`). `progress` (`quantloop.progress.make_progress`)
    shows the phases as they run; without it the compile is silent. Either way `result.phases`
    holds every phase's wall time.
    """
    options = CompileOptions.build(options, **keywords)
    if options.scheduler is not None and options.search is None:
        raise QuantloopError(f"--scheduler {options.scheduler}: only --search runs on a Dask cluster")
    if not options.command_line:
        options = options.replace(command_line=python_call(model, options))
    with reporting(progress or Progress()) as shown:
        try:
            if options.search is not None:
                from quantloop.cosearch import run_search
                from quantloop.targets.registry import load_target

                if options.target is not None and load_target(options.target).compute.float_only:
                    check_float_options(options, load_target(options.target).name)

                result = run_search(model, options, out=out)
            else:
                result = _compile(model, options, out, shown)
        except QuantloopError as err:
            raise QuantloopError(_naming_an_input(str(err), model, options), exit_code=err.exit_code) from None
    result.phases, result.phase_cpu = dict(shown.phases), dict(shown.cpu)
    return result


def _naming_an_input(message: str, model: Any, options: CompileOptions) -> str:
    """Every compile error names a file: one that names none of the inputs (a layer's calibration, an
    onnxruntime refusal) is about the model, so it is prefixed with the model's path."""
    target = options.target if isinstance(options.target, Path) or Path(str(options.target or "")).suffix \
        or "/" in str(options.target or "") else None  # a built-in target's name ("simba") is no file
    inputs = [model, target, options.output_dir, options.bits_file, options.data, options.dump_ir,
              options.cache_dir]
    if options.search is not None:
        inputs += [options.search.val_data, options.search.test_data]
    named = [str(x) for x in inputs if isinstance(x, (str, Path)) and str(x)]
    if not isinstance(model, (str, Path)) or any(name in message for name in named):
        return message
    return f"{model}: {message}"


def python_call(model: Any, options: CompileOptions) -> str:
    """`quantloop.compile('zoo:x', target='eyeriss', ...)`: how a compile run from Python is recorded in
    schedule.txt and report.json (the options that differ from their defaults)."""
    import dataclasses

    parts = [repr(str(model)) if isinstance(model, (str, Path)) else f"<{type(model).__name__}>"]
    for f in dataclasses.fields(CompileOptions):
        value = getattr(options, f.name)
        if f.name in ("command_line", "search", "bits_table") or value == f.default:
            continue
        parts.append(f"{f.name}={str(value)!r}" if isinstance(value, Path) else f"{f.name}={value!r}")
    return f"quantloop.compile({', '.join(parts)})"


def _compile(model: Any, options: CompileOptions, out: TextIO | None, progress: Progress) -> CompileResult:
    from quantloop.frontend import import_onnx
    from quantloop.ir import make_context
    from quantloop.passes.pipeline import run_pipeline

    started = time.perf_counter()
    out = sys.stderr if out is None else out  # IR dumps, as mlir-opt prints them
    target, output_dir = options.target, options.output_dir
    timeloop_tool = _check_before_work(options)
    target_obj = None
    if target is not None:
        from quantloop.targets.registry import load_target

        with progress.phase("load target"):
            target_obj = load_target(target)

    with progress.phase("import"):
        module = model if isinstance(model, ModuleOp) else import_onnx(model, input_shapes=dict(options.input_shapes or {}))
    ctx = make_context()
    dump_kwargs = dict(
        print_ir_after_all=options.print_ir_after_all,
        print_ir_after=set(options.print_ir_after),
        out=out,
        elide_weights_over=options.elide_weights_over,
    )
    float_layers = target_obj is not None and target_obj.compute.float_only
    if float_layers:
        check_float_options(options, target_obj.name)
    passes = qnn_passes(options, calibrate=target is not None or output_dir is not None, float_layers=float_layers)
    dump_dir = Path(options.dump_ir) if options.dump_ir is not None else None
    run_pipeline(module, passes, ctx, dump_dir=dump_dir, **dump_kwargs)
    if target_obj is None:
        return CompileResult(module=module, qnn_module=module, target=None, seconds=time.perf_counter() - started)

    qnn_module = module.clone()
    from quantloop.passes.accel_map import collect_mapper_stats

    with collect_mapper_stats() as mapper_stats:
        run_pipeline(
            module,
            accel_passes(options),
            ctx,
            dump_dir=dump_dir,
            first_step=len(passes) + 1,
            **dump_kwargs,
        )
    result = CompileResult(module=module, qnn_module=qnn_module, target=target_obj,
                           title=plot_title(model, target_obj, options))
    result.layers, result.host_ops = summarize_layers(module, mapper_stats)
    if options.synergy:
        result.synergy = _synergy(module, target_obj, options, progress)
    if output_dir is not None:
        from quantloop.backend.artifacts import write_artifacts

        result.artifacts = write_artifacts(
            Path(output_dir),
            qnn_module=qnn_module,
            accel_module=module,
            target=target_obj,
            command_line=options.command_line,
            force=options.force,
            emit=options.emit,
            title=result.title,
            extra_reports={"synergy": result.synergy} if result.synergy is not None else None,
        )
    if timeloop_tool is not None:
        with progress.phase("verify in Timeloop"):
            result.timeloop_check = _verify_in_timeloop(result, timeloop_tool)
    result.seconds = time.perf_counter() - started
    return result


def _check_before_work(options: CompileOptions) -> Any:
    """Refuse, before any work, what would fail at the end: an output folder without a target, a bad --emit, an
    output folder in the way, --verify-timeloop without a target or a Timeloop. Returns the Timeloop to verify
    with (None without --verify-timeloop)."""
    if options.output_dir is not None:
        if options.target is None:
            raise QuantloopError("compile: -o/--output needs --target (schedules and packed weights are per target)")
        from quantloop.backend.atomic import check_output_dir
        from quantloop.backend.emit import parse_emit

        parse_emit(options.emit)
        check_output_dir(Path(options.output_dir), force=options.force)
    if not options.verify_timeloop:
        return None
    if options.target is None:
        raise QuantloopError("compile: --verify-timeloop needs --target (it checks the mapped layers)")
    from quantloop.costmodel.timeloop_engine import find_timeloop

    return find_timeloop()  # a missing Timeloop is a one-line error


def _verify_in_timeloop(result: CompileResult, timeloop_tool: Any) -> Any:
    """`--verify-timeloop`: every mapped layer evaluated in real Timeloop against quantloop's cost (the emitted
    Timeloop folders when `-o` wrote them)."""
    from quantloop.backend.timeloop_export import folder_names
    from quantloop.backend.timeloop_verify import verify_module
    from quantloop.ir.accel import layers

    module = result.module
    return verify_module(module, result.target, timeloop_tool, result.artifacts.get("timeloop"),
                         folder_names([op.label for op in layers(module)]))


def _synergy(module: ModuleOp, target: Any, options: CompileOptions, progress: Progress) -> dict:
    """The saving against uniform w8a8, decomposed (`--synergy`), with the accel-map pass's seed and cache."""
    from quantloop.mapper import MapCache
    from quantloop.passes.accel_map import AccelMapPass
    from quantloop.passes.search.synergy import decompose_module

    cache = MapCache(options.cache_dir or None) if options.use_cache else None
    with progress.phase("synergy"):
        return decompose_module(module, target, options.objective, seed=AccelMapPass.seed, cache=cache)


def plot_title(model: Any, target: Any, options: CompileOptions) -> str:
    """`zoo:mobilenet_v2 on eyeriss, w4a8 (energy)`: what the plots are of."""
    name = str(model) if isinstance(model, (str, Path)) else "model"
    bits = "searched bits" if options.bits_table is not None else (options.bits_file or options.bits)
    if target.compute.float_only:
        from quantloop.bits import FLOAT_BITS_TEXT

        bits = f"float32 ({FLOAT_BITS_TEXT})"
    return f"{name} on {target.name}, {bits} ({options.objective})"
