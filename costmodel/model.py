"""Timeloop-faithful, bit-packing-aware cost model, vectorised over a batch of mappings.

Semantics (checked against the recorded Timeloop runs in tests/data/timeloop, see costmodel/README.md):

Tiles. The tile of data space d held by ONE instance of storage level l is the footprint of
every loop at l and below it (l's temporal loops, l's fan-out, all inner levels). Input tiles
use the sliding-window extents (p−1)·Wstride + (r−1)·Wdilation + 1 (P with R) and
(q−1)·Hstride + (s−1)·Hdilation + 1 (Q with S). `partition_size` is the footprint of
everything except the spatial loops above l (distinct values through one instance).

Visits. Walking the temporal loops above l (outer levels, outer → inner), every time loop j
increments (and every loop inside j wraps), the instance receives the part of the new tile that
Timeloop does not find in the previous tile: visits = tile + Σ_j (f_j − 1) · Π_{i<j} f_i · delta_j.
delta_j = 0 when no loop from j inwards indexes d (a run of innermost non-indexing loops is reuse:
the tile stays resident); = the whole tile when a non-sliding dim of d changes.

Sliding windows (Inputs; P/R along the input width, Q/S along its height). timeloop-model keeps
the last tile and the translation that brought it (nest-analysis `ComputeDeltas`): a step that
moves the tile by the same translation as the step before charges the new part only, one that
changes the translation charges the whole tile (it "resets on stride change"), one that leaves the
tile where it was charges nothing; the new part of two axis-aligned boxes is the whole tile unless
they differ along one axis. The step before a step of j is always a step of k, the innermost loop
that indexes Inputs, so delta_j = 0 if t_j = 0, the new part if t_j = t_k, the whole tile otherwise.
Timeloop's default temporal extrapolation runs only iterations #0 and #1 of each loop and counts
#1's delta for the f − 1 steps after #0, so the tile a step of j is compared with is the one at
index 1 of every inner loop: t_j = j's step − Σ (one step of each moving loop inside j). That is
what this model counts (the recorded reference runs were made with it). With extrapolation off
(TIMELOOP_DISABLE_TEMPORAL_EXTRAPOLATION=1) Timeloop walks every iteration and the wraps are
(f_i − 1) steps; the two differ only when an inner sliding loop has f > 2 and its wrap meets an
overlapping window (tests/test_timeloop_oracle.py shows an example). The quantization fork
(v3.0.3) refetches whole windows instead; for 1×1 layers all agree; we implement master.

Read-only data spaces (Weights, Inputs): fills(l) = visits(l), 0 at the outermost keeper.
reads(l) = visits of the next inner keeper c × the fan-out factors between l and c of dims
that index d (multicast across non-indexing fan-out dims; children whose sliding windows only
overlap, e.g. spatial Q and S, are served separately, as in Timeloop). At the innermost keeper
the MACs read one operand per MAC step with the same multicast rule.
Outputs: updates(l) = visits of the next inner keeper × fan-out factors of output-indexing dims
(spatial reduction over C/R/S is free: one update per distinct output value per drain); at the
innermost keeper one per MAC step with the same rule.
reads(l) = updates(l) − partition(l) (first-write elision); fills(l) = visits(l) − partition(l)
and 0 at the outermost keeper.

Packing (quantization fork). At a level with word W and values of b bits, opw = ⌊W/b⌋ values
per word (1 if b is None = stock Timeloop). Partial sums (Outputs at a level with a reduction
loop at or outside it) use the accumulator width instead of b (`packing_tables`). Every per-instance count above is turned into words
with ceil(values / opw); capacity uses ceil(tile / opw). Outputs reads use
ceil((updates − partition) / opw) in values.

Energy per (level, data space) = (⌈reads/B⌉·E_read + ⌈fills/B⌉·E_write + ⌈updates/B⌉·E_update)
× utilized clusters, B = block size, utilized clusters = min(utilized instances,
instances / cluster size). Leakage = leak/cycle × cycles × utilized instances (levels that keep
something). MAC energy = MACs × ComputeLevel.mac_energy(bits).

Cycles = max(compute cycles = Π temporal factors, per level ⌈reads/read_bw⌉,
⌈(fills + updates)/write_bw⌉, ⌈(reads + fills + updates)/shared_bw⌉) with per-instance words.
Utilization = MACs / (cycles × MAC instances).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quantloop.costmodel.checks import check_bits, check_mapping, check_tiles
from quantloop.costmodel.legality import tile_bounds, tiles_ok
from quantloop.costmodel.link_transfers import LinkStage, coinciding_windows, link_stages, link_transfers
from quantloop.costmodel.window_steps import step_kinds
from quantloop.mapping import Mapping, MappingArrays
from quantloop.problem import DATASPACES, RELEVANT, Bits, Problem, values_per_word
from quantloop.targets.arch import Arch
from quantloop.targets.registry import load_target

#: bump when evaluate / evaluate_batch change any figure: cached mappings were chosen by the old
#: figures (the mapper cache key includes it), so they are searched again instead of only re-scored
COSTMODEL_VERSION = "4"

_N, _G, _C, _M, _P, _Q, _R, _S = range(8)
_WEIGHTS, _INPUTS, _OUTPUTS = range(3)
#: dims whose change replaces the whole tile (everything relevant except the sliding-window dims of Inputs)
_HARD = RELEVANT.copy()
_HARD[_INPUTS, [_P, _Q, _R, _S]] = False


@dataclass
class BatchResult:
    """Numpy results for B mappings. Per-level arrays are [B, L, 3] (data spaces in
    `DATASPACES` order) in words per utilized instance; entries of data spaces a level does not
    keep are 0. `capacity_ok[B]` is False when a level's kept tiles exceed its capacity.
    `values_per_word[B, L, 3]` (Outputs: partial sums where the level holds them).
    Counts and cycles are integer-valued float64 arrays (exact: every count is below 2**52)."""

    energy: np.ndarray
    cycles: np.ndarray
    compute_cycles: np.ndarray
    utilization: np.ndarray
    capacity_ok: np.ndarray  # every tile bound holds (capacities and the other `legality.tile_bounds`)
    fanout_ok: np.ndarray
    factors_ok: np.ndarray
    reads: np.ndarray
    fills: np.ndarray
    updates: np.ndarray
    utilized_capacity: np.ndarray
    tile_values: np.ndarray  # [B, L, 3] values of each kept tile per instance (0 where bypassed)
    partition_size: np.ndarray
    utilized_instances: np.ndarray
    utilized_clusters: np.ndarray
    level_energy: np.ndarray
    leakage: np.ndarray
    level_cycles: np.ndarray
    macs: int
    mac_energy: float
    values_per_word: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Capacity, fan-out limits and factor products all hold (keep rules and the target's
        dataflow constraints are not checked here; `checks.check_structure` does that)."""
        return self.capacity_ok & self.fanout_ok & self.factors_ok


