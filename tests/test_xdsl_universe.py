"""quantloop in the xDSL ecosystem: the `xdsl.universe` entry point lets the real `xdsl-opt` read
qnn IR and run quantloop's passes, with the same result as `quantloop opt`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import TensorType, f32
from xdsl.universe import Universe

import quantloop
from quantloop.cli import main
from quantloop.ir.qnn import BatchNormOp, ConstantOp, Conv2dOp, MainBuilder, ReluOp, parse_module, print_module
from quantloop.passes.registry import available_passes

ROOT = Path(quantloop.__file__).resolve().parent
ENTRY_GROUP = "xdsl.universe"


def _declared_entry_point() -> EntryPoint:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (name, value), = project["entry-points"][ENTRY_GROUP].items()
    return EntryPoint(name=name, value=value, group=ENTRY_GROUP)


def test_the_declared_universe_offers_both_dialects_and_every_pass():
    universe = _declared_entry_point().load()
    assert isinstance(universe, Universe)
    assert sorted(universe.all_dialects) == ["accel", "qnn"]
    assert universe.all_dialects["qnn"]().name == "qnn"
    assert universe.all_dialects["accel"]().name == "accel"
    assert set(universe.all_passes) == set(available_passes())
    assert universe.all_passes["qnn-canonicalize"]().name == "qnn-canonicalize"


@pytest.fixture(scope="module")
def mobilenet_dump(tmp_path_factory) -> Path:
    """The imported (not yet canonicalized) MobileNetV2, as `--dump-ir` writes it."""
    folder = tmp_path_factory.mktemp("mnv2")
    assert main(["compile", "zoo:mobilenet_v2?width=0.35&resolution=32", "--dump-ir", str(folder)]) == 0
    return folder / "00_input.mlir"


def _xdsl_opt_env(tmp_path: Path) -> dict[str, str]:
    """Environment in which `xdsl-opt` finds this checkout's entry point: a dist-info folder holding
    the declared `entry_points.txt` (what `pip install -e .` writes) ahead of any installed copy."""
    entry = _declared_entry_point()
    dist_info = tmp_path / "site" / "quantloop-0.0.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: quantloop\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_GROUP}]\n{entry.name} = {entry.value}\n")
    paths = [str(tmp_path / "site"), str(ROOT.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _xdsl_opt_matches_quantloop_opt(path: Path, pipeline: str, tmp_path: Path, capsys) -> str:
    """Run the installed `xdsl-opt` console script and `quantloop opt` on `path`; the results agree."""
    xdsl_opt = shutil.which("xdsl-opt") or str(Path(sys.executable).with_name("xdsl-opt"))
    proc = subprocess.run(
        [xdsl_opt, str(path), "-p", pipeline], capture_output=True, text=True, env=_xdsl_opt_env(tmp_path), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert main(["opt", str(path), "-p", pipeline]) == 0
    ours = capsys.readouterr().out
    # xdsl-opt prints with xDSL's own printer (no type aliases); the same module prints identically
    assert print_module(parse_module(proc.stdout, "xdsl-opt output"), elide_weights_over=None) == ours
    return ours


def test_xdsl_opt_runs_quantloop_passes_on_a_small_model(tmp_path, capsys):
    b = MainBuilder([TensorType(f32, [1, 3, 6, 6])])
    w = b.add(ConstantOp(np.linspace(-1, 1, 4 * 27, dtype=np.float32).reshape(4, 3, 3, 3), name="w"))
    conv = b.add(Conv2dOp(b.args[0], w, pads=(1, 1, 1, 1), name="conv"))
    ones = b.add(ConstantOp(np.ones(4, np.float32)))
    bn = b.add(BatchNormOp(conv, ones, ones, ones, ones, name="bn"))
    relu = b.add(ReluOp(bn, name="relu"))
    path = tmp_path / "small.mlir"
    path.write_text(print_module(b.finish([relu]), elide_weights_over=None))
    ours = _xdsl_opt_matches_quantloop_opt(path, "qnn-canonicalize,qnn-assign-bits{bits=w4a8},cse", tmp_path, capsys)
    assert "qnn.batchnorm" not in ours and "act = relu" in ours and "!qnn.int<bits = 4, signed = true>" in ours


@pytest.mark.slow
def test_xdsl_opt_runs_qnn_canonicalize_like_quantloop_opt(mobilenet_dump, tmp_path, capsys):
    ours = _xdsl_opt_matches_quantloop_opt(mobilenet_dump, "qnn-canonicalize", tmp_path, capsys)
    assert "qnn.batchnorm" not in ours and "qnn.conv2d" in ours
