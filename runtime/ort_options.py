"""onnxruntime session options: their one home (accuracy runs, the importer's up-front check, calibration).

Every session runs on the CPU provider with one inter-op thread and onnxruntime's own log quiet (its
errors become our one-line messages)."""

from __future__ import annotations

from typing import Any


def session_options(*, intra_op_threads: int = 1, silent: bool = False, optimize: bool = True,
                    run_once: bool = False) -> Any:
    """`onnxruntime.SessionOptions` for our sessions.

    `silent`: no log output at all (not even errors: the caller reports the refusal); `optimize=False`:
    no graph optimizations (a session only built, to see whether onnxruntime takes the model);
    `run_once`: a session that runs a model once per batch and is dropped (calibration): no memory arena
    kept at its high-water mark, and worker threads that sleep instead of spinning while they wait."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4 if silent else 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if run_once:
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
