"""`compile --search` on Dask (issue 15): a tiny search on a 2-worker LocalCluster gives exactly the
one-process front, the workers fill the shared mapper cache, and `--scheduler` without `--search` is an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantloop.frontend import import_onnx
from quantloop.runtime.dataset import load_dataset
from quantloop.ir import make_context
from quantloop.passes.canonicalize import CanonicalizePass
from quantloop.passes.search.engine import SearchOptions, search_bits


def _search(cache_dir: Path, **kw):
    module = import_onnx("zoo:cnn_digits")
    CanonicalizePass().apply(make_context(), module)
    calib = load_dataset("zoo:digits-calib")[0]
    val_x, val_y = load_dataset("zoo:digits-val")
    options = SearchOptions(target="eyeriss", population=4, generations=2, seed=0, cache_dir=str(cache_dir),
                            progress=False, widths=(4, 8), **kw)
    return search_bits(module, options, calib, val_x, val_y)


def _summary(result):
    return ([(p.config, p.energy_pj, p.cycles, p.weight_bytes, p.accuracy) for p in result.front],
            sorted(((p.config, p.energy_pj, p.accuracy) for p in result.archive), key=repr), result.chosen)


@pytest.mark.slow
def test_two_worker_local_cluster_gives_the_single_process_front_and_fills_the_shared_cache(tmp_path):
    one = _search(tmp_path / "one")
    two = _search(tmp_path / "two", workers=2)
    assert _summary(two) == _summary(one)
    assert two.mapper.mapped > 0 and two.accuracy_stats.evaluated > 0  # nothing came from a cache
    # the workers wrote their mappings to the shared cache folder, the client the accuracies
    for folder in ("mapper", "accuracy"):
        written = sorted(p.name for p in (tmp_path / "two").rglob("*.json") if folder in p.parts)
        assert written and written == sorted(p.name for p in (tmp_path / "one").rglob("*.json") if folder in p.parts)


def test_scheduler_without_search_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "quantloop", "compile", "zoo:cnn_digits", "--target", "eyeriss",
                           "--scheduler", "tcp://127.0.0.1:1", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--scheduler" in proc.stderr and "--search" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["notaurl", "foo://x:1"])
@pytest.mark.parametrize("command", [["compile", "zoo:cnn_digits", "--target", "eyeriss", "--search"],
                                     ["explore", "zoo:cnn_digits"]])
def test_malformed_scheduler_is_one_line_exit_2_before_any_work(tmp_path, command, address):
    proc = subprocess.run([sys.executable, "-m", "quantloop", *command, "--scheduler", address, "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"--scheduler {address}" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_open_pool_refuses_a_malformed_scheduler_address():
    from quantloop.errors import QuantloopError
    from quantloop.parallel import open_pool

    with pytest.raises(QuantloopError, match="--scheduler notaurl"):
        with open_pool(1, "notaurl"):
            pass
