"""The tiling space of one layer on one target: which factor each (level, temporal | spatial-X |
spatial-Y) slot may take, and a vectorised enumeration of every legal tiling.

A tiling gives every dim's factor at every slot; legality is: the factors of each dim multiply to
the dim, plus the target's rules as `costmodel.legality` states them as data: fixed and forbidden
slots, fan-outs, and the tile bounds (every level's capacity in words at the layer's bit-widths,
⌈tile / ⌊word/b⌋⌉ per kept data space with the sliding-window halo, and any other bound). Outputs
count at the partial-sum width, never narrower than the Outputs width: whether a level holds
partial sums depends on the whole mapping, so the slots take the safe side and the cost model,
which scores every candidate, applies the exact width. The
CP-SAT model (`quantloop.mapper.cpsat`), the brute-force reference and the cost model read the
same rules; tests check that they agree.

Enumeration joins one dim at a time (numpy), pruning every partial tiling whose fan-out or
capacity already overflows: tiles only grow as dims are added, so the pruning is exact.
"""

from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass

import numpy as np

from quantloop.costmodel.legality import FREE, SPATIAL_X, SPATIAL_Y, TEMPORAL, fanout_table, slot_table, tile_bounds, tiles_ok
from quantloop.costmodel.model import packing_tables
from quantloop.problem import DATASPACES, DIMS, Bits, Problem, prime_factors
from quantloop.targets.arch import Arch

KIND_NAMES = ("temporal", "spatial X", "spatial Y")
_CHUNK = 1 << 19
#: The most int64 entries (options × L × 3) one dim's option table may hold (~64 MB). A dim with more ways
#: to spread over the slots gets a seeded sample of them instead, and the mapspace is marked incomplete,
#: so the mapper never claims optimality for it.
OPTION_ENTRIES = 8_000_000


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _prime_powers(n: int) -> list[tuple[int, int]]:
    return sorted(collections.Counter(prime_factors(n)).items())


def _compositions(total: int, parts: int) -> np.ndarray:
    """All [k, parts] non-negative integer vectors summing to `total` (stars and bars)."""
    combos = list(itertools.combinations(range(total + parts - 1), parts - 1))
    bars = np.array(combos, dtype=np.int64).reshape(len(combos), parts - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), total + parts - 1)], axis=1)
    return np.diff(edges, axis=1) - 1


def ordered_factorizations(n: int, slots: int) -> np.ndarray:
    """All [k, slots] factor vectors whose product is n (vectorised over the prime exponents)."""
    if slots == 0:
        return np.ones((1 if n == 1 else 0, 0), dtype=np.int64)
    out = np.ones((1, slots), dtype=np.int64)
    for p, e in _prime_powers(n):
        powers = p ** _compositions(e, slots)  # [k, slots]
        out = (out[:, None, :] * powers[None, :, :]).reshape(-1, slots)
    return out


def factorization_count(n: int, slots: int) -> int:
    """How many [slots] factor vectors multiply to n (exact, without listing them)."""
    if slots == 0:
        return 1 if n == 1 else 0
    return math.prod(math.comb(e + slots - 1, slots - 1) for _, e in _prime_powers(n))


