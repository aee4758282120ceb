"""NSGA-II (pymoo) over the integer genes of a `SearchSpace`.

Genes are indices into the space's widths (and schemes); SBX crossover and polynomial mutation
work on floats and a rounding repair brings children back to integers (pymoo's recipe for integer
variables). The initial population holds the uniform configurations the space admits (w8a8,
w6a6, w5a5, w4a8, w4a4, ...), in each of the target's weight schemes, the same with the first and last
layer at int w8a8, and seeded random ones. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from quantloop.bits import legal_widths
from quantloop.passes.search.space import SearchSpace

UNIFORM_SEEDS = ((8, 8), (6, 6), (5, 5), (4, 8), (4, 4), (8, 6), (6, 8), (5, 8), (4, 6), (4, 5), (3, 8), (3, 4), (3, 3), (2, 8), (2, 2))
EDGES_AT_8_SEEDS = ((4, 8), (4, 6), (4, 4), (3, 8))


def initial_population(space: SearchSpace, size: int, seed: int) -> np.ndarray:
    """The uniform configurations the widths admit first, then the usual mixed-precision start
    (first and last layer at w8a8, the rest low), then seeded random genes.

    Where the target runs several weight schemes, every preset comes in each scheme the width is legal
    for, interleaved (w8a8 int, w8a8 pot, w6a6 int, ...), so that a small population starts with power-of-two
    candidates too; the mixed-precision presets keep the first and last layer int w8a8. A single-scheme
    space gets exactly the int presets in their usual order."""
    rows = []
    n = len(space.layers)
    first = space.schemes[0]
    for w, a in UNIFORM_SEEDS:
        for scheme in space.schemes:
            if w in space.widths and a in space.widths and w in legal_widths(scheme):
                rows.append(space.uniform(w, a, scheme))
    for w, a in EDGES_AT_8_SEEDS:
        for scheme in space.schemes:
            if w in space.widths and a in space.widths and n > 2 and w in legal_widths(scheme):
                schemes = [first] + [scheme] * (n - 2) + [first] if space.per_layer_schemes else scheme
                rows.append(space.encode([8] + [w] * (n - 2) + [8], [8] + [a] * (n - 2) + [8], schemes))
    rows = rows[:size]
    low, high = space.bounds()
    rng = np.random.default_rng(seed)
    while len(rows) < size:
        rows.append(rng.integers(low, high + 1))
    return np.array(rows, dtype=float)


def run_nsga2(
    space: SearchSpace,
    evaluate: Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]],
    *,
    population: int,
    generations: int,
    seed: int,
    on_generation: Callable[[int], None] | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Run NSGA-II; `evaluate(genes)` returns (F [n, 3], G [n, 1]) and records what it sees. `start` (genes, one
    row per individual) replaces the initial population: a search continued from another's final population.
    Returns the final population's genes."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.optimize import minimize

    low, high = space.bounds()

    class BitsProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=space.n_genes, n_obj=3, n_ieq_constr=1, xl=low, xu=high, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            f, g = evaluate([row for row in np.asarray(x).round().astype(int)])
            out["F"], out["G"] = f, g

    class Progress(Callback):
        def notify(self, algorithm):
            if on_generation is not None:
                on_generation(algorithm.n_gen)

    algorithm = NSGA2(
        pop_size=population,
        sampling=initial_population(space, population, seed) if start is None else np.asarray(start, dtype=float),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    result = minimize(BitsProblem(), algorithm, ("n_gen", generations), seed=seed, callback=Progress(), verbose=False)
    return np.asarray(result.pop.get("X")).round().astype(int)
