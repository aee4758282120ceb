"""CI must run exactly the test command that the README gives a new user."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip() for line in lines if line.strip().startswith("pip install torch==2.13.0")]
    tests = [c for c in commands if "pytest" in c]
    assert len(tests) == 1, f"README must give exactly one test command, found {tests}"
    return tests[0]


def _readme_slow_command() -> str:
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    slow = [line for line in lines if line.startswith("python -m pytest") and "-m slow" in line]
    assert len(slow) == 1, f"README must give exactly one command for the slow set, found {slow}"
    return slow[0]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_test_command() in ci_lines


def test_ci_runs_the_slow_set_after_the_default_run():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_slow_command() in ci_lines
    assert ci_lines.index(_readme_test_command()) < ci_lines.index(_readme_slow_command())


def test_the_default_run_leaves_out_the_slow_set():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow'" in config["addopts"] and any(m.startswith("slow:") for m in config["markers"])


def test_ci_fails_on_errors():
    text = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
