"""NSGA-II over the hardware axes (pymoo): genes are indices into each axis' values; every generation's
new designs are evaluated as one batch (so on Dask in parallel), and a design is evaluated once however
often NSGA-II proposes it. Objectives: energy, latency, area (minimised) and accuracy (maximised) when
measured. Deterministic for a seed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from quantloop.errors import QuantloopError


def nsga2_configs(axes: Mapping[str, Sequence[str]], evaluate: Callable[[list[dict[str, str]]], list[dict]], *,
                  population: int, generations: int, seed: int) -> list[dict[str, str]]:
    """The distinct configs NSGA-II evaluated, in the order first seen. `evaluate(configs)` returns one row
    per config (with `energy_pj`, `latency_s`, `area_mm2`, optional `accuracy`), or raises."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    if population < 2 or generations < 1:
        raise QuantloopError("--population must be at least 2 and --generations at least 1 with --sampling nsga2")
    names = list(axes)
    high = np.array([len(axes[n]) - 1 for n in names])
    seen: dict[tuple[int, ...], dict] = {}
    order: list[tuple[int, ...]] = []

    def config(genes: tuple[int, ...]) -> dict[str, str]:
        return {n: axes[n][g] for n, g in zip(names, genes)}

    class HardwareProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(names), n_obj=4, xl=np.zeros(len(names)), xu=high, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            genes = [tuple(int(v) for v in row) for row in np.asarray(x).round().astype(int)]
            new = list(dict.fromkeys(g for g in genes if g not in seen))
            for g, row in zip(new, evaluate([config(g) for g in new])):
                seen[g] = row
                order.append(g)
            out["F"] = np.array([[seen[g]["energy_pj"], seen[g]["latency_s"] or 0.0, seen[g]["area_mm2"] or 0.0,
                                  -(seen[g]["accuracy"] or 0.0)] for g in genes])

    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    minimize(HardwareProblem(), algorithm, ("n_gen", generations), seed=seed, verbose=False)
    return [config(g) for g in order]