@dataclass(frozen=True)
class LevelStats:
    """Statistics of one (storage level, kept data space); counts are words per utilized instance."""

    level: str
    dataspace: str
    word_bits: int
    values_per_word: int
    utilized_instances: int
    utilized_clusters: int
    utilized_capacity_words: int
    utilized_capacity_bits: int
    partition_size: int
    reads_per_instance: int
    fills_per_instance: int
    updates_per_instance: int
    energy_pj: float

    def to_json(self, capacity: bool = True) -> dict:
        """The figures reports show (`capacity`: with the utilized capacity in words and bits)."""
        out = {
            "level": self.level, "dataspace": self.dataspace, "reads_per_instance": self.reads_per_instance,
            "fills_per_instance": self.fills_per_instance, "updates_per_instance": self.updates_per_instance,
            "utilized_instances": self.utilized_instances,
        }
        if capacity:
            out.update(utilized_capacity_words=self.utilized_capacity_words,
                       utilized_capacity_bits=self.utilized_capacity_bits)
        out["energy_pj"] = self.energy_pj
        return out


@dataclass(frozen=True)
class CostResult:
    """The cost of one mapping (see the module docstring for the semantics)."""

    total_energy_pj: float
    cycles: int
    compute_cycles: int
    utilization: float
    macs: int
    mac_energy_pj: float
    per_level: tuple[LevelStats, ...]
    leakage_pj: dict[str, float] = field(default_factory=dict)

    def stats(self, level: str, dataspace: str) -> LevelStats:
        for s in self.per_level:
            if s.level == level and s.dataspace == dataspace:
                return s
        raise KeyError((level, dataspace))

    def to_json(self) -> dict:
        return {
            "total_energy_pj": self.total_energy_pj,
            "cycles": self.cycles,
            "utilization": self.utilization,
            "macs": self.macs,
            "mac_energy_pj": self.mac_energy_pj,
            "leakage_pj": dict(self.leakage_pj),
            "per_level": [s.to_json() for s in self.per_level],
        }


