"""Parse pass pipelines (`p1,p2{opt=v k=w}`, xdsl-opt syntax) and run them with MLIR-style IR dumps and timings."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TextIO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.arg_spec import parse_pipeline as parse_spec
from xdsl.utils.exceptions import ArgSpecParseError, VerifyException

from quantloop.errors import QuantloopError
from quantloop.ir.qnn import print_module, verify_module
from quantloop.passes.registry import pipeline_passes
from quantloop.progress import current as current_progress


def dump_header(pass_name: str) -> str:
    return f"// -----// IR Dump After {pass_name} //----- //"


def parse_pipeline(spec: str) -> list[ModulePass]:
    """Pass instances for a pipeline spec such as `qnn-canonicalize,qnn-assign-bits{bits=w4a8},cse`
    (quantloop's passes and xDSL's `registry.XDSL_PASSES`)."""
    known = pipeline_passes()
    try:
        specs = list(parse_spec(spec))
    except (ArgSpecParseError, ValueError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise QuantloopError(f"pass pipeline '{spec}': {message}") from err
    passes: list[ModulePass] = []
    for pass_spec in specs:
        if pass_spec.name not in known:
            raise QuantloopError(
                f"pass pipeline '{spec}': unknown pass '{pass_spec.name}' (known passes: {', '.join(sorted(known))})"
            )
        try:
            pass_class = known[pass_spec.name]()
        except (ImportError, LookupError) as err:
            raise QuantloopError(f"pass {pass_spec.name}: cannot be loaded ({err})", exit_code=1) from err
        try:
            passes.append(pass_class.from_pass_spec(pass_spec))
        except (ValueError, TypeError) as err:
            raise QuantloopError(f"pass {pass_spec.name}: {err}") from err
    return passes


def run_pipeline(
    module: ModuleOp,
    passes: Sequence[ModulePass] | str,
    ctx: Context,
    *,
    print_ir_after_all: bool = False,
    print_ir_after: Collection[str] = (),
    dump_dir: Path | None = None,
    out: TextIO | None = None,
    elide_weights_over: int | None = 16,
    verify_each: bool = True,
    first_step: int = 1,
    time_passes: bool = False,
) -> ModuleOp:
    """Run `passes` on `module` in place and return it.

    After every pass (with `print_ir_after_all`, or when its name is in `print_ir_after`) the
    module is printed to `out` under MLIR's `// -----// IR Dump After <pass> //----- //` header,
    with constants over `elide_weights_over` values elided. `dump_dir` receives
    `00_input.mlir`, `01_<pass>.mlir`, ... with every weight, so each file can be run again.
    With `verify_each` the module is verified after every pass, naming the pass that broke it.
    `first_step` numbers the first pass's dump file, so a second pipeline run on the same module
    continues the numbering (the input is dumped only when `first_step` is 1).
    With `time_passes` an MLIR-style execution time report (wall time per pass) is written to `out`.
    """
    if isinstance(passes, str):
        passes = parse_pipeline(passes)
    out = sys.stdout if out is None else out
    wanted = set(print_ir_after)
    known = set(pipeline_passes()) | {p.name for p in passes}
    unknown = wanted - known
    if unknown:
        raise QuantloopError(
            f"print-ir-after: unknown pass {', '.join(sorted(unknown))} (known passes: {', '.join(sorted(known))})"
        )
    if dump_dir is not None:
        dump_dir = Path(dump_dir)
        dump_dir.mkdir(parents=True, exist_ok=True)
    step = first_step - 1
    timings: list[tuple[str, float]] = []
    started = time.perf_counter()
    progress = current_progress()
    running = ExitStack()  # the progress phase of the pass that runs now (dumps are not part of it)

    def after_pass(previous: ModulePass | None, op: ModuleOp, next_pass: ModulePass | None) -> None:
        running.close()
        _dump(previous, op)
        if next_pass is not None:
            running.enter_context(progress.phase(next_pass.name))

    def _dump(previous: ModulePass | None, op: ModuleOp) -> None:
        nonlocal step, started
        if previous is not None:
            timings.append((previous.name, time.perf_counter() - started))
        if previous is None:
            if dump_dir is not None and first_step == 1:
                (dump_dir / "00_input.mlir").write_text(print_module(op, elide_weights_over=None))
            return
        step += 1
        if verify_each:
            try:
                verify_module(op, f"after pass {previous.name}")
            except QuantloopError as err:
                raise QuantloopError(f"internal error: {err}", exit_code=1) from err
        if print_ir_after_all or previous.name in wanted:
            out.write(dump_header(previous.name) + "\n")
            out.write(print_module(op, elide_weights_over=elide_weights_over))
            out.write("\n")
        if dump_dir is not None:
            (dump_dir / f"{step:02d}_{previous.name}.mlir").write_text(print_module(op, elide_weights_over=None))
        started = time.perf_counter()

    try:
        with running:
            PassPipeline(tuple(passes), after_pass).apply(ctx, module)
    except VerifyException as err:
        raise QuantloopError(f"internal error: a pass produced invalid IR: {err}", exit_code=1) from err
    if time_passes:
        out.write(time_report(timings))
    return module


def time_report(timings: Sequence[tuple[str, float]]) -> str:
    """MLIR's `-mlir-timing` report: total, then the wall time and share of every pass in order."""
    rule = "===" + "-" * 73 + "==="
    total = sum(seconds for _, seconds in timings)
    lines = [rule, "Execution time report".center(len(rule)).rstrip(), rule, f"  Total Execution Time: {total:.4f} seconds", ""]
    lines.append("  ----Wall Time----  ----Name----")
    for name, seconds in timings:
        share = 100.0 * seconds / total if total > 0 else 0.0
        lines.append(f"  {seconds:8.4f} ({share:5.1f}%)  {name}")
    lines.append(f"  {total:8.4f} (100.0%)  Total")
    return "\n".join(lines) + "\n"
