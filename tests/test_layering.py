"""Data flows one way: frontend → ir → passes → backend; targets, costmodel, mapper and runtime are consulted
by passes and backend; nothing imports the CLI. A violation fails here instead of in review."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(?:from|import)\s+quantloop\.(\w+)", re.M)
ROOT_IMPORT = re.compile(r"^\s*from\s+quantloop\s+import\b", re.M)
LEAVES = {"errors": set(), "version": set(), "parallel": {"errors"}, "bits": {"errors"}, "files": {"errors"},
          "options": {"errors", "bits", "backend", "parallel"}, "problem": {"errors", "bits"}, "mapping": {"errors", "problem"}}
"""Light modules every layer may ask (legal bit-widths, options and their defaults, the problem and mapping data
model the IR, the cost model, the mapper and the backend share): they import nothing else (options reads bits for
the --psum-bits choices, and backend.emit, itself light, lazily for the --emit choices)."""

FORBIDDEN = {
    "ir": {"frontend", "passes", "backend", "driver", "cosearch", "mapper", "costmodel", "runtime"},
    "targets": {"frontend", "ir", "passes", "backend", "driver", "cosearch", "mapper", "runtime"},
    "costmodel": {"frontend", "ir", "passes", "backend", "driver", "cosearch", "mapper", "runtime"},
    "mapper": {"frontend", "passes", "backend", "driver", "cosearch", "runtime"},
    "runtime": {"frontend", "passes", "backend", "driver", "cosearch", "mapper", "costmodel", "targets"},
    "frontend": {"passes", "backend", "driver", "cosearch"},
    "passes": {"backend", "driver", "cosearch", "frontend"},
    "backend": {"driver", "cosearch"},
}
"""No exceptions: the IR reads the problem / mapping data model from the light modules, and the passes run the IR
through `runtime` (ONNX export, onnxruntime, data sets), not through the frontend."""


def _sources(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downstream(folder):
    bad = [
        f"{path.relative_to(ROOT)} imports quantloop.{name}"
        for path in _sources(folder)
        for name in IMPORT.findall(path.read_text())
        if name in FORBIDDEN[folder]
    ]
    assert not bad, "; ".join(bad)


def test_nothing_but_the_cli_imports_commands():
    library = [p for p in ROOT.rglob("*.py") if not {"tests", "bench", "commands", ".git"} & set(p.relative_to(ROOT).parts)]
    bad = [str(p.relative_to(ROOT)) for p in library if p.name not in ("cli.py", "__main__.py") and re.search(r"quantloop\.(cli|commands)\b", p.read_text())]
    assert not bad, bad


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaf_modules_import_nothing_else(leaf):
    imported = set(IMPORT.findall((ROOT / f"{leaf}.py").read_text()))
    assert imported <= LEAVES[leaf], f"{leaf}.py imports {sorted(imported - LEAVES[leaf])}"


def test_no_module_imports_the_package_root():
    """`from quantloop import __version__` inside the package is a back-edge to everything `__init__` pulls in."""
    library = [p for p in ROOT.rglob("*.py") if not {"tests", "bench", ".git"} & set(p.relative_to(ROOT).parts)]
    bad = [str(p.relative_to(ROOT)) for p in library if p.name != "__init__.py" or p.parent != ROOT
           if ROOT_IMPORT.search(p.read_text())]
    assert not bad, bad


def test_every_artefact_step_has_one_writer():
    from quantloop.backend.artifacts import writers
    from quantloop.backend.emit import STEPS

    assert tuple(writers()) == STEPS


def test_onnxruntime_session_options_have_one_home():
    """Threads, logging and arena settings of every onnxruntime session: `runtime/ort_options.py` only."""
    library = [p for p in ROOT.rglob("*.py") if not {"tests", "bench", ".git"} & set(p.relative_to(ROOT).parts)]
    bad = [str(p.relative_to(ROOT)) for p in library if "SessionOptions()" in p.read_text()]
    assert bad == ["runtime/ort_options.py"], bad