def _ceil_div(a: np.ndarray, b) -> np.ndarray:
    """Exact for the integer-valued float64 counts used here (all below 2**52)."""
    return np.ceil(a / b)


_DS_DIMS = [np.flatnonzero(RELEVANT[k]) for k in range(3)]


def _prod_dims(ext: np.ndarray, dims) -> np.ndarray:
    out = ext[..., dims[0]].copy()
    for d in dims[1:]:
        out *= ext[..., d]
    return out


_LITTLE_U64 = np.dtype("<u8")


def _last_true(flags: np.ndarray) -> np.ndarray:
    """Index of the last True along the last axis (length 8) of a bool array, -1 where none.

    The 8 flags are read as the bytes of one little-endian uint64: the highest set bit lies in the
    last True's byte, and float64's exponent (frexp) finds it exactly (a 0/1 byte pattern never
    rounds up to the next power of two). Many times faster than a max over a length-8 axis."""
    code = np.ascontiguousarray(flags).view(_LITTLE_U64)[..., 0]
    return (np.frexp(code.astype(np.float64))[1] - 1) // 8


class _Nest:
    """Per-batch loop-nest tables shared by every (level, data space) analysis.

    The temporal loops are kept as [B, L, 8] in nest order (`order`); flattened, position
    8·l + i is the i-th loop (outer → inner) of level l, so the loops above level l are exactly
    the positions < 8·l.
    """

    def __init__(self, problem: Problem, arrays: MappingArrays) -> None:
        self.problem = problem
        # integer-valued float64: exact below 2**53 and much faster to divide than int64
        T = arrays.temporal.astype(np.float64)
        SP = (arrays.spatial_x * arrays.spatial_y).astype(np.float64)
        B, L, _ = T.shape
        self.B, self.L = B, L
        self.SP = SP
        self.spatial_x = arrays.spatial_x.astype(np.float64)
        self.spatial_y = arrays.spatial_y.astype(np.float64)
        per_level = T * SP
        # cumulative products along short axes: a loop of whole-slice products beats np.cumprod's
        # per-row loops (exact either way: integer products below 2**53)
        inner = np.ones((B, L + 1, 8))  # inner[:, l]: tile extents of level l
        for l in range(L - 1, -1, -1):
            np.multiply(inner[:, l + 1], per_level[:, l], out=inner[:, l])
        self.inner = inner
        above = np.ones((B, L + 1, 8))  # spatial factors of levels < l
        for l in range(L):
            np.multiply(above[:, l], SP[:, l], out=above[:, l + 1])
        self.spatial_above = above
        order = arrays.order
        self.order = order
        gather = order + (np.arange(B * L, dtype=np.int64) * 8).reshape(B, L, 1)
        self.f = T.ravel().take(gather)  # [B, L, 8] factors in nest order
        self.active = self.f > 1
        flat_t = self.f.reshape(B, L * 8).T
        incl_t = np.empty((L * 8 + 1, B))  # built loop by loop along the leading axis, read as [B, 8L + 1]
        incl_t[0] = 1
        for j in range(L * 8):
            np.multiply(incl_t[j], flat_t[j], out=incl_t[j + 1])
        self.incl = incl_t.T  # incl[:, j + 1] = product of loops 0..j
        self.total_steps = incl_t[-1]
        # a loop's stride in its own dim: the factors of that dim inside it. A dim appears once per
        # level, so that is the level's own spatial factor times all inner levels' factors.
        stride = (inner[:, 1:] * SP).ravel().take(gather)
        self.stride = stride
        pr = problem
        # how far one step of a loop over each dim moves the input window, per unit of stride
        self.coef_w = np.array([0, 0, 0, 0, pr.Wstride, 0, pr.Wdilation, 0], dtype=np.float64)
        self.coef_h = np.array([0, 0, 0, 0, 0, pr.Hstride, 0, pr.Hdilation], dtype=np.float64)

    def footprint(self, ds: int, ext: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(volume, width, height) of data space ds for per-dim extents ext[..., 8]."""
        pr = self.problem
        if ds == _INPUTS:
            w, h = pr.input_window(ext[..., _P], ext[..., _Q], ext[..., _R], ext[..., _S])
            other = ext[..., _N] * ext[..., _G] * ext[..., _C]
            return other * w * h, w, h
        vol = _prod_dims(ext, _DS_DIMS[ds])
        return vol, vol, vol

    def visits(self, ds: int, vol: np.ndarray, w: np.ndarray, h: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Values received by one instance of each level in `levels` (bool [L]; 0 at the other
        levels) over the whole run, [B, L], with halo-aware deltas (see the module docstring).
        Closed form: with j* the innermost loop above the level that indexes ds, visits =
        tile · Π_{i≤j*} f_i, minus the window overlap of every step of j* when j* is a
        sliding-window loop of Inputs."""
        if ds == _INPUTS:
            return self._input_visits(vol, w, h, levels)
        B, L = self.B, self.L
        # innermost active loop of each level that indexes ds (position 8·l + i, -1 where none)
        inner_i = _last_true(RELEVANT[ds].take(self.order) & self.active)
        last = np.where(inner_i >= 0, inner_i + 8 * np.arange(L), -1)
        jstar = np.empty((B, L), dtype=np.int64)
        jstar[:, 0] = -1
        for l in range(1, L):
            np.maximum(jstar[:, l - 1], last[:, l - 1], out=jstar[:, l])
        return vol * np.take_along_axis(self.incl, jstar + 1, axis=1) * levels

    def _input_visits(self, vol: np.ndarray, w: np.ndarray, h: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Inputs, counted as timeloop-model counts them (module docstring, "Sliding windows").

        A step of loop j above level l (the loops inside j wrap) translates the tile by t_j: along
        the input width dw_j = j's step minus the wraps of the sliding loops inside it, likewise dh_j,
        and into new N/G/C values when j or a loop inside it indexes them. With k the innermost loop
        above l that indexes Inputs, a step of j charges 0 when t_j = 0, the part of the tile not in
        the previous one when t_j = t_k (the steady stride), and the whole tile otherwise; the part
        not in the previous tile is the whole tile unless t moves along one axis only.

        All `levels` at once: loops with factor 1 charge nothing and wrap nothing, so only the
        active loops above the innermost level asked for are kept ([B, K], nest order). The loops
        above level l are then the first n_l of them, and every "inside j, above l" sum is a
        difference of prefix sums. All counts are integers below 2**52: exact in any order."""
        B, L = self.B, self.L
        result = np.zeros((B, L))
        result[:, 0] = vol[:, 0] * levels[0]  # nothing above the outermost level
        lv = np.flatnonzero(levels[1:]) + 1
        if lv.size == 0:
            return result
        E = 8 * int(lv[-1])  # the loops above the innermost level asked for
        f = self.f.reshape(B, L * 8)[:, :E]
        active = f > 1
        # n[:, i]: active loops above level lv[i] (a 0/1 matrix product: exact, and BLAS-fast)
        n = (active @ (np.arange(E)[:, None] < 8 * lv[None, :]).astype(np.float64)).astype(np.int64)
        K = int(n[:, -1].max(initial=0))
        if K == 0:
            result[:, lv] = vol[:, lv]
            return result
        # active loops first, then the inactive ones, each in nest order (sorting unique keys is
        # several times faster than a stable argsort)
        pick = np.sort(np.where(active, np.arange(E), np.arange(E) + E), axis=1)[:, :K] % E
        f = np.take_along_axis(f, pick, axis=1)
        on = f > 1  # [B, K]; False on padding
        dim = np.take_along_axis(self.order.reshape(B, L * 8), pick, axis=1)
        stride = np.take_along_axis(self.stride.reshape(B, L * 8), pick, axis=1)
        weight = (f - 1) * np.take_along_axis(self.incl, pick, axis=1)  # steps × epochs
        sw, sh = stride * self.coef_w[dim], stride * self.coef_h[dim]
        hard = on & _HARD[_INPUTS][dim]
        moves = on & RELEVANT[_INPUTS][dim]
        # the loops above level lv[i] are the first n[:, i] (levels are in nest order)
        last = n - 1  # the innermost loop above the level; -1 where none
        lastc = np.maximum(last, 0)
        cw, ch = np.cumsum(sw, axis=1), np.cumsum(sh, axis=1)
        # Timeloop's temporal extrapolation runs iterations #0 and #1 of every loop and counts #1's
        # deltas for the f − 1 steps after #0: a wrapping loop comes back from index 1, one step.
        # dw[l, j] = sw_j − Σ sw_i over loops i inside j and above l
        tot_w = np.where(last >= 0, np.take_along_axis(cw, lastc, axis=1), 0)
        tot_h = np.where(last >= 0, np.take_along_axis(ch, lastc, axis=1), 0)
        dw = (sw + cw)[:, None, :] - tot_w[:, :, None]  # [B, len(lv), K]
        dh = (sh + ch)[:, None, :] - tot_h[:, :, None]
        j = np.arange(K)
        # new N/G/C values: a hard loop at j or inside it, above the level
        last_hard = np.maximum.accumulate(np.where(hard, j, -1), axis=1)
        new_nwc = np.take_along_axis(last_hard, lastc, axis=1)[:, :, None] >= j
        # k: the innermost loop above the level that moves the tile
        k = np.take_along_axis(np.maximum.accumulate(np.where(moves, j, -1), axis=1), lastc, axis=1)
        kk = np.maximum(k, 0)
        dwk = np.take_along_axis(sw, kk, axis=1)[:, :, None]
        dhk = np.take_along_axis(sh, kk, axis=1)[:, :, None]
        hardk = np.take_along_axis(hard, kk, axis=1)[:, :, None]
        v, ww, hh = vol[:, lv, None], w[:, lv, None], h[:, lv, None]
        still, steady = step_kinds(dw, dh, new_nwc, dwk, dhk, hardk)
        kept = np.maximum(ww - np.abs(dw), 0) * np.maximum(hh - np.abs(dh), 0) * (v / (ww * hh))
        minus = np.where(new_nwc | ((dw != 0) & (dh != 0)), v, v - kept)
        delta = np.where(still, 0, np.where(steady, minus, v))
        above = j[None, None, :] < n[:, :, None]
        result[:, lv] = vol[:, lv] + np.einsum("blk,bk->bl", np.where(above, delta, 0), weight)
        return result


def _as_arch(target) -> Arch:
    if isinstance(target, Arch):
        return target
    return load_target(target)


def packing_tables(arch: Arch, bits: Bits) -> tuple[np.ndarray, np.ndarray]:
    """(values per word [L, 3] of each data space, values per word [L] of partial sums) per level.

    Partial sums are Outputs while a reduction is still open. With `bits.psum == "accumulator"`
    they are stored at the level's declared `psum_bits`, else at the MAC's accumulator width
    max(o, w + a): ⌊word / width⌋ per word, one per word where the word is no wider. With
    "outputs" they pack like Outputs (the quantization fork). Stock bits (None): one per word.
    """
    L = arch.num_levels
    opw = np.ones((L, 3), dtype=np.int64)
    psum = np.ones(L, dtype=np.int64)
    for l, lvl in enumerate(arch.levels):
        for k, b in enumerate(bits.as_tuple()):
            opw[l, k] = values_per_word(word_bits=lvl.word_bits, bits=b)
        if bits.psum == "outputs" or bits.outputs is None:
            psum[l] = opw[l, _OUTPUTS]
        else:
            psum[l] = values_per_word(word_bits=lvl.word_bits, bits=lvl.psum_bits or bits.accumulator_bits)
    return opw, psum


def word_packing(arch: Arch, bits: Bits, arrays: MappingArrays) -> np.ndarray:
    """int[B, L, 3]: values per word of each data space's tile in each mapping; Outputs pack at the partial-sum
    width at the levels where the mapping leaves a reduction open (`holds_partial_sums`). The exact rule that
    capacities are checked against (the mapspace's enumeration takes the wider width everywhere)."""
    opw_table, psum_opw = packing_tables(arch, bits)
    opw = np.repeat(opw_table[None], arrays.batch, axis=0)
    opw[:, :, _OUTPUTS] = np.where(holds_partial_sums(arrays), psum_opw[None, :], opw_table[None, :, _OUTPUTS])
    return opw


def holds_partial_sums(arrays: MappingArrays) -> np.ndarray:
    """bool[B, L]: level l holds Outputs below the last reduction, i.e. a reduction loop (C, R or
    S with factor > 1) is temporal at l or outside it, or spatial above l (reduced only when the
    instances' results meet)."""
    temporal = (arrays.temporal[:, :, _C] > 1) | (arrays.temporal[:, :, _R] > 1) | (arrays.temporal[:, :, _S] > 1)
    spread = arrays.spatial_x * arrays.spatial_y
    spatial = (spread[:, :, _C] > 1) | (spread[:, :, _R] > 1) | (spread[:, :, _S] > 1)
    out = np.logical_or.accumulate(temporal, axis=1)
    out[:, 1:] |= np.logical_or.accumulate(spatial, axis=1)[:, :-1]
    return out


def _accesses(nest: _Nest, keep: np.ndarray, opw: np.ndarray, dims: np.ndarray,
              stages: tuple[LinkStage, ...] = ()) -> tuple[np.ndarray, ...]:
    """Per (candidate, level, data space) [B, L, 3]: reads, fills, updates (in words), utilized capacity
    (words), tile values and partition size (values) — Timeloop's buffer access counts of each kept tile."""
    B, L = nest.B, nest.L
    reads = np.zeros((B, L, 3))
    fills = np.zeros((B, L, 3))
    updates = np.zeros((B, L, 3))
    ucap = np.zeros((B, L, 3))
    tiles = np.zeros((B, L, 3))
    part = np.zeros((B, L, 3))
    rows = np.arange(B)[:, None]
    partition_ext = dims / nest.spatial_above[:, :L]  # per-dim extents of what passes through one instance

    for ds in range(3):
        kept = keep[:, :, ds]
        # next inner keeper of each level (L = the MACs)
        nxt = np.empty((B, L), dtype=np.int64)
        nxt[:, L - 1] = L
        for l in range(L - 2, -1, -1):
            nxt[:, l] = np.where(kept[:, l + 1], l + 1, nxt[:, l + 1])
        has_outer = np.zeros((B, L), dtype=bool)
        if L > 1:
            has_outer[:, 1:] = np.logical_or.accumulate(kept[:, :-1], axis=1)
        vol, w, h = nest.footprint(ds, nest.inner[:, :L])
        pvol = nest.footprint(ds, partition_ext)[0]
        vis = np.empty((B, L + 1))
        vis[:, :L] = nest.visits(ds, vol, w, h, kept.any(axis=0))  # only where some candidate keeps ds
        vis[:, L] = nest.total_steps  # the MACs take one operand per step
        # fan-out factors of dims that index ds (multicast over the others)
        rel_above = _prod_dims(nest.spatial_above, _DS_DIMS[ds])  # [B, L + 1]
        flow = vis[rows, nxt] * (rel_above[rows, nxt] / rel_above[:, :L])
        o = opw[:, :, ds]
        packed = bool((o > 1).any())

        def words(values):
            return _ceil_div(values, o) if packed else values

        ucap[:, :, ds] = words(vol) * kept
        tiles[:, :, ds] = vol * kept
        part[:, :, ds] = pvol * kept
        extra_reads = None
        if ds == _INPUTS and stages:
            # children of a stage with the same window are multicast (costmodel/link_transfers.py)
            ratio = coinciding_windows(nest, stages)
            if (ratio != 1).any():
                cum = np.cumprod(ratio, axis=1)
                flow = flow * (cum[rows, nxt] / cum[:, :L])
            # link transfers (costmodel/link_transfers.py): neighbours send part of the children's deltas
            link, saved, n_stage = link_transfers(nest, stages, kept, vol, w, h)
            if link.any():
                # Timeloop: peer reads and fills = link / instances (float); reads are rounded,
                # fills (parent share + peer fills) truncated when reported
                peer = link / _prod_dims(nest.spatial_above[:, :L], range(8))
                rel_stage = np.ones((B, L + 1))
                for st in stages:
                    sx, sy = st.factors(nest)
                    rel_stage[:, st.level + 1] = _prod_dims(sx * sy, _DS_DIMS[ds])
                saved_at = np.zeros((B, L + 1))
                saved_at[:, :L] = saved * rel_above[:, :L] / rel_stage[:, :L]
                flow = flow - saved_at[rows, nxt] / rel_above[:, :L]
                vis[:, :L] = np.floor(vis[:, :L] - link / n_stage + peer + 1e-9)
                extra_reads = peer
        if ds == _OUTPUTS:
            rd = np.maximum(flow - pvol, 0)
            fl = np.maximum(vis[:, :L] - pvol, 0) * has_outer
            updates[:, :, ds] = words(flow) * kept
        else:
            rd = flow if extra_reads is None else np.floor(flow + extra_reads + 0.5)
            fl = vis[:, :L] * has_outer
        reads[:, :, ds] = words(rd) * kept
        fills[:, :, ds] = words(fl) * kept
    return reads, fills, updates, ucap, tiles, part


def evaluate_batch(arch: Arch | str, problem: Problem, arrays: MappingArrays, bits: Bits = Bits()) -> BatchResult:
    """Cost of B mappings at once; `arch` is an `Arch` or a target name / YAML path.

    Bit-widths wider than a level's word raise QuantloopError. Legality is reported, not
    enforced: `capacity_ok`, `fanout_ok`, `factors_ok` (and `valid`, all three) per candidate;
    costs of invalid candidates are meaningless. Keep rules and dataflow constraints are the
    caller's (the mapper's) job; `evaluate(..., check=True)` checks everything for one mapping.
    """
    arch = _as_arch(arch)
    check_bits(arch, bits)
    nest = _Nest(problem, arrays)
    L = nest.L
    if L != arch.num_levels:
        raise ValueError(f"evaluate_batch: mapping has {L} levels, target {arch.name} has {arch.num_levels}")
    keep = arrays.keep
    opw = word_packing(arch, bits, arrays).astype(np.float64)  # [B, L, 3]
    dims = problem.dim_array.astype(np.float64)
    uinst = _prod_dims(nest.spatial_above[:, :L], range(8))  # [B, L]
    reads, fills, updates, ucap, tiles, part = _accesses(nest, keep, opw, dims, link_stages(arch))

    block = np.array([lvl.block_size for lvl in arch.levels], dtype=np.float64)[None, :, None]
    e_read = np.array([lvl.read_energy for lvl in arch.levels])[None, :, None]
    e_write = np.array([lvl.write_energy for lvl in arch.levels])[None, :, None]
    e_update = np.array([lvl.update_energy for lvl in arch.levels])[None, :, None]
    clusters = np.array([lvl.clusters for lvl in arch.levels], dtype=np.float64)[None, :]
    uclust = np.minimum(uinst, clusters)
    level_energy = (
        _ceil_div(reads, block) * e_read + _ceil_div(fills, block) * e_write + _ceil_div(updates, block) * e_update
    ) * uclust[:, :, None]

    compute_cycles = nest.total_steps
    level_cycles = np.repeat(compute_cycles[:, None], L, axis=1)
    rsum = reads[:, :, 0] + reads[:, :, 1] + reads[:, :, 2]  # integer counts: exact in any order
    wsum = (fills[:, :, 0] + fills[:, :, 1] + fills[:, :, 2]) + (updates[:, :, 0] + updates[:, :, 1] + updates[:, :, 2])
    for l, lvl in enumerate(arch.levels):
        for bw, words in ((lvl.read_bandwidth, rsum[:, l]), (lvl.write_bandwidth, wsum[:, l]),
                          (lvl.shared_bandwidth, rsum[:, l] + wsum[:, l])):
            if bw:
                level_cycles[:, l] = np.maximum(level_cycles[:, l], np.ceil(words / bw))
    cycles = level_cycles.max(axis=1)

    leak = np.array([lvl.leak_per_cycle for lvl in arch.levels])[None, :]
    leakage = leak * cycles[:, None] * np.where(keep[:, :, 0] | keep[:, :, 1] | keep[:, :, 2], uinst, 0)

    macs = problem.macs
    mac_e = arch.compute.mac_energy(bits.weights, bits.inputs, bits.outputs, bits.scheme)
    energy = macs * mac_e + level_energy.sum(axis=(1, 2)) + leakage.sum(axis=1)
    capacity_ok = tiles_ok(tile_bounds(arch), tiles, ucap, keep)
    utilization = macs / (cycles * arch.compute.instances)
    fx = np.array([lvl.fanout_x for lvl in arch.levels])
    fy = np.array([lvl.fanout_y for lvl in arch.levels])
    fanout_ok = np.all((_prod_dims(arrays.spatial_x, range(8)) <= fx) & (_prod_dims(arrays.spatial_y, range(8)) <= fy),
                       axis=1)
    factors_ok = np.all(nest.inner[:, 0] == dims, axis=1)
    return BatchResult(
        energy=energy, cycles=cycles, compute_cycles=compute_cycles, utilization=utilization,
        capacity_ok=capacity_ok, fanout_ok=fanout_ok, factors_ok=factors_ok, reads=reads, fills=fills, updates=updates, utilized_capacity=ucap, tile_values=tiles,
        partition_size=part, utilized_instances=uinst, utilized_clusters=uclust,
        level_energy=level_energy, leakage=leakage, level_cycles=level_cycles, macs=macs,
        mac_energy=macs * mac_e, values_per_word=opw.astype(np.int64),
    )


def evaluate(arch: Arch | str, problem: Problem, mapping: Mapping, bits: Bits = Bits(), *, check: bool = True) -> CostResult:
    """Cost of one mapping. With `check`, an illegal mapping raises QuantloopError naming the
    broken rule (factor products, fan-outs, keep rules, capacity in bits, constraints, bit-widths)."""
    arch = _as_arch(arch)
    if check:
        check_mapping(arch, problem, mapping, bits)
    r = evaluate_batch(arch, problem, mapping.to_arrays(), bits)
    if check:
        check_tiles(arch, r.tile_values[0], r.utilized_capacity[0], mapping.to_arrays().keep[0])
    per_level = []
    for l, lvl in enumerate(arch.levels):
        for k, ds in enumerate(DATASPACES):
            if ds not in mapping.levels[l].keep:
                continue
            per_level.append(
                LevelStats(
                    level=lvl.name, dataspace=ds, word_bits=lvl.word_bits,
                    values_per_word=int(r.values_per_word[0, l, k]),
                    utilized_instances=int(r.utilized_instances[0, l]),
                    utilized_clusters=int(r.utilized_clusters[0, l]),
                    utilized_capacity_words=int(r.utilized_capacity[0, l, k]),
                    utilized_capacity_bits=int(r.utilized_capacity[0, l, k]) * lvl.word_bits,
                    partition_size=int(r.partition_size[0, l, k]),
                    reads_per_instance=int(r.reads[0, l, k]),
                    fills_per_instance=int(r.fills[0, l, k]),
                    updates_per_instance=int(r.updates[0, l, k]),
                    energy_pj=float(r.level_energy[0, l, k]),
                )
            )
    return CostResult(
        total_energy_pj=float(r.energy[0]), cycles=int(r.cycles[0]), compute_cycles=int(r.compute_cycles[0]),
        utilization=float(r.utilization[0]), macs=r.macs, mac_energy_pj=float(r.mac_energy),
        per_level=tuple(per_level),
        leakage_pj={lvl.name: float(r.leakage[0, l]) for l, lvl in enumerate(arch.levels)},
    )
