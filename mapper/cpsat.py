"""The mapspace's legality rules as an OR-Tools CP-SAT model.

Integer variables f[level, kind, dim] (kind: temporal, spatial X, spatial Y) hold the factors;
exact products give every level's tile extents, fan-outs and capacities in words at the layer's
bit-widths (⌈tile / values-per-word⌉, input tiles with the sliding-window halo). Each target
rule (a fixed factor, a forbidden spatial dim, a fan-out limit, a capacity) is enforced through
its own assumption literal, so an infeasible layer is explained by CP-SAT's infeasible core.

Used to verify every emitted mapping, to find starting tilings when sampling finds none, and to
explain layers without a legal mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from quantloop.mapping import MappingArrays
from quantloop.problem import DATASPACES, DIMS
from quantloop.costmodel.legality import FREE, SPATIAL_X, TEMPORAL
from quantloop.mapper.mapspace import KIND_NAMES, Mapspace, divisors

_N, _G, _C, _M, _P, _Q, _R, _S = range(8)
_DS_DIMS = {"Weights": (_G, _C, _M, _R, _S), "Outputs": (_N, _G, _M, _P, _Q)}


@dataclass
class Model:
    model: cp_model.CpModel
    f: dict[tuple[int, int, int], cp_model.IntVar]
    words: dict[tuple[int, int], cp_model.IntVar]
    rules: dict[int, str] = field(default_factory=dict)  # literal index → sentence
    capacity_literal: dict[int, cp_model.IntVar] = field(default_factory=dict)
    literals: list = field(default_factory=list)


def _product(m: cp_model.CpModel, terms: list, ub: int, name: str):
    cur = terms[0]
    for i, t in enumerate(terms[1:]):
        nxt = m.NewIntVar(1, ub, f"{name}_{i}")
        m.AddMultiplicationEquality(nxt, [cur, t])
        cur = nxt
    return cur


def build(space: Mapspace, keep: np.ndarray | None = None, opw: np.ndarray | None = None) -> Model:
    """The legality model at keep sets `keep` [L, 3] (default: must-keep) and values per word `opw` [L, 3]
    (default: the mapspace's, Outputs at the wider of their and the partial sums' width)."""
    keep = space.must_keep if keep is None else keep
    out = Model(cp_model.CpModel(), {}, {})
    sizes = [int(x) for x in space.problem.dim_array]
    _add_factors(out, space, sizes)
    cum = _add_tile_extents(out, space, sizes)
    tiles = _add_kept_tiles(out, space, keep, cum, space.opw if opw is None else opw)
    _add_tile_bounds(out, space, tiles)
    return out


def _rule_literal(out: Model, text: str):
    """A fresh assumption literal that enforces the target rule `text` (named in infeasible cores)."""
    lit = out.model.NewBoolVar(text)
    out.rules[lit.Index()] = text
    out.literals.append(lit)
    return lit


def _add_factors(out: Model, space: Mapspace, sizes: list[int]) -> None:
    """f[level, kind, dim] over the dim's divisors, the slot table's fixed factors, and the fan-out limits."""
    m = out.model
    for l, lvl in enumerate(space.arch.levels):
        for k in range(3):
            fanout = int(space.fanout[l, k - 1]) if k else None
            axis = "x" if k == SPATIAL_X else "y"
            for d, name in enumerate(DIMS):
                values = divisors(sizes[d])
                if fanout is not None:
                    values = [v for v in values if v <= max(fanout, 1)]
                var = m.NewIntVarFromDomain(cp_model.Domain.FromValues(values), f"f_{lvl.name}_{KIND_NAMES[k]}_{name}")
                out.f[l, k, d] = var
                fixed = int(space.slots[l, k, d])
                if fixed == FREE:
                    continue
                if k == TEMPORAL:
                    m.Add(var == fixed).OnlyEnforceIf(_rule_literal(out, f"level {lvl.name}: temporal factor {name}={fixed}"))
                elif fanout == 1:
                    m.Add(var == 1)
                elif fixed == 1:
                    m.Add(var == 1).OnlyEnforceIf(_rule_literal(out, f"level {lvl.name}: spatial {axis} does not allow {name}"))
                else:
                    m.Add(var == fixed).OnlyEnforceIf(_rule_literal(out, f"level {lvl.name}: spatial {axis} factor {name}={fixed}"))
            if k and space.fanout[l, k - 1] > 1:
                limit = int(space.fanout[l, k - 1])
                prod = m.NewIntVar(1, int(np.prod([max(1, s) for s in sizes])), f"fanout_{lvl.name}_{axis}")
                m.AddMultiplicationEquality(prod, [out.f[l, k, d] for d in range(8)])
                m.Add(prod <= limit).OnlyEnforceIf(_rule_literal(out, f"level {lvl.name}: fan-out {axis} ≤ {limit}"))


def _add_tile_extents(out: Model, space: Mapspace, sizes: list[int]) -> dict[tuple[int, int], cp_model.IntVar]:
    """cum[level, dim]: the dim's extent of a tile at `level` (the product of its factors there and inside)."""
    m, L = out.model, space.L
    cum: dict[tuple[int, int], cp_model.IntVar] = {}
    for l in reversed(range(L)):
        for d in range(8):
            var = m.NewIntVarFromDomain(cp_model.Domain.FromValues(divisors(sizes[d])), f"c_{l}_{DIMS[d]}")
            terms = [out.f[l, k, d] for k in range(3)] + ([cum[l + 1, d]] if l + 1 < L else [])
            m.AddMultiplicationEquality(var, terms)
            cum[l, d] = var
    for d in range(8):
        m.Add(cum[0, d] == sizes[d])
    return cum


