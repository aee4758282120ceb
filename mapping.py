"""A mapping of one layer onto a target: per storage level temporal loops, spatial fan-out and
which data spaces the level keeps; and its dense batch encoding for the vectorised cost model.

The one data model of a mapping: the cost model, the mapper, the IR's `#accel.mapping` (which names
its levels), `schedule.json`, the mapper cache and the compile result all hold these classes.

Object form (`Mapping`): one `LevelMapping` per storage level of the `Arch`, outer → inner.
Each level holds its temporal loops OUTER → INNER as (dim, factor) pairs, and the spatial
factors of its fan-out to the next inner storage level (or to the MACs) along X and Y.
The loop nest is, from the outside in: level 0 temporal loops, level 0 spatial loops, level 1
temporal loops, ..., innermost level spatial loops, MAC.

Array form (`MappingArrays`), for B candidates and L storage levels, dims in `DIMS` order
(N, G, C, M, P, Q, R, S):
  temporal[B, L, 8]  int64  temporal factor of each dim at each level (1 = no loop)
  spatial_x[B, L, 8] int64  spatial factor along X of the level's fan-out
  spatial_y[B, L, 8] int64  spatial factor along Y
  order[B, L, 8]     int64  loop order of the temporal loops: order[b, l, i] is the dim index
                            of the i-th loop counted from the OUTERMOST (a permutation of 0..7;
                            loops with factor 1 may sit anywhere, they do nothing)
  keep[B, L, 3]      bool   level keeps Weights, Inputs, Outputs
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from quantloop.problem import DATASPACES, DIM_INDEX, DIMS
from quantloop.errors import QuantloopError

Loop = tuple[str, int]


def _loops(items) -> tuple[Loop, ...]:
    """Normalise loops: accept (dim, factor) pairs or a dict, drop factors of 1, check dims."""
    pairs = items.items() if isinstance(items, dict) else items
    out = []
    for dim, factor in pairs:
        if dim not in DIM_INDEX:
            raise QuantloopError(f"mapping: unknown dim {dim!r} (expected one of {', '.join(DIMS)})")
        factor = int(factor)
        if factor < 1:
            raise QuantloopError(f"mapping: factor of {dim} must be ≥ 1, got {factor}")
        if factor > 1:
            out.append((dim, factor))
    return tuple(out)


@dataclass(frozen=True)
class LevelMapping:
    """The loops one storage level contributes.

    temporal: (dim, factor) pairs OUTER → INNER (a dim may appear at most once per level).
    spatial_x / spatial_y: (dim, factor) pairs of the fan-out below this level.
    keep: data spaces this level stores (the others bypass it).
    level: the storage level's name where the mapping is shown (the IR, the compile result); the mapper and
    the cost model go by position and leave it empty.
    """

    temporal: tuple[Loop, ...] = ()
    spatial_x: tuple[Loop, ...] = ()
    spatial_y: tuple[Loop, ...] = ()
    keep: frozenset[str] = frozenset()
    level: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "temporal", _loops(self.temporal))
        object.__setattr__(self, "spatial_x", _loops(self.spatial_x))
        object.__setattr__(self, "spatial_y", _loops(self.spatial_y))
        object.__setattr__(self, "keep", frozenset(self.keep))
        for ds in self.keep:
            if ds not in DATASPACES:
                raise QuantloopError(f"mapping: unknown data space {ds!r} (expected one of {', '.join(DATASPACES)})")
        for name in ("temporal", "spatial_x", "spatial_y"):
            dims = [d for d, _ in getattr(self, name)]
            if len(dims) != len(set(dims)):
                raise QuantloopError(f"mapping: a dim appears twice in the {name} loops of one level: {dims}")

    def factor(self, kind: str, dim: str) -> int:
        return dict(getattr(self, kind)).get(dim, 1)

    @property
    def kept(self) -> tuple[str, ...]:
        """The kept data spaces in `DATASPACES` order (the order every serialisation writes)."""
        return tuple(ds for ds in DATASPACES if ds in self.keep)

    def to_json(self) -> dict:
        """The JSON view of a level (cache entries, schedule.json, the compile result): loops as [dim, factor]
        lists, `level` first where the level is named."""
        return {**({"level": self.level} if self.level else {}),
                "temporal": [[d, f] for d, f in self.temporal], "spatial_x": [[d, f] for d, f in self.spatial_x],
                "spatial_y": [[d, f] for d, f in self.spatial_y], "keep": list(self.kept)}

    @classmethod
    def from_json(cls, data: dict) -> "LevelMapping":
        return cls(*(tuple(tuple(x) for x in data[k]) for k in ("temporal", "spatial_x", "spatial_y")),
                   frozenset(data["keep"]), data.get("level", ""))


@dataclass(frozen=True)
class Mapping:
    """One `LevelMapping` per storage level, outer → inner (same length as `Arch.levels`)."""

    levels: tuple[LevelMapping, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))

    def dim_products(self) -> dict[str, int]:
        """Product of every factor of each dim over all levels (must equal the problem's dims)."""
        prod = {d: 1 for d in DIMS}
        for lvl in self.levels:
            for kind in (lvl.temporal, lvl.spatial_x, lvl.spatial_y):
                for d, f in kind:
                    prod[d] *= f
        return prod

    def named(self, names: Sequence[str]) -> "Mapping":
        """The same mapping with its levels named (outer to inner), as the IR and the compile result show it."""
        if len(names) != len(self.levels):
            raise ValueError(f"{len(self.levels)} mapping levels but {len(names)} level names")
        return Mapping(tuple(replace(lvl, level=name) for lvl, name in zip(self.levels, names)))

    @property
    def positional(self) -> "Mapping":
        """The same mapping with the level names dropped: the form the mapper makes and the cost model reads."""
        return Mapping(tuple(replace(lvl, level="") for lvl in self.levels))

    def to_json(self) -> list[dict]:
        return [lvl.to_json() for lvl in self.levels]

    @classmethod
    def from_json(cls, data: list[dict]) -> "Mapping":
        return cls(tuple(LevelMapping.from_json(lvl) for lvl in data))

    def to_arrays(self) -> "MappingArrays":
        return MappingArrays.stack([self])


@dataclass
class MappingArrays:
    """Dense encoding of B mappings (see the module docstring for the layout)."""

    temporal: np.ndarray
    spatial_x: np.ndarray
    spatial_y: np.ndarray
    order: np.ndarray
    keep: np.ndarray

    def __post_init__(self) -> None:
        self.temporal = np.asarray(self.temporal, dtype=np.int64)
        self.spatial_x = np.asarray(self.spatial_x, dtype=np.int64)
        self.spatial_y = np.asarray(self.spatial_y, dtype=np.int64)
        self.order = np.asarray(self.order, dtype=np.int64)
        self.keep = np.asarray(self.keep, dtype=bool)
        shape = self.temporal.shape
        if len(shape) != 3 or shape[2] != len(DIMS):
            raise ValueError(f"MappingArrays: temporal must be [B, L, 8], got {shape}")
        for name in ("spatial_x", "spatial_y", "order"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"MappingArrays: {name} shape {getattr(self, name).shape} != {shape}")
        if self.keep.shape != shape[:2] + (len(DATASPACES),):
            raise ValueError(f"MappingArrays: keep must be [B, L, 3], got {self.keep.shape}")

    @property
    def batch(self) -> int:
        return self.temporal.shape[0]

    @property
    def num_levels(self) -> int:
        return self.temporal.shape[1]

    def __len__(self) -> int:
        return self.batch

    def __getitem__(self, index) -> "MappingArrays":
        """Select candidates (slice, index array or boolean mask); keeps the batch axis."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        return MappingArrays(self.temporal[index], self.spatial_x[index], self.spatial_y[index],
                             self.order[index], self.keep[index])

    @classmethod
    def stack(cls, mappings: list[Mapping]) -> "MappingArrays":
        if not mappings:
            raise ValueError("MappingArrays.stack: no mappings")
        L = len(mappings[0].levels)
        B = len(mappings)
        temporal = np.ones((B, L, 8), dtype=np.int64)
        sx = np.ones((B, L, 8), dtype=np.int64)
        sy = np.ones((B, L, 8), dtype=np.int64)
        order = np.tile(np.arange(8, dtype=np.int64), (B, L, 1))
        keep = np.zeros((B, L, 3), dtype=bool)
        for b, m in enumerate(mappings):
            if len(m.levels) != L:
                raise ValueError("MappingArrays.stack: mappings have different level counts")
            for l, lvl in enumerate(m.levels):
                listed = [DIM_INDEX[d] for d, _ in lvl.temporal]
                order[b, l] = listed + [i for i in range(8) if i not in listed]
                for d, f in lvl.temporal:
                    temporal[b, l, DIM_INDEX[d]] = f
                for d, f in lvl.spatial_x:
                    sx[b, l, DIM_INDEX[d]] = f
                for d, f in lvl.spatial_y:
                    sy[b, l, DIM_INDEX[d]] = f
                for ds in lvl.keep:
                    keep[b, l, DATASPACES.index(ds)] = True
        return cls(temporal, sx, sy, order, keep)

    def mapping(self, index: int = 0) -> Mapping:
        levels = []
        for l in range(self.num_levels):
            temporal = [(DIMS[i], int(self.temporal[index, l, i])) for i in self.order[index, l]]
            sx = [(DIMS[i], int(self.spatial_x[index, l, i])) for i in range(8)]
            sy = [(DIMS[i], int(self.spatial_y[index, l, i])) for i in range(8)]
            keep = frozenset(ds for k, ds in enumerate(DATASPACES) if self.keep[index, l, k])
            levels.append(LevelMapping(tuple(temporal), tuple(sx), tuple(sy), keep))
        return Mapping(tuple(levels))

    def mappings(self) -> list[Mapping]:
        return [self.mapping(i) for i in range(self.batch)]
