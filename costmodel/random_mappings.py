"""Random mappings that respect a target's structure (vectorised), for tests and benchmarks.

Every prime factor of every dim goes to a random slot (level × temporal / spatial X / spatial Y)
that the target's constraints allow; candidates whose fan-outs overflow are dropped. Loop orders
are random but follow each level's temporal permutation constraint; keep sets are the
must-keep data spaces plus a random subset of the may-keep ones. Capacity is NOT guaranteed:
filter with `BatchResult.capacity_ok`.
"""

from __future__ import annotations

import numpy as np

from quantloop.mapping import MappingArrays
from quantloop.problem import DATASPACES, DIM_INDEX, DIMS, Problem, prime_factors
from quantloop.targets.arch import Arch


def _allowed_slots(arch: Arch, dim: str) -> list[tuple[int, int]]:
    """(level, kind) with kind 0 temporal, 1 spatial X, 2 spatial Y."""
    slots = []
    for l, lvl in enumerate(arch.levels):
        if lvl.temporal_factors.get(dim, 0) != 1:
            slots.append((l, 0))
        if lvl.fanout_x > 1 and lvl.spatial_x_factors.get(dim, 0) != 1:
            slots.append((l, 1))
        if lvl.fanout_y > 1 and lvl.spatial_y_factors.get(dim, 0) != 1:
            slots.append((l, 2))
    return slots


def random_mappings(arch: Arch, problem: Problem, count: int, rng: np.random.Generator | int = 0,
                    max_tries: int = 50) -> MappingArrays:
    """Up to `count` random mappings within the target's fan-outs and constraints."""
    rng = np.random.default_rng(rng)
    L = arch.num_levels
    fx = np.array([lvl.fanout_x for lvl in arch.levels])
    fy = np.array([lvl.fanout_y for lvl in arch.levels])
    chunks: list[MappingArrays] = []
    have = 0
    for _ in range(max_tries):
        B = max(2 * (count - have), 64)
        factors = np.ones((B, 3, L, 8), dtype=np.int64)  # kind, level, dim
        for d in DIMS:
            slots = _allowed_slots(arch, d)
            for p in prime_factors(getattr(problem, d)):
                pick = rng.integers(0, len(slots), size=B)
                lv = np.array([s[0] for s in slots])[pick]
                kd = np.array([s[1] for s in slots])[pick]
                np.multiply.at(factors, (np.arange(B), kd, lv, DIM_INDEX[d]), p)
        sx, sy = factors[:, 1], factors[:, 2]
        ok = np.all(sx.prod(axis=2) <= fx, axis=1) & np.all(sy.prod(axis=2) <= fy, axis=1)
        order = np.argsort(rng.random((B, L, 8)), axis=2)
        for l, lvl in enumerate(arch.levels):
            if lvl.temporal_permutation:
                listed = [DIM_INDEX[d] for d in reversed(lvl.temporal_permutation)]
                rest = [i for i in range(8) if i not in listed]
                unl = np.array(rest)[np.argsort(rng.random((B, len(rest))), axis=1)] if rest else np.zeros((B, 0), int)
                order[:, l] = np.concatenate([unl, np.tile(listed, (B, 1))], axis=1)
        keep = np.zeros((B, L, 3), dtype=bool)
        for l, lvl in enumerate(arch.levels):
            for k, ds in enumerate(DATASPACES):
                if ds in lvl.must_keep or l == 0:
                    keep[:, l, k] = True
                elif ds in lvl.may_keep:
                    keep[:, l, k] = rng.random(B) < 0.5
        arrays = MappingArrays(factors[:, 0], sx, sy, order, keep)[np.flatnonzero(ok)]
        chunks.append(arrays)
        have += arrays.batch
        if have >= count:
            break
    out = MappingArrays(*(np.concatenate([getattr(c, f) for c in chunks])[:count]
                          for f in ("temporal", "spatial_x", "spatial_y", "order", "keep")))
    return out