def _add_kept_tiles(out: Model, space: Mapspace, keep: np.ndarray, cum: dict,
                    opw: np.ndarray) -> dict[tuple[int, int], tuple]:
    """(values, words) of each kept tile at the levels a tile bound reads, keyed by (level, data space)."""
    m, pr = out.model, space.problem
    width_ub, height_ub = pr.input_width, pr.input_height
    tiles: dict[tuple[int, int], tuple] = {}
    for l in sorted({bound.level for bound in space.bounds}):
        for k, ds in enumerate(DATASPACES):
            if not keep[l, k]:
                continue
            ub = pr.tensor_sizes[ds]
            if ds == "Inputs":
                width, height = pr.input_window(cum[l, _P], cum[l, _Q], cum[l, _R], cum[l, _S])
                w = m.NewIntVar(1, width_ub, f"w_{l}")
                m.Add(w == width)
                h = m.NewIntVar(1, height_ub, f"h_{l}")
                m.Add(h == height)
                tile = _product(m, [cum[l, _N], cum[l, _G], cum[l, _C], w, h], ub, f"tile_{l}_{ds}")
            else:
                tile = _product(m, [cum[l, d] for d in _DS_DIMS[ds]], ub, f"tile_{l}_{ds}")
            per_word = int(opw[l, k])
            words = m.NewIntVar(1, ub, f"words_{l}_{ds}")
            m.AddDivisionEquality(words, tile + (per_word - 1), per_word)
            out.words[l, k] = words
            tiles[l, k] = (tile, words)
    return tiles


def _add_tile_bounds(out: Model, space: Mapspace, tiles: dict[tuple[int, int], tuple]) -> None:
    """The target's tile bounds, as `costmodel.legality` lists them, each behind its own literal."""
    for bound in space.bounds:
        terms = [tiles[bound.level, k][bound.unit == "words"] for k in bound.dataspaces if (bound.level, k) in tiles]
        if not terms:
            continue
        lit = _rule_literal(out, bound.rule)
        if bound.unit == "words" and len(bound.dataspaces) == len(DATASPACES):
            out.capacity_literal[bound.level] = lit
        out.model.Add(sum(terms) <= bound.limit).OnlyEnforceIf(lit)


def _solver(seed: int = 0, seconds: float = 20.0) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_time_in_seconds = seconds
    return solver


def _factors(solver, model: Model, L: int) -> np.ndarray:
    out = np.ones((L, 3, 8), dtype=np.int64)
    for (l, k, d), var in model.f.items():
        out[l, k, d] = solver.Value(var)
    return out


def verify(space: Mapspace, factors: np.ndarray, keep: np.ndarray) -> bool:
    """True when the tiling factors [L, 3, 8] with keep sets [L, 3] satisfy every rule, with the exact packing
    of this mapping's tiles (Outputs at the partial-sum width only where a reduction is still open:
    `costmodel.model.word_packing`, as the cost model checks them)."""
    from quantloop.costmodel.model import word_packing

    L = space.L
    arrays = MappingArrays(factors[None, :, 0], factors[None, :, 1], factors[None, :, 2],
                           np.tile(np.arange(8), (1, L, 1)), np.asarray(keep, dtype=bool)[None])
    model = build(space, keep, word_packing(space.arch, space.bits, arrays)[0])
    for (l, k, d), var in model.f.items():
        model.model.Add(var == int(factors[l, k, d]))
    model.model.AddAssumptions(model.literals)
    return _solver().Solve(model.model) in (cp_model.OPTIMAL, cp_model.FEASIBLE)


