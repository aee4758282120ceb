"""Search for the best mapping of one layer under the exact cost model.

Small mapspaces are searched exhaustively: every legal tiling × every combination of per-level
loop-order candidates (`quantloop.mapper.orders`, checked against brute force) × every keep/bypass
choice is scored by `evaluate_batch`, so the result is proven optimal within the mapspace.
Larger ones: a seeded sample of legal tilings is scored with data-space-stationary orders, the
best few also try their levels' P/Q/R/S order variants (`orders.window_variants`), and they seed a
steepest-descent local search whose moves shift one prime factor between
two slots of a dim, change one level's loop order or toggle one optional keep; every neighbour
is scored exactly (the descents run in lockstep, one batch per step for all of them, with the
result of running them one after another). Both paths are deterministic for a given seed.

Each path is a `Strategy` (`Exhaustive`, `SampledLocalSearch`; Timeloop's `SearchAlgorithm` plays
the same part) run in `STRATEGIES` order until one decides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from quantloop.mapping import Mapping, MappingArrays
from quantloop.options import OBJECTIVES
from quantloop.costmodel.model import BatchResult, evaluate_batch
from quantloop.problem import DATASPACES, DIMS, Bits, Problem, prime_factors
from quantloop.costmodel.legality import FREE
from quantloop.mapper.mapspace import Mapspace, divisors
from quantloop.mapper.orders import level_candidates, present_masks, stationary_orders, window_variants
from quantloop.targets.arch import Arch

_EVAL_CHUNK = 50_000


@dataclass(frozen=True)
class Budget:
    """How much work one layer may take (evaluations of the exact cost model)."""

    exhaustive_evaluations: int = 300_000
    exhaustive_options: int = 60_000
    exhaustive_tilings: int = 100_000
    samples: int = 4_000
    starts: int = 12
    max_steps: int = 60
    evaluations: int = 150_000


@dataclass
class SearchOutcome:
    arrays: MappingArrays
    considered: int
    optimal: bool


def _keys(r: BatchResult, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) minimisation keys; illegal candidates get +inf."""
    if objective == "energy":
        primary, secondary = r.energy, r.cycles
    elif objective == "latency":
        primary, secondary = r.cycles, r.energy
    else:
        primary, secondary = r.energy * r.cycles, r.energy
    bad = ~r.capacity_ok
    return np.where(bad, np.inf, primary), np.where(bad, np.inf, secondary)


def _best(primary: np.ndarray, secondary: np.ndarray) -> int:
    return int(np.lexsort((np.arange(len(primary)), secondary, primary))[0])


class _Scorer:
    """Scores batches exactly, counts legal candidates and keeps the best one seen."""

    def __init__(self, arch: Arch, problem: Problem, bits: Bits, objective: str) -> None:
        self.arch, self.problem, self.bits, self.objective = arch, problem, bits, objective
        self.evaluations = 0
        self.legal = 0
        self.best: MappingArrays | None = None
        self.best_key = (np.inf, np.inf)

    def keys(self, arrays: MappingArrays) -> tuple[np.ndarray, np.ndarray]:
        """The (primary, secondary) keys of every candidate, recording nothing."""
        prim, sec = [], []
        for start in range(0, arrays.batch, _EVAL_CHUNK):
            part = arrays[start:start + _EVAL_CHUNK]
            p, s = _keys(evaluate_batch(self.arch, self.problem, part, self.bits), self.objective)
            prim.append(p)
            sec.append(s)
        if not prim:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(prim), np.concatenate(sec)

    def record(self, arrays: MappingArrays, primary: np.ndarray, secondary: np.ndarray) -> None:
        """Count one scored batch and keep its best candidate if it beats every earlier one (ties: the
        earliest seen wins)."""
        self.evaluations += arrays.batch
        self.legal += int(np.isfinite(primary).sum())
        if arrays.batch:
            i = _best(primary, secondary)
            if (primary[i], secondary[i]) < self.best_key:
                self.best_key = (float(primary[i]), float(secondary[i]))
                self.best = arrays[i]

    def score(self, arrays: MappingArrays) -> tuple[np.ndarray, np.ndarray]:
        primary, secondary = self.keys(arrays)
        self.record(arrays, primary, secondary)
        return primary, secondary


def _arrays(factors: np.ndarray, order: np.ndarray, keep: np.ndarray) -> MappingArrays:
    return MappingArrays(factors[:, :, 0], factors[:, :, 1], factors[:, :, 2], order, keep)


