"""`pip install .` (not only `-e`) must ship every subpackage and data file."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(["quantloop", *init.parent.relative_to(ROOT).parts])
        for init in ROOT.rglob("__init__.py")
        if not {"tests", "bench", ".git", "build"} & set(init.relative_to(ROOT).parts)
    }
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_data_files_are_declared():
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = ROOT.joinpath(*package.split(".")[1:])
        assert any(any(folder.glob(p)) for p in patterns), f"{package}: no file matches {patterns}"
    assert "*.yaml" in data["quantloop.targets"] and "*.onnx" in data["quantloop.frontend.zoo"]
    assert "*.json" in data["quantloop.backend"]