class _Collect(cp_model.CpSolverSolutionCallback):
    def __init__(self, model: Model, L: int, limit: int) -> None:
        super().__init__()
        self.model, self.L, self.limit, self.found = model, L, limit, []

    def on_solution_callback(self) -> None:
        self.found.append(_factors(self, self.model, self.L))
        if len(self.found) >= self.limit:
            self.StopSearch()


def find_tilings(space: Mapspace, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` legal tilings [K, L, 3, 8] found by CP-SAT (empty when infeasible)."""
    model = build(space)
    model.model.AddAssumptions(model.literals)
    solver = _solver(seed)
    solver.parameters.enumerate_all_solutions = True
    collect = _Collect(model, space.L, count)
    solver.Solve(model.model, collect)
    if not collect.found:
        return np.zeros((0, space.L, 3, 8), dtype=np.int64)
    return np.unique(np.array(collect.found), axis=0)


def count_tilings(space: Mapspace, limit: int = 1_000_000) -> int:
    """Number of legal tilings (must-keep capacities), by CP-SAT enumeration (for tests)."""
    model = build(space)
    model.model.AddAssumptions(model.literals)
    solver = _solver(0, 120.0)
    solver.parameters.enumerate_all_solutions = True
    collect = _Collect(model, space.L, limit)
    solver.Solve(model.model, collect)
    return len(collect.found)


def explain_infeasible(space: Mapspace, layer: str) -> str:
    """One sentence saying why no legal mapping exists: the smallest tile that a too small level
    must hold, or the target rules that contradict each other."""
    arch, pr = space.arch, space.problem
    for d, name in enumerate(DIMS):
        if len(space.dim_options(d, prune_capacity=False)) == 0:
            rules = [f"{lvl.name} temporal {name}={lvl.temporal_factors[name]}" for lvl in arch.levels
                     if name in lvl.temporal_factors and lvl.temporal_factors[name] != 1]
            rules += [f"{lvl.name} spatial {name}={f}" for lvl in arch.levels
                      for f in (lvl.spatial_x_factors.get(name), lvl.spatial_y_factors.get(name)) if f and f != 1]
            return (f"layer {layer}: no legal mapping on target {arch.name}: the fixed factors of {name} "
                    f"({', '.join(rules) or 'none'}) cannot multiply to {name}={getattr(pr, name)} within the fan-outs")
    model = build(space)
    model.model.AddAssumptions(model.literals)
    solver = _solver()
    status = solver.Solve(model.model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return f"layer {layer}: the mapper found no legal mapping on target {arch.name}, though one exists (search budget too small)"
    if status != cp_model.INFEASIBLE:
        return f"layer {layer}: CP-SAT could not decide within its time limit whether a legal mapping exists on target {arch.name}"
    core = [model.rules[i] for i in solver.SufficientAssumptionsForInfeasibility() if i in model.rules]
    capacity_levels = [l for l, lit in model.capacity_literal.items() if model.rules[lit.Index()] in core]
    for l in capacity_levels:
        smallest = _smallest_tile(space, l)
        if smallest is None:
            continue
        lvl = arch.levels[l]
        words, need_bits = smallest
        if words > lvl.capacity_words:
            kept = ", ".join(ds for k, ds in enumerate(DATASPACES) if space.must_keep[l, k])
            return (f"layer {layer}: no legal mapping on target {arch.name}: level {lvl.name} must keep {kept}, "
                    f"whose smallest tile needs {need_bits} bits ({words} words of {lvl.word_bits} bits) at bits "
                    f"{space.bits}, but the level holds {lvl.capacity_bits} bits ({lvl.capacity_words} words)")
    return f"layer {layer}: no legal mapping on target {arch.name}: these constraints contradict: {'; '.join(core)}"


def _smallest_tile(space: Mapspace, level: int) -> tuple[int, int] | None:
    """(words, bits) of the smallest tile level `level` can hold under every other rule."""
    model = build(space)
    lit = model.capacity_literal[level]
    model.model.AddAssumptions([x for x in model.literals if x.Index() != lit.Index()])
    model.model.Add(lit == 0)
    words = [v for (l, _), v in model.words.items() if l == level]
    model.model.Minimize(sum(words))
    solver = _solver()
    if solver.Solve(model.model) != cp_model.OPTIMAL:
        return None
    total = int(sum(solver.Value(v) for v in words))
    return total, total * space.arch.levels[level].word_bits