_FIT_ENTRIES = 50_000_000  # tilings × keep choices × levels checked at once before an exhaustive search

#: Optional keep choices beyond this many (2^n assignments) are sampled, not all tried.
KEEP_CHOICE_BITS = 10


def optional_keeps(space: Mapspace) -> list[tuple[int, int]]:
    return [(l, k) for l in range(space.L) for k in range(3) if space.may_keep[l, k] and not space.must_keep[l, k]]


def keep_choices(space: Mapspace, rng: np.random.Generator | None = None) -> np.ndarray:
    """Every keep assignment [n, L, 3]: the must-keep sets plus any subset of the optional ones (beyond
    `KEEP_CHOICE_BITS` optional ones: the two extremes and a seeded sample of subsets)."""
    optional = optional_keeps(space)
    if len(optional) <= KEEP_CHOICE_BITS:
        subsets = np.array(list(itertools.product((False, True), repeat=len(optional))), dtype=bool)
    else:
        rng = rng or np.random.default_rng(0)
        subsets = rng.random((1 << KEEP_CHOICE_BITS, len(optional))) < 0.5
        subsets = np.unique(np.concatenate([np.zeros((1, len(optional)), bool), np.ones((1, len(optional)), bool),
                                            subsets]), axis=0)
    out = np.repeat(space.must_keep[None], len(subsets), axis=0)
    for j, (l, k) in enumerate(optional):
        out[:, l, k] = subsets[:, j].reshape(-1)
    return out


def _permutations(arch: Arch) -> list[tuple[str, ...]]:
    return [tuple(lvl.temporal_permutation) for lvl in arch.levels]


