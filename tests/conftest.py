"""Test data, the Hypothesis profile and the optional real-Timeloop oracle.

The recorded Timeloop reference runs the tests reproduce live in the repository
(`tests/data/timeloop/`, a copy of the project's shared reference runs: inputs, `expected.json`
and Timeloop's statistics), so the tests need nothing beside the clone. `QUANTLOOP_REFERENCE_DIR`
overrides the folder.

Tests that run a real `timeloop-model` take the `timeloop` fixture: it finds the tool through
`QUANTLOOP_TIMELOOP` (what `.ci/run` sets when a prebuilt Timeloop is beside the clone) or PATH,
and skips with a reason the pytest summary shows when there is none.
"""

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
_ref = Path(os.environ.get("QUANTLOOP_REFERENCE_DIR") or DATA / "timeloop")
if not (_ref / "index.json").is_file():
    raise RuntimeError(f"the Timeloop reference runs ({_ref}/index.json) were not found")
os.environ["QUANTLOOP_REFERENCE_DIR"] = str(_ref)

# Hypothesis runs are reproducible by default (the `ci` profile derandomizes: the same examples every run,
# so CI cannot go red by chance). Explore with fresh random examples locally:
#   HYPOTHESIS_PROFILE=dev python -m pytest -q tests/test_quantization.py
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis_settings.register_profile("dev", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def timeloop():
    """The real Timeloop (`quantloop.costmodel.timeloop_engine.TimeloopTool`), or skip."""
    from quantloop.costmodel.timeloop_engine import find_timeloop
    from quantloop.errors import QuantloopError

    try:
        return find_timeloop()
    except QuantloopError as err:
        pytest.skip(f"real Timeloop not available: {err}")
