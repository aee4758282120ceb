"""Write every artefact of a compile into one output folder, all or nothing.

Folder contents: ``schedule.json`` (+ schema in the package), ``schedule.txt``, ``timeloop/<layer>/``
(``problem.yaml``, ``map.yaml``), ``weights.bin`` + ``weights.json``, ``model.quant.onnx`` (+ ``model.quant.onnx.data`` for large models), ``report.json``,
``energy_by_level.png`` and ``energy_by_dataspace.png``. The writers run in ``STEPS`` order inside a
temporary folder beside the destination (:mod:`quantloop.backend.atomic`).

Which of them are written is the caller's choice (``emit``, ``quantloop compile --emit``; the choices and
the default live in :mod:`quantloop.backend.emit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from quantloop.backend import plots, report, schedule, timeloop_export, weights
from quantloop.backend.atomic import atomic_output_dir, check_output_dir
from quantloop.backend.emit import DEFAULT_EMIT, STEPS, parse_emit
from quantloop.backend.layers import LayerRecord, collect_layers
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch

__all__ = ["write_artifacts", "check_output_dir", "parse_emit", "STEPS", "DEFAULT_EMIT"]


@dataclass
class ArtifactContext:
    records: list[LayerRecord]
    target: Arch
    host_ops: list[dict]
    command_line: str
    qnn_module: ModuleOp | None
    extra_reports: dict | None
    folders: dict[str, str]
    title: str = ""
    steps: tuple[str, ...] = STEPS
    manifest: dict = field(default_factory=dict)
    report: dict | None = None


def host_op_list(accel_module: ModuleOp) -> list[dict]:
    from quantloop.ir import op_kind
    from quantloop.ir.accel import host_ops

    out = []
    for op in host_ops(accel_module):
        name = getattr(op, "node_name", None)
        out.append({"name": name if isinstance(name, str) else "", "op": op_kind(op)})
    return out


def _check_target(accel_module: ModuleOp, target: Arch) -> None:
    from quantloop.ir.accel import module_target

    ref = module_target(accel_module)
    if ref is not None and ref.content_hash and target.content_hash and ref.content_hash != target.content_hash:
        raise QuantloopError(
            f"accel module: it was mapped for target {ref.name} ({ref.content_hash[:12]}), "
            f"not for {target.name} ({target.content_hash[:12]})"
        )


def write_schedule(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    data = schedule.build_schedule(ctx.records, ctx.target, ctx.host_ops, ctx.command_line, ctx.folders)
    return {
        "schedule_json": schedule.write_schedule_json(tmp, data),
        "schedule_txt": schedule.write_schedule_txt(tmp, ctx.records, ctx.target, ctx.command_line),
    }


def write_timeloop(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    timeloop_export.write_timeloop(tmp, ctx.records, ctx.target, ctx.folders)
    return {"timeloop": tmp / "timeloop"}


def _weight_layers(ctx: ArtifactContext) -> list:
    return [r.weights for r in ctx.records if r.weights is not None]


def _computed(ctx: ArtifactContext) -> list[dict]:
    return [{"name": r.name, "weight_producer": r.weight_producer} for r in ctx.records if r.weights is None]


def write_weights(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    ctx.manifest = weights.write_weights(tmp, _weight_layers(ctx), ctx.target.levels[0].word_bits, _computed(ctx))
    return {"weights_bin": tmp / weights.BINARY, "weights_json": tmp / weights.MANIFEST}


def write_onnx(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    if ctx.qnn_module is None:
        return {}
    import onnx

    from quantloop.runtime.fakequant_export import FakeQuantExporter, export_fakequant_onnx

    path = tmp / "model.quant.onnx"
    if _weight_bytes(ctx.qnn_module) < ONNX_EXTERNAL_WEIGHTS_BYTES:
        onnx.save(export_fakequant_onnx(ctx.qnn_module), path)
        return {"model_quant_onnx": path}
    data = path.with_name(path.name + ".data")
    with open(data, "wb") as weights_file:
        model = FakeQuantExporter(ctx.qnn_module, weights_file=weights_file, weights_location=data.name).export(
            "quantloop_fakequant"
        )
    onnx.save(model, path)
    return {"model_quant_onnx": path, "model_quant_onnx_data": data}


#: From this many bytes of float weights on, ``model.quant.onnx`` keeps its weights in ONNX external
#: data (``model.quant.onnx.data`` beside it, written straight from the module's arrays): the protobuf
#: then never holds a copy of them (VGG-16: 3.0 GB peak otherwise) and stays under protobuf's 2 GB limit.
ONNX_EXTERNAL_WEIGHTS_BYTES = 64 * 2**20


def _weight_bytes(module: ModuleOp) -> int:
    """Bytes of the module's constants as the fake-quant model stores them (float32)."""
    import math

    from quantloop.ir import ConstantOp

    return sum(4 * math.prod(o.output.type.get_shape()) for o in module.walk() if isinstance(o, ConstantOp))


