"""Timeloop's sliding-window rule for one step of a loop, shared by the Inputs visits
(`model._Nest._input_visits`) and the link-transfer deltas (`link_transfers._previous_deltas`).

A step of loop j translates a level's Inputs tile by (dw, dh) along the input width and height and may
bring new N/G/C values (`new_hard`). With k the innermost loop above the level that moves the tile,
the step fetches nothing when the tile does not move (`still`), only the part not in the previous
tile when it repeats k's translation (`steady`), and the whole tile otherwise.
"""

from __future__ import annotations

import numpy as np


def step_kinds(dw: np.ndarray, dh: np.ndarray, new_hard: np.ndarray, dwk: np.ndarray, dhk: np.ndarray,
               hardk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(still, steady) masks of steps translating the tile by (dw, dh), given k's translation (dwk, dhk)
    and whether k brings new N/G/C values (`hardk`); all arrays broadcast together."""
    still = ~new_hard & (dw == 0) & (dh == 0)
    steady = (new_hard & hardk) | (~new_hard & ~hardk & (dw == dwk) & (dh == dhk))
    return still, steady