class _Expansion:
    """Every (tiling, keep choice that fits, combination of per-level order candidates), expanded
    lazily in chunks (mixed-radix decoding of the order combination index)."""

    def __init__(self, space: Mapspace, factors: np.ndarray, keeps: np.ndarray) -> None:
        perms = _permutations(space.arch)
        masks = present_masks(factors[:, :, 0])
        T, L = masks.shape
        self.factors, self.keeps, self.L = factors, keeps, L
        self.tables, self.cidx = [], np.empty((T, L), dtype=np.int64)
        counts = np.empty((T, L), dtype=np.int64)
        for l in range(L):
            uniq, inv = np.unique(masks[:, l], return_inverse=True)
            cands = [level_candidates(int(m), perms[l])[0] for m in uniq]
            table = np.zeros((len(uniq), max(len(c) for c in cands), 8), dtype=np.int64)
            for i, c in enumerate(cands):
                table[i, :len(c)] = c
            self.tables.append(table)
            self.cidx[:, l] = inv.reshape(-1)
            counts[:, l] = np.array([len(c) for c in cands])[inv.reshape(-1)]
        fits = space.fits_each_keep(space.cumulative(factors), keeps)  # [T, K]
        self.ti, self.ki = np.nonzero(fits)
        self.counts = counts[self.ti]  # [pairs, L]
        self.size = float(self.counts.astype(np.float64).prod(axis=1).sum())  # float: cannot wrap around
        self.per_pair = self.counts.prod(axis=1) if self.size < 2**62 else np.zeros(len(self.ti), np.int64)

    def chunks(self, size: int):
        ends = np.cumsum(self.per_pair)
        start = 0
        while start < len(self.ti):
            stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + size, side="right")))
            yield self._expand(start, min(stop, len(self.ti)))
            start = stop

    def _expand(self, a: int, b: int) -> MappingArrays:
        reps = self.per_pair[a:b]
        pair = np.repeat(np.arange(a, b), reps)
        first = np.repeat(np.cumsum(reps) - reps, reps)
        j = np.arange(len(pair)) - first
        radix = self.counts[pair]  # [n, L]
        stride = np.flip(np.cumprod(np.flip(radix, axis=1), axis=1), axis=1) // radix
        digit = (j[:, None] // stride) % radix
        t = self.ti[pair]
        order = np.stack([self.tables[l][self.cidx[t, l], digit[:, l]] for l in range(self.L)], axis=1)
        return _arrays(self.factors[t], order, self.keeps[self.ki[pair]])


def _exponent(n: int, p: int) -> int:
    """The exponent of prime p in n."""
    e = 0
    while n % p == 0:
        n //= p
        e += 1
    return e


def _prime_weights(options: np.ndarray, size: int) -> np.ndarray:
    """Probability of each option [n, L, 3] when every prime factor of the dim picks a free slot
    uniformly: Π over primes of the multinomial count of the option's exponents."""
    from math import factorial

    weights = np.ones(len(options))
    flat = options.reshape(len(options), -1)
    flat = flat[:, flat.max(axis=0, initial=1) > 1]  # slots at 1 in every option add no exponent
    divs = divisors(size)  # every slot's factor divides the dim: exponents are looked up per divisor
    at = np.searchsorted(np.array(divs, dtype=np.int64), flat)
    for p in sorted(set(prime_factors(size))):
        exps = np.array([_exponent(d, p) for d in divs], dtype=np.int64)[at]
        fact = np.array([float(factorial(i)) for i in range(int(exps.sum(axis=1).max()) + 1)])
        weights *= fact[exps.sum(axis=1)] / np.prod(fact[exps], axis=1)
    return weights / weights.sum()


def sample_tilings(space: Mapspace, count: int, rng: np.random.Generator, rounds: int = 40) -> np.ndarray:
    """Up to `count` distinct legal tilings [K, L, 3, 8] (must-keep capacities). Each dim's option
    is drawn uniformly (even rounds) or as if each prime factor picked a free slot uniformly (odd)."""
    opts = space.options
    if any(len(o) == 0 for o in opts):
        return np.zeros((0, space.L, 3, 8), dtype=np.int64)
    opt_cum = [np.flip(np.cumprod(np.flip(o.prod(axis=2), axis=1), axis=1), axis=1) for o in opts]  # [n, L]
    opt_spatial = [np.ascontiguousarray(o[:, :, 1:]) for o in opts]  # [n, L, 2]: contiguous rows gather fast
    weights = [_prime_weights(o, int(space.problem.dim_array[d])) for d, o in enumerate(opts)]
    found: list[np.ndarray] = []
    have = 0
    batch = max(2 * count, 4096)
    for r in range(rounds):
        idx = np.stack([rng.integers(0, len(o), size=batch) if r % 2 == 0 else rng.choice(len(o), size=batch, p=w)
                        for o, w in zip(opts, weights)], axis=1)  # [B, 8]
        spatial = np.ones((batch, space.L, 2), dtype=np.int64)
        cum = np.empty((batch, space.L, 8), dtype=np.int64)
        for d in range(8):
            spatial *= opt_spatial[d].take(idx[:, d], axis=0)
            cum[:, :, d] = opt_cum[d].take(idx[:, d], axis=0)
        ok = np.all(spatial <= space.fanout, axis=(1, 2))
        ok[ok] = space.fits(cum[ok], space.must_keep)  # capacities only where the fan-outs hold
        if ok.any():
            found.append(idx[ok])
            have += int(ok.sum())
        if have >= 2 * count:
            break
    if not found:
        return np.zeros((0, space.L, 3, 8), dtype=np.int64)
    idx = _unique_rows(np.concatenate(found), [len(o) for o in opts])
    if len(idx) > count:
        idx = idx[np.sort(rng.choice(len(idx), size=count, replace=False))]
    return np.stack([opts[d][idx[:, d]] for d in range(8)], axis=-1)


def _unique_rows(idx: np.ndarray, radix: list[int]) -> np.ndarray:
    """`np.unique(idx, axis=0)` (sorted distinct rows) for rows of option indices below `radix`, through
    one mixed-radix int64 code per row (a 1-D unique: several times faster than a row-wise one)."""
    if float(np.prod(radix, dtype=np.float64)) >= 2.0**62:
        return np.unique(idx, axis=0)
    weights = np.cumprod([1] + radix[:0:-1])[::-1].astype(np.int64)  # first column most significant
    codes = np.unique(idx @ weights)
    return np.stack([codes // w % r for w, r in zip(weights, radix)], axis=1)


def _free_slots(space: Mapspace, dim: int) -> list[tuple[int, int]]:
    return [(l, k) for l in range(space.L) for k in range(3) if space.slots[l, k, dim] == FREE]


def _neighbours(space: Mapspace, factors: np.ndarray, order: np.ndarray, keep: np.ndarray,
                free: list[list[tuple[int, int]]], perms: list[tuple[str, ...]]):
    """All one-move neighbours of one mapping: (factors [n, L, 3, 8], order [n, L, 8], keep [n, L, 3]), in
    a fixed order: prime-factor shifts (by dim, source slot, prime, target slot), then loop orders (by
    level and candidate), then keep toggles."""
    shifts = []  # (dim, source level, source kind, prime, target level, target kind)
    for d in range(8):
        slots = free[d]
        for a in slots:
            fa = int(factors[a[0], a[1], d])
            if fa == 1:
                continue
            for p in sorted(set(prime_factors(fa))):
                shifts += [(d, a[0], a[1], p, b[0], b[1]) for b in slots if b != a]
    masks = present_masks(factors[:, 0])
    reorders = []  # (level, candidate order)
    for l in range(space.L):
        cands = level_candidates(int(masks[l]), perms[l])[0]
        reorders += [(l, c) for c in cands[~np.all(cands == order[l], axis=1)]]
    toggles = [(l, k) for l in range(space.L) for k in range(3) if space.may_keep[l, k] and not space.must_keep[l, k]]
    n = len(shifts) + len(reorders) + len(toggles)
    F = np.repeat(factors[None], n, axis=0)
    O = np.repeat(order[None], n, axis=0)
    K = np.repeat(keep[None], n, axis=0)
    if shifts:
        d, al, ak, p, bl, bk = np.array(shifts, dtype=np.int64).T
        rows = np.arange(len(shifts))
        F[rows, al, ak, d] //= p
        F[rows, bl, bk, d] *= p
    if reorders:
        rows = len(shifts) + np.arange(len(reorders))
        O[rows, [l for l, _ in reorders]] = np.array([c for _, c in reorders])
    if toggles:
        rows = len(shifts) + len(reorders) + np.arange(len(toggles))
        ls, ks = np.array(toggles, dtype=np.int64).T
        K[rows, ls, ks] = ~K[rows, ls, ks]
    if n == 0:
        return F, O, K
    ok = np.all(F[:, :, 1].prod(axis=-1) <= space.fanout[:, 0], axis=1)
    ok &= np.all(F[:, :, 2].prod(axis=-1) <= space.fanout[:, 1], axis=1)
    return F[ok], O[ok], K[ok]


def _local_search(space: Mapspace, start: MappingArrays, scorer: _Scorer, budget: Budget) -> None:
    """Steepest descent from one mapping (see `_local_searches`)."""
    _local_searches(space, start, scorer, budget)


def _local_searches(space: Mapspace, starts: MappingArrays, scorer: _Scorer, budget: Budget,
                    start_keys: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Steepest descent from each start: move to the best one-move neighbour while it improves the key.

    The descents are independent, so they run in lockstep (one cost-model batch per step for every
    descent still improving: a handful of batches instead of one per step of each descent). The scorer
    then hears each descent's batches as if the descents had run one after another in `starts` order,
    each stopping once `budget.evaluations` is reached: the best mapping, its tie-breaks and the counts
    are exactly those of running them one by one. `start_keys`: the starts' keys when already scored
    (they are counted again, not re-evaluated)."""
    perms = _permutations(space.arch)
    free = [_free_slots(space, d) for d in range(8)]
    n = starts.batch
    if start_keys is None:
        start_keys = scorer.keys(starts)
    logs: list[list[tuple[MappingArrays, np.ndarray, np.ndarray]]] = [
        [(starts[t], start_keys[0][t:t + 1], start_keys[1][t:t + 1])] for t in range(n)]
    logged = [1] * n
    state = [(np.stack([starts.temporal[t], starts.spatial_x[t], starts.spatial_y[t]], axis=1), starts.order[t],
              starts.keep[t], (float(start_keys[0][t]), float(start_keys[1][t]))) for t in range(n)]
    active = list(range(n))
    for _ in range(budget.max_steps):
        # a descent whose earlier peers and own steps already reach the budget would never take another step
        spent, still = scorer.evaluations, []
        for t in range(n):
            spent += logged[t]
            if t in active and spent < budget.evaluations:
                still.append(t)
        moves = []
        for t in still:
            factors, order, keep, _key = state[t]
            F, O, K = _neighbours(space, factors, order, keep, free, perms)
            if len(F):
                moves.append((t, F, O, K))
        if not moves:
            break
        primary, secondary = scorer.keys(_arrays(np.concatenate([m[1] for m in moves]),
                                                 np.concatenate([m[2] for m in moves]),
                                                 np.concatenate([m[3] for m in moves])))
        active, at = [], 0
        for t, F, O, K in moves:
            p, s = primary[at:at + len(F)], secondary[at:at + len(F)]
            at += len(F)
            logs[t].append((_arrays(F, O, K), p, s))
            logged[t] += len(F)
            i = _best(p, s)
            if (float(p[i]), float(s[i])) < state[t][3]:
                state[t] = (F[i], O[i], K[i], (float(p[i]), float(s[i])))
                active.append(t)
    for log in logs:
        scorer.record(*log[0])
        for batch in log[1:]:
            if scorer.evaluations >= budget.evaluations:
                break
            scorer.record(*batch)


@dataclass
class Job:
    """One layer's search as every strategy sees it: the mapspace, the exact scorer (which keeps
    the best legal mapping found and counts the legal ones), the seeded generator and the budget."""

    space: Mapspace
    scorer: _Scorer
    rng: np.random.Generator
    budget: Budget
    seed: int
    keeps: np.ndarray  # [K, L, 3] keep/bypass choices to try

    def outcome(self, optimal: bool) -> SearchOutcome | None:
        best = self.scorer.best
        return None if best is None else SearchOutcome(best, self.scorer.legal, optimal=optimal)


PASS = "pass"
"""What a strategy returns when the mapspace is outside what it handles (the next one runs)."""


class Strategy(Protocol):
    """One way to search a layer's mapspace (as Timeloop's `SearchAlgorithm`). `run` scores
    candidates through `job.scorer` and returns the outcome, None when no legal mapping exists,
    or `PASS`. A new strategy is a class with this method, listed in `STRATEGIES`."""

    name: str

    def run(self, job: Job) -> SearchOutcome | None | str: ...


class Exhaustive:
    """Every legal tiling × every loop-order candidate × every keep choice: proven optimal.
    Passes when the mapspace exceeds the budget's exhaustive limits."""

    name = "exhaustive"

    def run(self, job: Job) -> SearchOutcome | None | str:
        space, budget = job.space, job.budget
        n_options = float(np.prod([max(1, len(o)) for o in space.options], dtype=np.float64))
        if n_options > budget.exhaustive_options:
            return PASS
        tilings = space.enumerate(budget.exhaustive_tilings, job.rng)
        if tilings.complete and len(tilings) == 0:
            return None
        keeps_complete = len(optional_keeps(space)) <= KEEP_CHOICE_BITS
        small = len(tilings) * len(job.keeps) * space.L <= _FIT_ENTRIES  # the fit table of _Expansion
        expansion = _Expansion(space, tilings.factors, job.keeps) if tilings.complete and keeps_complete and small else None
        if expansion is None or expansion.size > budget.exhaustive_evaluations:
            return PASS
        for arrays in expansion.chunks(_EVAL_CHUNK):
            job.scorer.score(arrays)
        return job.outcome(optimal=True)


class SampledLocalSearch:
    """A seeded sample of legal tilings (CP-SAT finds starts when sampling finds none), scored with
    data-space-stationary orders; the best few seed a steepest-descent local search."""

    name = "sampled local search"

    def run(self, job: Job) -> SearchOutcome | None | str:
        space, budget, scorer = job.space, job.budget, job.scorer
        samples = sample_tilings(space, budget.samples, job.rng)
        if len(samples) == 0:
            from quantloop.mapper.cpsat import find_tilings  # CP-SAT only when sampling fails

            samples = find_tilings(space, budget.starts, job.seed)
            if len(samples) == 0:
                return None
        perms = _permutations(space.arch)
        must = np.repeat(space.must_keep[None], len(samples), axis=0)
        best_per_tiling = np.full(len(samples), np.inf)
        best_sec = np.full(len(samples), np.inf)
        best_order = np.zeros((len(samples), space.L, 8), dtype=np.int64)
        earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for ds in DATASPACES:
            order = stationary_orders(samples[:, :, 0], perms, ds)
            primary, secondary = _keys_reusing(scorer, samples, order, must, earlier)
            earlier.append((order, primary, secondary))
            better = (primary < best_per_tiling) | ((primary == best_per_tiling) & (secondary < best_sec))
            best_per_tiling = np.where(better, primary, best_per_tiling)
            best_sec = np.where(better, secondary, best_sec)
            best_order[better] = order[better]
        ranked = np.lexsort((np.arange(len(samples)), best_sec, best_per_tiling))
        ranked = ranked[np.isfinite(best_per_tiling[ranked])][: budget.starts]
        _try_window_orders(space, scorer, samples[ranked], best_order[ranked], must[ranked],
                           best_per_tiling, best_sec, best_order, ranked)
        _local_searches(space, _arrays(samples[ranked], best_order[ranked], must[ranked]), scorer, budget,
                        (best_per_tiling[ranked], best_sec[ranked]))
        return job.outcome(optimal=False)


def _try_window_orders(space: Mapspace, scorer: _Scorer, samples: np.ndarray, order: np.ndarray, must: np.ndarray,
                       best: np.ndarray, best_sec: np.ndarray, best_order: np.ndarray, rows: np.ndarray) -> None:
    """For each tiling, every level's P/Q/R/S order variants (`orders.window_variants`, one level at a
    time, the other levels kept) are scored in one batch; a variant that beats the tiling's key
    replaces its order (in `best`, `best_sec`, `best_order` at `rows`). The stationary orders fix the
    place of the non-sliding loops but not the sliding loops' relative order, which sets the window
    translations Inputs are charged by (e.g. R outside P)."""
    perms = _permutations(space.arch)
    masks = present_masks(samples[:, :, 0])
    owner, orders = [], []
    for i in range(len(samples)):
        for l in range(space.L):
            for variant in window_variants(order[i, l], int(masks[i, l]), perms[l]):
                if np.array_equal(variant, order[i, l]):
                    continue
                o = order[i].copy()
                o[l] = variant
                owner.append(i)
                orders.append(o)
    if not orders:
        return
    owner = np.array(owner)
    primary, secondary = scorer.score(_arrays(samples[owner], np.array(orders), must[owner]))
    for i in range(len(samples)):
        pick = np.flatnonzero(owner == i)
        if len(pick) == 0:
            continue
        j = pick[_best(primary[pick], secondary[pick])]
        r = rows[i]
        if (primary[j], secondary[j]) < (best[r], best_sec[r]):
            best[r], best_sec[r], best_order[r] = primary[j], secondary[j], orders[j]


def _keys_reusing(scorer: _Scorer, samples: np.ndarray, order: np.ndarray, must: np.ndarray,
                  earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Score the tilings `samples` with `order` and record them; a tiling whose order equals the one it
    had in an `earlier` (order, primary, secondary) batch reuses that batch's keys instead of being
    evaluated again (the stationary orders of different data spaces often coincide)."""
    primary, secondary = np.empty(len(samples)), np.empty(len(samples))
    new = np.ones(len(samples), dtype=bool)
    for old_order, old_primary, old_secondary in earlier:
        same = new & np.all(order == old_order, axis=(1, 2))
        primary[same], secondary[same] = old_primary[same], old_secondary[same]
        new &= ~same
    primary[new], secondary[new] = scorer.keys(_arrays(samples[new], order[new], must[new]))
    scorer.record(_arrays(samples, order, must), primary, secondary)
    return primary, secondary


STRATEGIES: tuple[Strategy, ...] = (Exhaustive(), SampledLocalSearch())
"""Tried in order; the first that does not pass decides."""


def search(arch: Arch, problem: Problem, bits: Bits, objective: str = "energy", seed: int = 0,
           budget: Budget = Budget(), space: Mapspace | None = None,
           strategies: tuple[Strategy, ...] = STRATEGIES, warm_start: Mapping | None = None) -> SearchOutcome | None:
    """The best mapping found (None when no legal tiling exists: the caller diagnoses why).

    `warm_start`: a legal mapping of this problem (e.g. the one found at other bits) that is scored
    and descended from after the strategy ran, so the result is never worse than it."""
    space = space or Mapspace(arch, problem, bits)
    rng = np.random.default_rng(seed)
    job = Job(space, _Scorer(arch, problem, bits, objective), rng, budget, seed, keep_choices(space, rng))
    outcome: SearchOutcome | None | str = PASS
    for strategy in strategies:
        outcome = strategy.run(job)
        if outcome != PASS:
            break
    if warm_start is not None:
        _local_search(space, warm_start.to_arrays(), job.scorer, budget)
        optimal = isinstance(outcome, SearchOutcome) and outcome.optimal
        return job.outcome(optimal=optimal and job.scorer.best is not None)
    return job.outcome(optimal=False) if outcome == PASS else outcome