def _report_data(ctx: ArtifactContext) -> dict:
    if ctx.report is None:
        if not ctx.manifest:  # weights not emitted: their packed sizes are still reported
            ctx.manifest = weights.weight_manifest(_weight_layers(ctx), ctx.target.levels[0].word_bits, _computed(ctx))
        plot_names = [plots.ENERGY_BY_LEVEL, plots.ENERGY_BY_DATASPACE] if "plots" in ctx.steps else []
        ctx.report = report.build_report(
            ctx.records, ctx.target, ctx.manifest, ctx.host_ops, ctx.command_line, plot_names, ctx.extra_reports
        )
    return ctx.report


def write_report(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    return {"report_json": report.write_report(tmp, _report_data(ctx))}


def write_plots(tmp: Path, ctx: ArtifactContext) -> dict[str, Path]:
    levels = [lvl.name for lvl in ctx.target.levels] + ["MAC"]
    level_plot, dataspace_plot = plots.write_plots(tmp, _report_data(ctx), levels, ctx.title)
    return {"plot_energy_by_level": level_plot, "plot_energy_by_dataspace": dataspace_plot}


def writers() -> dict[str, Callable[[Path, ArtifactContext], dict[str, Path]]]:
    """The writer of each artefact named in `backend.emit.STEPS` (a test checks the two agree);
    looked up when a compile writes, so a test can swap one."""
    return {
        "schedule": write_schedule, "timeloop": write_timeloop, "weights": write_weights, "onnx": write_onnx,
        "report": write_report, "plots": write_plots,
    }


def write_artifacts(
    out_dir: Path,
    *,
    qnn_module: ModuleOp | None,
    accel_module: ModuleOp,
    target: Arch | str,
    command_line: str,
    force: bool = False,
    extra_reports: dict | None = None,
    extra_writers: Sequence[Callable[[Path], dict[str, Path]]] = (),
    emit: str | Sequence[str] | None = None,
    title: str = "",
) -> dict[str, Path]:
    """Write all artefacts into ``out_dir`` atomically; return their final paths by kind.

    ``qnn_module`` is the calibrated qnn-level module (``model.quant.onnx`` is exported from it; None skips
    that file), ``accel_module`` the mapped accel-level module, ``target`` an Arch or a target name/path.
    An existing ``out_dir`` is replaced only with ``force``. ``extra_reports`` go into report.json under
    their own keys; each of ``extra_writers`` is called with the temporary folder after the built-in steps
    (so its files are part of the same all-or-nothing output) and returns {kind: path} of what it wrote.
    ``emit`` chooses the artefacts (:func:`parse_emit`; default ``DEFAULT_EMIT``); ``title`` (model, target,
    bits) heads the plots. Each step is a phase of the current :mod:`quantloop.progress`.
    """
    from quantloop.progress import current

    steps = parse_emit(emit)
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    if not isinstance(target, Arch):
        from quantloop.targets.registry import load_target

        target = load_target(target)
    _check_target(accel_module, target)
    records = collect_layers(accel_module, target)
    ctx = ArtifactContext(
        records=records,
        target=target,
        host_ops=host_op_list(accel_module),
        command_line=command_line,
        qnn_module=qnn_module,
        extra_reports=extra_reports,
        folders=timeloop_export.folder_names([r.name for r in records]),
        title=title,
        steps=steps,
    )
    written: dict[str, Path] = {}
    progress = current()
    table = writers()
    with atomic_output_dir(out_dir, force) as tmp:
        for step in steps:
            with progress.phase(f"write {step}"):
                written.update(table[step](tmp, ctx))
        for writer in extra_writers:
            written.update(writer(tmp))
        final = {kind: out_dir / path.relative_to(tmp) for kind, path in written.items()}
    return {"dir": out_dir, **final}
