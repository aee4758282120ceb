"""Brute-force reference for tests: every tiling × every permutation of every level's active
loops × every keep choice, scored by the exact cost model. Independent of the mapper's own
mapspace and order reduction, and only usable on tiny layers."""

from __future__ import annotations

import itertools

import numpy as np

from quantloop.costmodel.legality import FREE, fanout_table, slot_table, slots_ok
from quantloop.mapping import MappingArrays
from quantloop.costmodel.model import evaluate_batch
from quantloop.problem import DATASPACES, DIM_INDEX, DIMS, Bits, Problem
from quantloop.targets.arch import Arch


def _splits(n: int, slots: int):
    if slots == 1:
        yield (n,)
        return
    for d in range(1, n + 1):
        if n % d == 0:
            for rest in _splits(n // d, slots - 1):
                yield (d,) + rest


def _orders(dims: list[int], permutation: tuple[str, ...]) -> list[list[int]]:
    """Every order (outer → inner) of the active dims that the permutation constraint allows."""
    listed = [DIM_INDEX[d] for d in reversed(permutation)]
    out = []
    for perm in itertools.permutations(dims):
        ranks = [listed.index(d) if d in listed else -1 for d in perm]
        seen_listed, ok, last = False, True, -1
        for r in ranks:
            if r < 0 and seen_listed:
                ok = False
            if r >= 0:
                if r < last:
                    ok = False
                seen_listed, last = True, r
        if ok:
            rest = [d for d in range(8) if d not in perm]
            out.append(rest + list(perm))
    return out


def legal_tilings(arch: Arch, problem: Problem) -> list[np.ndarray]:
    """Every tiling [L, 3, 8] whose factors multiply to the dims and honour the slot rules and
    fan-outs (`costmodel.legality`), by brute force over all splits of every dim."""
    L = arch.num_levels
    table, fanout = slot_table(arch), fanout_table(arch)
    per_dim = []
    for d in range(len(DIMS)):
        opts = np.array(list(_splits(int(problem.dim_array[d]), L * 3)), dtype=np.int64).reshape(-1, L, 3)
        fixed = table[:, :, d] != FREE
        per_dim.append(opts[np.all(~fixed | (opts == table[:, :, d]), axis=(1, 2))])
    tilings = []
    for combo in itertools.product(*[range(len(o)) for o in per_dim]):
        f = np.stack([per_dim[d][i] for d, i in enumerate(combo)], axis=-1)  # [L, 3, 8]
        if slots_ok(table, fanout, f):
            tilings.append(f)
    return tilings


def exhaustive_best(arch: Arch, problem: Problem, bits: Bits, objective: str = "energy",
                    chunk: int = 50_000) -> tuple[float, int]:
    """(best objective value, number of legal mappings) over the whole mapspace."""
    L = arch.num_levels
    tilings = legal_tilings(arch, problem)
    optional = [(l, k) for l, lvl in enumerate(arch.levels) for k, ds in enumerate(DATASPACES)
                if l > 0 and ds in lvl.may_keep and ds not in lvl.must_keep]
    base = np.array([[l == 0 or ds in lvl.must_keep for ds in DATASPACES] for l, lvl in enumerate(arch.levels)])
    keeps = []
    for on in itertools.product((False, True), repeat=len(optional)):
        k = base.copy()
        for (l, j), v in zip(optional, on):
            k[l, j] = v
        keeps.append(k)
    best, legal = np.inf, 0
    batch: list[tuple] = []

    def flush():
        nonlocal best, legal, batch
        if not batch:
            return
        F = np.array([b[0] for b in batch])
        arrays = MappingArrays(F[:, :, 0], F[:, :, 1], F[:, :, 2], np.array([b[1] for b in batch]),
                               np.array([b[2] for b in batch]))
        r = evaluate_batch(arch, problem, arrays, bits)
        value = {"energy": r.energy, "latency": r.cycles, "edp": r.energy * r.cycles}[objective]
        value = np.where(r.capacity_ok, value, np.inf)
        legal += int(r.capacity_ok.sum())
        best = min(best, float(value.min()))
        batch = []

    for f in tilings:
        per_level = [_orders([d for d in range(8) if f[l, 0, d] > 1], arch.levels[l].temporal_permutation)
                     for l in range(L)]
        for orders in itertools.product(*per_level):
            o = np.array(orders)
            for k in keeps:
                batch.append((f, o, k))
                if len(batch) >= chunk:
                    flush()
    flush()
    return best, legal
