"""Locate the real Timeloop reference runs for the tests that reproduce them.

CI clones the repository with `shared/` beside it; a developer's checkout has it at
`../shared` too. `QUANTLOOP_REFERENCE_DIR` overrides both. A missing folder is an error, never a
silent skip: those tests are what keeps the cost model faithful.
"""

import os
from pathlib import Path

_CANDIDATES = [
    os.environ.get("QUANTLOOP_REFERENCE_DIR", ""),
    str(Path(__file__).resolve().parents[2] / "shared" / "reference" / "timeloop"),
    "/work/shared/reference/timeloop",
]
_found = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "index.json").is_file()), None)
if _found is None:
    raise RuntimeError(
        "the Timeloop reference runs (shared/reference/timeloop/index.json) were not found; "
        "set QUANTLOOP_REFERENCE_DIR to that folder"
    )
os.environ["QUANTLOOP_REFERENCE_DIR"] = str(_found)

# Hypothesis runs are reproducible by default (the `ci` profile derandomizes: the same examples every run,
# so CI cannot go red by chance). Explore with fresh random examples locally:
#   HYPOTHESIS_PROFILE=dev python -m pytest -q tests/test_quantization.py
from hypothesis import settings as _hypothesis_settings

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis_settings.register_profile("dev", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
