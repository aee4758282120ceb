"""Timeloop-faithful, bit-packing-aware cost model, vectorised over a batch of mappings.

Semantics (checked against /work/shared/reference/timeloop, see costmodel/README.md):

Tiles. The tile of data space d held by ONE instance of storage level l is the footprint of
every loop at l and below it (l's temporal loops, l's fan-out, all inner levels). Input tiles
use the sliding-window extents (p−1)·Wstride + (r−1)·Wdilation + 1 (P with R) and
(q−1)·Hstride + (s−1)·Hdilation + 1 (Q with S). `partition_size` is the footprint of
everything except the spatial loops above l (distinct values through one instance).

Visits. Walking the temporal loops above l (outer levels, outer → inner), every time loop j
increments (and every loop inside j wraps), the instance receives the part of the new tile
that is not in the previous tile: visits = tile + Σ_j (f_j − 1) · Π_{i<j} f_i · delta_j.
delta_j = 0 when no loop from j inwards indexes d (a run of innermost non-indexing loops is
reuse: the tile stays resident); = the whole tile when a non-sliding dim of d changes, or when
an indexing loop inside j wraps (Timeloop resets the sliding-window residual when the stride
changes, so a non-indexing loop outside an indexing loop refetches); otherwise (only the
sliding P/R/Q/S loop j steps, nothing indexing inside it) = tile − overlap of the shifted window
(Timeloop master's halo-aware fills). The quantization fork (v3.0.3) refetches whole windows
instead; for 1×1 layers both agree; we implement master.

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
per word (1 if b is None = stock Timeloop). Every per-instance count above is turned into words
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

from quantloop.costmodel.mapping import Mapping, MappingArrays
from quantloop.costmodel.problem import DATASPACES, DIM_INDEX, RELEVANT, Bits, Problem, values_per_word
from quantloop.targets.arch import Arch

_N, _G, _C, _M, _P, _Q, _R, _S = range(8)
_WEIGHTS, _INPUTS, _OUTPUTS = range(3)
#: dims whose change replaces the whole tile (everything relevant except the sliding-window dims of Inputs)
_HARD = RELEVANT.copy()
_HARD[_INPUTS, [_P, _Q, _R, _S]] = False
_SLIDING = np.zeros_like(RELEVANT)
_SLIDING[_INPUTS, [_P, _Q, _R, _S]] = True


@dataclass
class BatchResult:
    """Numpy results for B mappings. Per-level arrays are [B, L, 3] (data spaces in
    `DATASPACES` order) in words per utilized instance; entries of data spaces a level does not
    keep are 0. `capacity_ok[B]` is False when a level's kept tiles exceed its capacity."""

    energy: np.ndarray
    cycles: np.ndarray
    compute_cycles: np.ndarray
    utilization: np.ndarray
    capacity_ok: np.ndarray
    reads: np.ndarray
    fills: np.ndarray
    updates: np.ndarray
    utilized_capacity: np.ndarray
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
    def edp(self) -> np.ndarray:
        return self.energy * self.cycles


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
            "per_level": [
                {
                    "level": s.level,
                    "dataspace": s.dataspace,
                    "reads_per_instance": s.reads_per_instance,
                    "fills_per_instance": s.fills_per_instance,
                    "updates_per_instance": s.updates_per_instance,
                    "utilized_instances": s.utilized_instances,
                    "utilized_capacity_words": s.utilized_capacity_words,
                    "utilized_capacity_bits": s.utilized_capacity_bits,
                    "energy_pj": s.energy_pj,
                }
                for s in self.per_level
            ],
        }


