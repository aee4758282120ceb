"""Timeloop's inter-PE link transfers of sliding-window Inputs (nest-analysis
`ComputeNetworkLinkTransfers`, tiling `ComputePeerAccesses`), vectorised over a batch of mappings.

At the innermost fan-out stage above a level c that keeps Inputs, timeloop-model compares, at
every invocation of the stage, the delta each child needs with the deltas its mesh neighbours
(left / right / up / down in the stage's physical X × Y mesh, linear index = Y digits outer, X
digits inner, each axis in `DIMS` order) received at the invocation before. A child whose delta
equals a neighbour's previous delta gets it over the link instead of from the parent; Timeloop
keeps that choice only where it saves parent accesses (a multicast group is removed only when
every member gets its delta over a link). Spatial P/Q/R/S under a sliding window (eyeriss' S on
Y with a temporal Q step) is where this happens: child s needs, one Q step later, the row that
child s + 1 needed just before.

Deltas follow the sliding-window rule of `model._Nest._input_visits` (Timeloop's temporal
extrapolation runs iterations #0 and #1 of each loop, so the invocation before a step of loop j
is a step of the innermost active loop a, and the one before a step of a is a step of any outer
loop j' — or the first tile). A delta is the whole tile or, for a steady single-axis step, the
slab of new columns or rows; two deltas are equal when their boxes coincide.

Per stage parent, `link` = Σ epochs × |delta| × children served over a link, `saved` = Σ
epochs × |delta| × multicast groups removed. timeloop-model then charges, per instance of c,
`fills = ⌊visits − link / stage children + link / instances of c⌋` and `reads = round(reads +
link / instances of c)` (peer fills and reads, one per value a neighbour sends; the rounding is
how Timeloop reports them, applied in `model._accesses`), and the parent keeper reads `saved`
fewer values per stage parent.

Only the last fan-out stage of a level can link: an earlier stage feeds a dummy level that keeps
nothing, and Timeloop drops the link transfers of a stage whose child is bypassed. Only deltas
that move along the window (spatial P/Q/R/S at the stage) can coincide with a neighbour's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantloop.costmodel.window_steps import step_kinds
from quantloop.problem import DIM_INDEX, RELEVANT
from quantloop.targets.arch import Arch

_N, _G, _C, _M, _P, _Q, _R, _S = (DIM_INDEX[d] for d in ("N", "G", "C", "M", "P", "Q", "R", "S"))
_INPUTS = 1
_SLIDING = [_P, _Q, _R, _S]
_HARD_DIMS = [_N, _G, _C]


@dataclass(frozen=True)
class LinkStage:
    """The innermost fan-out stage of one storage level: which of the level's spatial axes it
    holds and its physical mesh (Timeloop's neighbour test uses the mesh, not the mapped factors)."""

    level: int
    use_x: bool
    use_y: bool
    mesh_x: int
    mesh_y: int

    def factors(self, nest) -> tuple[np.ndarray, np.ndarray]:
        """([B, 8] X factors, [B, 8] Y factors) of this stage for every mapping of `nest` (1 on an axis
        the stage does not hold)."""
        ones = np.ones((nest.B, len(DIM_INDEX)))
        return (nest.spatial_x[:, self.level] if self.use_x else ones,
                nest.spatial_y[:, self.level] if self.use_y else ones)


def link_stages(arch: Arch) -> tuple[LinkStage, ...]:
    """The stages where link transfers can happen (levels with a fan-out and a level inside)."""
    out = []
    for l, lvl in enumerate(arch.levels[:-1]):
        stages = list(lvl.spatial_stages)
        if not stages:
            if lvl.fanout > 1:
                out.append(LinkStage(l, True, True, lvl.fanout_x, lvl.fanout_y))
            continue
        last = stages[-1]
        # the last stage owns an axis only when no earlier stage fans out along it too
        use_x = last.fanout_x > 1 and last.fanout_x == lvl.fanout_x
        use_y = last.fanout_y > 1 and last.fanout_y == lvl.fanout_y
        if use_x or use_y:
            out.append(LinkStage(l, use_x, use_y, last.fanout_x, last.fanout_y))
    return tuple(out)


def _children(sx: np.ndarray, sy: np.ndarray, stride: np.ndarray, coef_w, coef_h, n_max: int):
    """Offsets of every child of the stage ([B, n_max] each; w, h and one array per hard dim),
    the number of children [B] and, per child, a group key of its Inputs-relevant offsets."""
    B = sx.shape[0]
    idx = np.broadcast_to(np.arange(n_max, dtype=np.float64), (B, n_max))
    loops = [(d, sy[:, d]) for d in range(8)] + [(d, sx[:, d]) for d in range(8)]  # outer → inner
    radix_inner = np.ones(B)
    zero = np.zeros((B, n_max))
    digits = {d: zero for d in range(8)}
    for d, f in reversed(loops):
        if (f == 1).all():
            continue
        digits[d] = digits[d] + np.floor(idx / radix_inner[:, None]) % f[:, None]  # a dim sits on one axis of a stage
        radix_inner = radix_inner * f
    ow = sum(digits[d] * (stride[:, d] * coef_w[d])[:, None] for d in _SLIDING)
    oh = sum(digits[d] * (stride[:, d] * coef_h[d])[:, None] for d in _SLIDING)
    hard = [digits[d] * stride[:, d][:, None] for d in _HARD_DIMS]
    return ow, oh, hard, radix_inner


def link_transfers(nest, stages: tuple[LinkStage, ...], keep_inputs: np.ndarray, vol: np.ndarray,
                   w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(link [B, L], saved [B, L], stage children [B, L]) for Inputs, indexed by the level c that
    the stage feeds (so the stage belongs to level c − 1); zero where nothing links."""
    B, L = nest.B, nest.L
    link = np.zeros((B, L))
    saved = np.zeros((B, L))
    n_children = np.ones((B, L))
    for st in stages:
        l, c = st.level, st.level + 1
        sx, sy = st.factors(nest)
        n_s = (sx * sy).prod(axis=1)
        n_children[:, c] = n_s
        sliding = ((sx[:, _SLIDING] > 1) | (sy[:, _SLIDING] > 1)).any(axis=1)
        rows = np.flatnonzero(sliding & keep_inputs[:, c])
        if rows.size == 0:
            continue
        TW, TH, WT = _previous_deltas(nest, rows, l, c, w[rows, c][:, None], h[rows, c][:, None], vol[rows, c][:, None])
        ow, oh, ohard, n_r = _children(sx[rows], sy[rows], nest.inner[rows, c], nest.coef_w, nest.coef_h,
                                       int(n_s[rows].max()))
        exists = np.arange(ow.shape[1])[None, :] < n_r[:, None]
        matched = _neighbour_matches(st, ow, oh, ohard, n_r, exists, TW, TH)
        count = matched.sum(axis=2)
        removed = count
        spread = (sx[rows] > 1) | (sy[rows] > 1)
        coinciding = (spread[:, _P] & spread[:, _R]) | (spread[:, _Q] & spread[:, _S])
        if spread[:, ~RELEVANT[_INPUTS]].any() or coinciding.any():
            removed = _groups_removed(ow, oh, ohard, exists, matched)
        used = removed > 0
        link[rows, c] = (WT * count * used).sum(axis=1)
        saved[rows, c] = (WT * removed).sum(axis=1)
    return link, saved, n_children


def _suffix(a: np.ndarray) -> np.ndarray:
    """suffix(a)[:, j] = sum of a[:, j + 1:]."""
    out = np.zeros_like(a, dtype=np.float64)
    out[:, :-1] = np.cumsum(a[:, :0:-1], axis=1)[:, ::-1]
    return out


def _previous_deltas(nest, rows: np.ndarray, l: int, c: int, ww: np.ndarray, hh: np.ndarray,
                     v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the loops at and above level l of the mappings `rows`, the (t, t − 1) invocation pairs of the stage:
    [R, T] translations (w, h) of a child's delta box against the box it received at t − 1, and the weight of
    each pair (epochs × |delta|; zero where the boxes differ in extent). `ww`, `hh`, `v`: level c's Inputs
    tile width, height and values, [R, 1]."""
    E = 8 * (l + 1)
    B = nest.B
    f = nest.f.reshape(B, -1)[rows, :E]
    dim = nest.order.reshape(B, -1)[rows, :E]
    stride = nest.stride.reshape(B, -1)[rows, :E]
    active = f > 1
    sw = stride * nest.coef_w[dim] * active
    sh = stride * nest.coef_h[dim] * active
    hard = active & np.isin(dim, _HARD_DIMS)
    moves = active & RELEVANT[_INPUTS][dim]
    incl = nest.incl[rows, :E]
    R = rows.size
    pos = np.arange(E)

    dw = sw - _suffix(sw)
    dh = sh - _suffix(sh)
    new_hard = hard | (_suffix(hard.astype(np.float64)) > 0)
    k = np.where(moves, pos, -1).max(axis=1)
    a = np.where(active, pos, -1).max(axis=1)
    ok_rows = k >= 0
    kk, aa = np.maximum(k, 0), np.maximum(a, 0)
    ar = np.arange(R)
    dwk, dhk, hardk = dw[ar, kk][:, None], dh[ar, kk][:, None], hard[ar, kk][:, None]
    still, steady = step_kinds(dw, dh, new_hard, dwk, dhk, hardk)
    slab_w = steady & ~new_hard & (dh == 0) & (np.abs(dw) < ww) & (dw != 0)
    slab_h = steady & ~new_hard & (dw == 0) & (np.abs(dh) < hh) & (dh != 0)
    # the delta box of a step of each loop, relative to the tile's low corner: extent and offset
    ew = np.where(slab_w, np.abs(dw), ww) * ~still
    eh = np.where(slab_h, np.abs(dh), hh) * ~still
    xw = np.where(slab_w & (dw > 0), ww - dw, 0)
    xh = np.where(slab_h & (dh > 0), hh - dh, 0)
    size = ew * eh * (v / (ww * hh))

    # (t, t − 1) pairs: [R, T] translation of the delta box, extents equal, weight, |delta|
    is_a = pos[None, :] == a[:, None]
    # (i) a step of j ≠ a follows a step of a
    ewa, eha = ew[ar, aa][:, None], eh[ar, aa][:, None]
    xwa, xha = xw[ar, aa][:, None], xh[ar, aa][:, None]
    ok_i = active & ~is_a & ~new_hard & ~still & (ew == ewa) & (eh == eha)
    tw_i, th_i = dw + xw - xwa, dh + xh - xha
    wt_i = (f - 1) * incl * ok_i
    # (ii) a step of a follows a step of an outer loop j', or the first tile
    swa, sha = sw[ar, aa][:, None], sh[ar, aa][:, None]
    a_ok = (~new_hard[ar, aa] & ~still[ar, aa] & ok_rows)[:, None]
    fa = f[ar, aa][:, None]
    outer = active & (pos[None, :] < a[:, None])
    ok_ii = outer & a_ok & (ew == ewa) & (eh == eha)
    tw_ii, th_ii = swa + xwa - xw, sha + xha - xh
    wt_ii = (f - 1) * incl * (fa - 1) * ok_ii
    first_ok = a_ok & (ewa == ww) & (eha == hh)
    tw_f, th_f = swa + xwa, sha + xha
    wt_f = (fa - 1) * first_ok
    size_a = size[ar, aa][:, None]
    TW = np.concatenate([tw_i, tw_ii, tw_f], axis=1)
    TH = np.concatenate([th_i, th_ii, th_f], axis=1)
    WT = np.concatenate([wt_i * size, wt_ii * size_a, wt_f * size_a], axis=1)
    WT *= ok_rows[:, None]
    return TW, TH, WT


def _neighbour_matches(st: LinkStage, ow: np.ndarray, oh: np.ndarray, ohard: list[np.ndarray], n_r: np.ndarray,
                       exists: np.ndarray, TW: np.ndarray, TH: np.ndarray) -> np.ndarray:
    """bool [R, T, children]: the child's delta of pair t is what one of its four mesh neighbours (Timeloop's
    link directions) received at t − 1."""
    R, n_max = ow.shape
    child = np.arange(n_max)
    mx, my = st.mesh_x, st.mesh_y
    hid, vid = child % mx, child // mx
    cand = []  # (neighbour index, valid) for Timeloop's four link directions
    if my > 1:
        cand += [(child - mx, vid >= 1), (child + mx, vid < my - 1)]
    if mx > 1:
        cand += [(child - 1, hid >= 1), (child + 1, hid < mx - 1)]
    matched = np.zeros((R, TW.shape[1], n_max), dtype=bool)
    for nb, valid in cand:
        nbc = np.clip(nb, 0, n_max - 1)
        ok = exists & valid[None, :] & (nb[None, :] < n_r[:, None]) & (nb[None, :] >= 0)
        for hd in ohard:
            ok &= hd[:, nbc] == hd
        dwn = ow[:, nbc] - ow
        dhn = oh[:, nbc] - oh
        matched |= ok[:, None, :] & (dwn[:, None, :] == TW[:, :, None]) & (dhn[:, None, :] == TH[:, :, None])
    return matched


def _groups_removed(ow: np.ndarray, oh: np.ndarray, ohard: list[np.ndarray], exists: np.ndarray,
                    matched: np.ndarray) -> np.ndarray:
    """[R, T] multicast groups removed: children with the same Inputs-relevant offsets form a group (more than
    one child only when a dim that does not index Inputs, e.g. M, is spread over the stage), and a group is
    removed when all its members are served over links."""
    key_same = (ow[:, :, None] == ow[:, None, :]) & (oh[:, :, None] == oh[:, None, :])
    for hd in ohard:
        key_same &= hd[:, :, None] == hd[:, None, :]
    key_same &= exists[:, :, None] & exists[:, None, :]
    leader = exists & ~np.tril(key_same, -1).any(axis=2)  # the first child of its group
    unmatched = np.einsum("rij,rtj->rti", key_same.astype(np.float64),
                          (~matched & exists[:, None, :]).astype(np.float64))
    return ((unmatched == 0) & leader[:, None, :]).sum(axis=2)


def coinciding_windows(nest, stages: tuple[LinkStage, ...]) -> np.ndarray:
    """[B, L + 1]: for the level c a stage feeds, the share of the stage's Inputs-distinct children
    (product of its Inputs-relevant factors) whose windows are distinct. Two sliding dims of one image
    axis spread over one stage (P and R, or Q and S) can give two children the same window, e.g. P2 and
    R2 at stride 1: (p 1, r 0) and (p 0, r 1). Their deltas are equal, so Timeloop multicasts them: the
    parent reads once for both. 1 where every child's window is its own."""
    B, L = nest.B, nest.L
    pr = nest.problem
    ratio = np.ones((B, L + 1))
    for st in stages:
        c = st.level + 1
        sx, sy = st.factors(nest)
        f = sx * sy
        rows = np.flatnonzero(((f[:, _P] > 1) & (f[:, _R] > 1)) | ((f[:, _Q] > 1) & (f[:, _S] > 1)))
        if rows.size == 0:
            continue
        n_max = int(f[rows].prod(axis=1).max())
        stride = nest.inner[rows, c]
        ow, oh, ohard, n_r = _children(sx[rows], sy[rows], stride, nest.coef_w, nest.coef_h, n_max)
        width, height = pr.input_width, pr.input_height
        key = ((ohard[0] * pr.G + ohard[1]) * pr.C + ohard[2]) * (width * height) + oh * width + ow
        exists = np.arange(n_max)[None, :] < n_r[:, None]
        key = np.sort(np.where(exists, key, -1), axis=1)
        distinct = ((key[:, 1:] != key[:, :-1]) & (key[:, 1:] >= 0)).sum(axis=1) + (key[:, 0] >= 0)
        relevant = f[rows][:, RELEVANT[_INPUTS]].prod(axis=1)
        ratio[rows, c] = distinct / relevant
    return ratio