def sampled_factorizations(n: int, slots: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct [k, slots] factor vectors multiplying to n: each prime factor picks a slot."""
    out = np.ones((count, slots), dtype=np.int64)
    rows = np.arange(count)
    for p in prime_factors(n):
        out[rows, rng.integers(0, slots, count)] *= p
    return np.unique(out, axis=0)


@dataclass
class Tilings:
    """Legal tilings as factors [K, L, 3 kinds, 8 dims]; `complete` is False when the
    enumeration had to be subsampled to stay within its limit."""

    factors: np.ndarray
    complete: bool

    def __len__(self) -> int:
        return self.factors.shape[0]


class Mapspace:
    """Slots, per-dim factor options and capacity rules of one (problem, target, bits)."""

    def __init__(self, arch: Arch, problem: Problem, bits: Bits) -> None:
        self.arch, self.problem, self.bits = arch, problem, bits
        self.L = arch.num_levels
        self.slots = slot_table(arch)  # [L, 3, 8] fixed factor, FREE when the mapper chooses
        self.fanout = fanout_table(arch)
        self.bounds = tile_bounds(arch)
        # Outputs pack as partial sums (never more per word than final outputs): whether a level
        # holds partial sums depends on the whole mapping, so the slots' capacity rules take the
        # wider width; the cost model checks the exact one.
        opw, psum_opw = packing_tables(arch, bits)
        opw[:, 2] = np.minimum(opw[:, 2], psum_opw)
        self.opw = opw
        self.must_keep = np.array([[ds in lvl.must_keep or l == 0 for ds in DATASPACES]
                                   for l, lvl in enumerate(arch.levels)])
        self.may_keep = np.array([[ds in lvl.may_keep or l == 0 for ds in DATASPACES]
                                  for l, lvl in enumerate(arch.levels)])
        self.complete = True  # False once any dim's options had to be sampled
        self.options = [self.dim_options(d) for d in range(8)]

    def dim_options(self, dim: int, prune_capacity: bool = True) -> np.ndarray:
        """All legal ways [n, L, 3] to spread one dim over the slots (products equal the dim;
        fixed factors honoured; a single spatial factor never exceeds its fan-out)."""
        name, size = DIMS[dim], int(self.problem.dim_array[dim])
        fixed_prod, free, base = 1, [], np.ones((self.L, 3), dtype=np.int64)
        for l in range(self.L):
            for k in range(3):
                rule = int(self.slots[l, k, dim])
                if rule == FREE:
                    free.append((l, k))
                else:
                    base[l, k] = rule
                    fixed_prod *= rule
        if size % fixed_prod:
            return np.zeros((0, self.L, 3), dtype=np.int64)
        limit = max(1, OPTION_ENTRIES // (self.L * 3))
        if factorization_count(size // fixed_prod, len(free)) > limit:
            combos = sampled_factorizations(size // fixed_prod, len(free), limit, np.random.default_rng(size))
            self.complete = False
        else:
            combos = ordered_factorizations(size // fixed_prod, len(free))
        out = np.repeat(base[None], len(combos), axis=0)
        for i, (l, k) in enumerate(free):
            out[:, l, k] = combos[:, i]
        ok = np.all(out[:, :, 1] <= self.fanout[None, :, 0], axis=1) & np.all(out[:, :, 2] <= self.fanout[None, :, 1], axis=1)
        out = out[ok]
        if not prune_capacity:
            return out
        extents = np.flip(np.cumprod(np.flip(out.prod(axis=2), axis=1), axis=1), axis=1)  # [n, L] of this dim
        return out[self._fits_one_dim(dim, extents)]  # tiles only grow with the other dims

    def _fits_one_dim(self, dim: int, extents: np.ndarray) -> np.ndarray:
        """`fits` (must-keep) of tilings that spread only `dim` (per-level extents [n, L], every other dim
        1). Every tile bound concerns one level, and there the tile is a function of that level's extent
        (a divisor of the dim): the bounds are checked once per (divisor, level) and looked up."""
        divs = np.array(divisors(int(self.problem.dim_array[dim])), dtype=np.int64)
        ext = np.ones((len(divs), 8), dtype=np.int64)
        ext[:, dim] = divs
        values = np.repeat(self.tile_values(ext)[:, None, :], self.L, axis=1)  # [U, L, 3]
        words = -(-values // self.opw)
        level = np.arange(self.L)
        ok_at = np.stack([tiles_ok(self.bounds, values, words, self.must_keep & (level == l)[:, None])
                          for l in range(self.L)], axis=1)  # [U, L]: the bounds of level l hold
        idx = np.searchsorted(divs, extents)
        ok = np.ones(len(extents), dtype=bool)
        for l in range(self.L):
            ok &= ok_at[idx[:, l], l]
        return ok

    # ---- tiles -------------------------------------------------------------------------------
    def tile_values(self, cum: np.ndarray) -> np.ndarray:
        """Tile sizes in values [..., L, 3] from per-level cumulative extents cum[..., L, 8]."""
        return self.problem.tile_values(cum)

    def tile_words(self, cum: np.ndarray) -> np.ndarray:
        """Words per instance [..., L, 3] of each data space's tile (kept or not)."""
        return -(-self.tile_values(cum) // self.opw)

    def fits(self, cum: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """bool[...]: every tile bound holds for the tiles of extents cum[..., L, 8] (keep [..., L, 3] or [L, 3])."""
        values = self.tile_values(cum)
        return tiles_ok(self.bounds, values, -(-values // self.opw), keep)

    def fits_each_keep(self, cum: np.ndarray, keeps: np.ndarray) -> np.ndarray:
        """bool[T, K]: tilings cum[T, L, 8] under each keep choice keeps[K, L, 3]."""
        values = self.tile_values(cum)[:, None]
        return tiles_ok(self.bounds, values, -(-values // self.opw), keeps[None])

    @staticmethod
    def cumulative(factors: np.ndarray) -> np.ndarray:
        """factors [..., L, 3, 8] → tile extents [..., L, 8] of each level (its loops and all inner ones)."""
        per_level = factors.prod(axis=-2)
        return np.flip(np.cumprod(np.flip(per_level, axis=-2), axis=-2), axis=-2)

    # ---- enumeration -------------------------------------------------------------------------
    def enumerate(self, limit: int, rng: np.random.Generator, keep: np.ndarray | None = None) -> Tilings:
        """Every legal tiling at keep sets `keep` [L, 3] (default: the must-keep sets, which admit
        the most tilings). Beyond `limit` partial tilings a seeded uniform subsample is kept."""
        keep = self.must_keep if keep is None else keep
        L = self.L
        order = sorted(range(8), key=lambda d: len(self.options[d]))
        idx = np.zeros((1, 0), dtype=np.int32)
        cum = np.ones((1, L, 8), dtype=np.int64)
        spatial = np.ones((1, L, 2), dtype=np.int64)
        complete = self.complete
        for d in order:
            opts = self.options[d]
            if len(opts) == 0:
                return Tilings(np.zeros((0, L, 3, 8), dtype=np.int64), self.complete)
            opt_cum = np.flip(np.cumprod(np.flip(opts.prod(axis=2), axis=1), axis=1), axis=1)  # [n, L]
            opt_sp = opts[:, :, 1:]  # [n, L, 2]
            n = len(opts)
            kept_idx, kept_cum, kept_sp, kept_key = [], [], [], []
            held = 0
            total = idx.shape[0] * n
            for start in range(0, total, _CHUNK):
                pair = np.arange(start, min(total, start + _CHUNK), dtype=np.int64)
                k, o = pair // n, pair % n
                sp = spatial[k] * opt_sp[o]
                ok = np.all(sp <= self.fanout, axis=(1, 2))
                k, o, sp = k[ok], o[ok], sp[ok]
                c = cum[k]
                c[:, :, d] = opt_cum[o]
                ok = self.fits(c, keep)
                kept_idx.append(np.concatenate([idx[k[ok]], o[ok, None].astype(np.int32)], axis=1))
                kept_cum.append(c[ok])
                kept_sp.append(sp[ok])
                kept_key.append(rng.random(int(ok.sum())))
                held += int(ok.sum())
                if held > 2 * limit:  # keep a uniform bottom-k sample, bounded memory
                    idx_, cum_, sp_, key_ = (np.concatenate(x) for x in (kept_idx, kept_cum, kept_sp, kept_key))
                    pick = np.sort(np.argpartition(key_, limit)[:limit])
                    kept_idx, kept_cum, kept_sp, kept_key = [idx_[pick]], [cum_[pick]], [sp_[pick]], [key_[pick]]
                    held = limit
                    complete = False
            idx = np.concatenate(kept_idx) if kept_idx else np.zeros((0, idx.shape[1] + 1), np.int32)
            cum = np.concatenate(kept_cum) if kept_cum else np.zeros((0, L, 8), np.int64)
            spatial = np.concatenate(kept_sp) if kept_sp else np.zeros((0, L, 2), np.int64)
            keys = np.concatenate(kept_key) if kept_key else np.zeros(0)
            if idx.shape[0] > limit:
                pick = np.sort(np.argpartition(keys, limit)[:limit])
                idx, cum, spatial = idx[pick], cum[pick], spatial[pick]
                complete = False
            if idx.shape[0] == 0:
                break
        factors = np.ones((idx.shape[0], L, 3, 8), dtype=np.int64)
        for j, d in enumerate(order):
            if idx.shape[0]:
                factors[:, :, :, d] = self.options[d][idx[:, j]]
        return Tilings(factors, complete)