def _ceil_div(a: np.ndarray, b) -> np.ndarray:
    return -(-a // b)


def _window(extent_a: np.ndarray, extent_b: np.ndarray, stride: int, dilation: int) -> np.ndarray:
    return (extent_a - 1) * stride + (extent_b - 1) * dilation + 1


class _Nest:
    """Per-batch loop-nest tables shared by every (level, data space) analysis."""

    def __init__(self, problem: Problem, arrays: MappingArrays) -> None:
        self.problem = problem
        T = arrays.temporal
        SP = arrays.spatial_x * arrays.spatial_y
        B, L, _ = T.shape
        self.B, self.L = B, L
        self.T, self.SP = T, SP
        per_level = T * SP
        # inner[:, l] = product of all factors at level l and below (tile extents of level l)
        inner = np.ones((B, L + 1, 8), dtype=np.int64)
        inner[:, :L] = np.flip(np.cumprod(np.flip(per_level, 1), axis=1), 1)
        self.inner = inner
        # spatial_above[:, l] = product of spatial factors of levels < l
        above = np.ones((B, L + 1, 8), dtype=np.int64)
        above[:, 1:] = np.cumprod(SP, axis=1)
        self.spatial_above = above
        # global temporal loop sequence, outer → inner: level 0's loops in its order, then level 1's, ...
        gdim = arrays.order.reshape(B, L * 8)
        gf = np.take_along_axis(T, arrays.order, axis=2).reshape(B, L * 8)
        self.gdim, self.gf = gdim, gf
        self.level_of = np.repeat(np.arange(L), 8)
        # stride of each loop in its own dim: factors of that dim inside it
        # = temporal loops of that dim later in the sequence × spatial of that dim at its level and below
        onehot = gdim[:, :, None] == np.arange(8)[None, None, :]  # [B, 8L, 8]
        fvec = np.where(onehot, gf[:, :, None], 1)
        after = np.ones_like(fvec)
        after[:, :-1] = np.flip(np.cumprod(np.flip(fvec[:, 1:], 1), axis=1), 1)
        spatial_below = np.flip(np.cumprod(np.flip(SP, 1), axis=1), 1)  # [B, L, 8] spatial at level ≥ l
        sb = spatial_below[:, self.level_of, :]  # [B, 8L, 8]
        stride_all = after * sb
        self.stride = np.take_along_axis(stride_all, gdim[:, :, None], axis=2)[:, :, 0]
        prefix = np.ones_like(gf)
        prefix[:, 1:] = np.cumprod(gf[:, :-1], axis=1)
        self.prefix = prefix
        self.total_steps = np.prod(T.reshape(B, -1), axis=1)
        pr = problem
        self.step_w = np.where(gdim == _P, self.stride * pr.Wstride, np.where(gdim == _R, self.stride * pr.Wdilation, 0))
        self.step_h = np.where(gdim == _Q, self.stride * pr.Hstride, np.where(gdim == _S, self.stride * pr.Hdilation, 0))

    def footprint(self, ds: int, ext: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(volume, width, height) of data space ds for per-dim extents ext[..., 8]."""
        pr = self.problem
        if ds == _INPUTS:
            w = _window(ext[..., _P], ext[..., _R], pr.Wstride, pr.Wdilation)
            h = _window(ext[..., _Q], ext[..., _S], pr.Hstride, pr.Hdilation)
            other = ext[..., _N] * ext[..., _G] * ext[..., _C]
            return other * w * h, w, h
        vol = np.prod(np.where(RELEVANT[ds], ext, 1), axis=-1)
        one = np.ones_like(vol)
        return vol, one, one

    def multicast_volume(self, ds: int, parent: int, child: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Child tile times the fan-out factors (levels parent..child−1) of dims that index ds.

        Timeloop's spatial analysis multicasts only across fan-out dims that do not index the data
        space; children whose tiles merely overlap (sliding windows, e.g. spatial Q and S) are
        each sent their own copy, so the parent reads the sum of their tiles."""
        vol, w, h = self.footprint(ds, self.inner[:, child])
        spatial = self.spatial_above[:, child] // self.spatial_above[:, parent]
        fan = np.prod(np.where(RELEVANT[ds], spatial, 1), axis=1)
        return vol * fan, w, h

    def visits(self, ds: int, n_loops: int, vol: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Values received by one instance whose tile is (vol, w, h), under the first n_loops
        temporal loops of the global sequence (halo-aware deltas, see module docstring)."""
        if n_loops == 0:
            return vol.copy()
        gdim = self.gdim[:, :n_loops]
        gf = self.gf[:, :n_loops]
        active = gf > 1
        hard = active & _HARD[ds][gdim]
        hard_suffix = np.flip(np.logical_or.accumulate(np.flip(hard, 1), axis=1), 1)
        if ds == _INPUTS:
            soft = active & _SLIDING[ds][gdim]
            soft_suffix = np.flip(np.logical_or.accumulate(np.flip(soft, 1), axis=1), 1)
            # an indexing loop inside j that wraps when j steps resets the window (no halo reuse)
            inner_indexing = np.zeros_like(soft_suffix)
            inner_indexing[:, :-1] = soft_suffix[:, 1:] | hard_suffix[:, 1:]
            step_w = self.step_w[:, :n_loops]
            step_h = self.step_h[:, :n_loops]
            reset_w = (gf - 1) * step_w
            reset_h = (gf - 1) * step_h
            after_w = np.zeros_like(reset_w)
            after_h = np.zeros_like(reset_h)
            after_w[:, :-1] = np.flip(np.cumsum(np.flip(reset_w[:, 1:], 1), axis=1), 1)
            after_h[:, :-1] = np.flip(np.cumsum(np.flip(reset_h[:, 1:], 1), axis=1), 1)
            dw = np.abs(step_w - after_w)
            dh = np.abs(step_h - after_h)
            w2, h2, v2 = w[:, None], h[:, None], vol[:, None]
            overlap = np.maximum(w2 - dw, 0) * np.maximum(h2 - dh, 0) * (v2 // (w2 * h2))
            delta = np.where(hard_suffix | inner_indexing, v2, np.where(soft_suffix, v2 - overlap, 0))
        else:
            delta = np.where(hard_suffix, vol[:, None], 0)
        return vol + np.sum((gf - 1) * self.prefix[:, :n_loops] * delta, axis=1)


def _level_tables(arch: Arch, bits: Bits):
    L = arch.num_levels
    opw = np.ones((L, 3), dtype=np.int64)
    for l, lvl in enumerate(arch.levels):
        for k, b in enumerate(bits.as_tuple()):
            opw[l, k] = values_per_word(lvl.word_bits, b)
    return opw


def evaluate_batch(arch: Arch, problem: Problem, arrays: MappingArrays, bits: Bits = Bits()) -> BatchResult:
    """Cost of B mappings at once (no legality checks beyond `capacity_ok`; see `checks`).

    The mappings must be factorisations of `problem` with fan-outs within the target; the
    mapper guarantees that, `evaluate(..., check=True)` verifies it for single mappings.
    """
    from quantloop.costmodel.checks import check_bits

    check_bits(arch, bits)
    nest = _Nest(problem, arrays)
    B, L = nest.B, nest.L
    if L != arch.num_levels:
        raise ValueError(f"evaluate_batch: mapping has {L} levels, target {arch.name} has {arch.num_levels}")
    keep = arrays.keep
    opw = _level_tables(arch, bits)
    reads = np.zeros((B, L, 3), dtype=np.int64)
    fills = np.zeros((B, L, 3), dtype=np.int64)
    updates = np.zeros((B, L, 3), dtype=np.int64)
    ucap = np.zeros((B, L, 3), dtype=np.int64)
    part = np.zeros((B, L, 3), dtype=np.int64)
    dims = problem.dim_array
    uinst = np.prod(nest.spatial_above[:, :L], axis=2)  # [B, L]

    for ds in range(3):
        kept = keep[:, :, ds]
        # next inner keeper of each level (L = the MACs)
        nxt = np.full((B, L), L, dtype=np.int64)
        for l in range(L - 2, -1, -1):
            nxt[:, l] = np.where(kept[:, l + 1], l + 1, nxt[:, l + 1])
        has_outer = np.zeros((B, L), dtype=bool)
        if L > 1:
            has_outer[:, 1:] = np.logical_or.accumulate(kept[:, :-1], axis=1)
        for l in range(L):
            vol, w, h = nest.footprint(ds, nest.inner[:, l])
            pvol, _, _ = nest.footprint(ds, dims[None, :] // nest.spatial_above[:, l])
            vis = nest.visits(ds, 8 * l, vol, w, h)
            # reads / updates towards the next inner keeper (or the MACs)
            flow = np.zeros(B, dtype=np.int64)
            for c in range(l + 1, L + 1):
                sel = kept[:, l] & (nxt[:, l] == c)
                if not sel.any():
                    continue
                if c == L:
                    f = nest.multicast_volume(ds, l, c)[0] * nest.total_steps
                else:
                    cv, cw, ch = nest.footprint(ds, nest.inner[:, c])
                    fan = nest.multicast_volume(ds, l, c)[0] // cv
                    f = nest.visits(ds, 8 * c, cv, cw, ch) * fan
                flow = np.where(sel, f, flow)
            o = opw[l, ds]
            ucap[:, l, ds] = np.where(kept[:, l], _ceil_div(vol, o), 0)
            part[:, l, ds] = np.where(kept[:, l], pvol, 0)
            if ds == _OUTPUTS:
                upd = flow
                rd = np.maximum(upd - pvol, 0)
                fl = np.where(has_outer[:, l], np.maximum(vis - pvol, 0), 0)
                updates[:, l, ds] = np.where(kept[:, l], _ceil_div(upd, o), 0)
            else:
                rd = flow
                fl = np.where(has_outer[:, l], vis, 0)
            reads[:, l, ds] = np.where(kept[:, l], _ceil_div(rd, o), 0)
            fills[:, l, ds] = np.where(kept[:, l], _ceil_div(fl, o), 0)

    block = np.array([lvl.block_size for lvl in arch.levels], dtype=np.int64)[None, :, None]
    e_read = np.array([lvl.read_energy for lvl in arch.levels])[None, :, None]
    e_write = np.array([lvl.write_energy for lvl in arch.levels])[None, :, None]
    e_update = np.array([lvl.update_energy for lvl in arch.levels])[None, :, None]
    clusters = np.array([lvl.clusters for lvl in arch.levels], dtype=np.int64)[None, :]
    uclust = np.minimum(uinst, clusters)
    level_energy = (
        _ceil_div(reads, block) * e_read + _ceil_div(fills, block) * e_write + _ceil_div(updates, block) * e_update
    ) * uclust[:, :, None]

    compute_cycles = nest.total_steps
    level_cycles = np.zeros((B, L), dtype=np.int64)
    rsum = reads.sum(axis=2)
    wsum = fills.sum(axis=2) + updates.sum(axis=2)
    for l, lvl in enumerate(arch.levels):
        cyc = compute_cycles.astype(np.float64)
        if lvl.read_bandwidth:
            cyc = np.maximum(cyc, rsum[:, l] / lvl.read_bandwidth)
        if lvl.write_bandwidth:
            cyc = np.maximum(cyc, wsum[:, l] / lvl.write_bandwidth)
        if lvl.shared_bandwidth:
            cyc = np.maximum(cyc, (rsum[:, l] + wsum[:, l]) / lvl.shared_bandwidth)
        level_cycles[:, l] = np.ceil(cyc).astype(np.int64)
    cycles = np.maximum(compute_cycles, level_cycles.max(axis=1))

    leak = np.array([lvl.leak_per_cycle for lvl in arch.levels])[None, :]
    any_kept = keep.any(axis=2)
    leakage = leak * cycles[:, None] * np.where(any_kept, uinst, 0)

    macs = problem.macs
    mac_e = arch.compute.mac_energy(bits.weights, bits.inputs, bits.outputs, bits.scheme)
    energy = macs * mac_e + level_energy.sum(axis=(1, 2)) + leakage.sum(axis=1)
    cap = np.array([-1 if lvl.capacity_words is None else lvl.capacity_words for lvl in arch.levels])
    used = ucap.sum(axis=2)
    capacity_ok = np.all((cap[None, :] < 0) | (used <= cap[None, :]), axis=1)
    utilization = macs / (cycles * arch.compute.instances)
    return BatchResult(
        energy=energy, cycles=cycles, compute_cycles=compute_cycles, utilization=utilization,
        capacity_ok=capacity_ok, reads=reads, fills=fills, updates=updates, utilized_capacity=ucap,
        partition_size=part, utilized_instances=uinst, utilized_clusters=uclust,
        level_energy=level_energy, leakage=leakage, level_cycles=level_cycles, macs=macs,
        mac_energy=macs * mac_e, values_per_word=opw,
    )


def evaluate(arch: Arch, problem: Problem, mapping: Mapping, bits: Bits = Bits(), *, check: bool = True) -> CostResult:
    """Cost of one mapping. With `check`, an illegal mapping raises QuantloopError naming the
    broken rule (factor products, fan-outs, keep rules, capacity in bits, constraints, bit-widths)."""
    if check:
        from quantloop.costmodel.checks import check_mapping

        check_mapping(arch, problem, mapping, bits)
    r = evaluate_batch(arch, problem, mapping.to_arrays(), bits)
    if check:
        from quantloop.costmodel.checks import check_capacity

        check_capacity(arch, r.utilized_capacity[0])
    per_level = []
    for l, lvl in enumerate(arch.levels):
        for k, ds in enumerate(DATASPACES):
            if ds not in mapping.levels[l].keep:
                continue
            per_level.append(
                LevelStats(
                    level=lvl.name, dataspace=ds, word_bits=lvl.word_bits,
                    values_per_word=int(r.values_per_word[l, k]),
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
