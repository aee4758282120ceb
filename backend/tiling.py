"""Weight tiles in the order a mapping's DRAM-level temporal loops stream them.

A layer's weights are viewed as an array over canonical problem dims in the model's own layout order
(a conv's ``(M·G, C/g, kH, kW)`` tensor is the array ``[G, M, C, S, R]``; a gemm's ``(N, K)`` or ``(K, N)``
matrix is ``[M, C]`` or ``[C, M]``). Every DRAM temporal loop over a dim that indexes Weights splits that
dim; loops over other dims (N, P, Q) re-stream the same tiles and create no new ones. Tiles are numbered
by the weight loops in nest order (outer loop slowest) and each tile is one contiguous block whose elements
keep the model's layout order (row-major over the canonical dims, restricted to the tile).

Everything is one reshape + transpose, so tiling VGG-16's 138 M weights costs a single array copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class TilePlan:
    """How one layer's weights split into DRAM tiles.

    ``dims``/``extents``: canonical weight dims in the model's layout order and their sizes.
    ``loops``: the DRAM temporal loops over weight dims, outer→inner, as (dim, factor) with factor > 1.
    """

    dims: tuple[str, ...]
    extents: tuple[int, ...]
    loops: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.extents) or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"tile plan: dims {self.dims} and extents {self.extents} do not pair up")
        for dim, _ in self.loops:
            if dim not in self.dims:
                raise ValueError(f"tile plan: loop over {dim} but the weights have dims {self.dims}")
        for dim, extent in zip(self.dims, self.extents):
            split = self.factor(dim)
            if extent % split:
                raise ValueError(f"tile plan: DRAM factors of {dim} multiply to {split}, which does not divide {extent}")

    @classmethod
    def from_nest(
        cls, dims: Sequence[str], extents: Sequence[int], dram_loops: Sequence[tuple[str, int]]
    ) -> TilePlan:
        """Plan from the full DRAM temporal nest (outer→inner); non-weight dims and factors of 1 drop out."""
        dims = tuple(dims)
        loops = tuple((d, int(f)) for d, f in dram_loops if d in dims and int(f) > 1)
        return cls(dims, tuple(int(e) for e in extents), loops)

    def factor(self, dim: str) -> int:
        return prod(f for d, f in self.loops if d == dim)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        return tuple(e // self.factor(d) for d, e in zip(self.dims, self.extents))

    @property
    def tile_count(self) -> int:
        return prod(f for _, f in self.loops)

    @property
    def tile_size(self) -> int:
        return prod(self.tile_shape)

    def _split_shape_and_order(self) -> tuple[list[int], list[int]]:
        """Shape with every dim split into (its loop factors..., tile extent) and the transpose to tile order."""
        split_shape: list[int] = []
        loop_axis: dict[int, int] = {}
        tile_axes: list[int] = []
        for dim, tile in zip(self.dims, self.tile_shape):
            for i, (d, f) in enumerate(self.loops):
                if d == dim:
                    loop_axis[i] = len(split_shape)
                    split_shape.append(f)
            tile_axes.append(len(split_shape))
            split_shape.append(tile)
        order = [loop_axis[i] for i in range(len(self.loops))] + tile_axes
        return split_shape, order

    def to_tiles(self, array: np.ndarray) -> np.ndarray:
        """(tile_count, tile_size) matrix of the weights in streaming order; ``array`` has shape ``extents``."""
        if tuple(array.shape) != self.extents:
            raise ValueError(f"tile plan: weights of shape {array.shape}, expected {self.extents}")
        split_shape, order = self._split_shape_and_order()
        return array.reshape(split_shape).transpose(order).reshape(self.tile_count, self.tile_size)

    def from_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_tiles`: the array of shape ``extents`` from its tiles (any 1-D/2-D view)."""
        split_shape, order = self._split_shape_and_order()
        inverse = np.argsort(order)
        stacked = np.asarray(tiles).reshape([split_shape[a] for a in order])
        return stacked.transpose(inverse).reshape(self.extents)
