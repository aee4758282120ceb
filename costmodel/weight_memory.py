"""Bytes a layer's weights take in DRAM (`weights.bin`): the one rule the search's weight-memory
objective (`pareto.json`) and the backend's packer (`report.json`) share.

The packer splits a layer's weights into the tiles its mapping's DRAM-level temporal loops over
weight dims stream; every tile starts on a fresh word and holds ⌊word / bits⌋ values per word, so a
layer takes `tiles · ⌈(count / tiles) / per_word⌉` words. A bias follows as int32 values, padded
to the next word.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from quantloop.mapping import Mapping
from quantloop.problem import DATASPACE_DIMS, values_per_word

BIAS_BITS = 32


def weight_tiles(mapping: Mapping) -> int:
    """How many tiles the DRAM (outermost) level's temporal loops over weight dims cut the weights into."""
    return prod(int(f) for d, f in mapping.levels[0].temporal if d in DATASPACE_DIMS["Weights"])


def packed_weight_words(count: int, bits: int, word_bits: int, tiles: int = 1) -> int:
    """Words of `count` `bits`-bit weights packed per tile (each tile word-aligned)."""
    return tiles * -(-(int(count) // tiles) // values_per_word(word_bits=word_bits, bits=bits))


def bias_bytes(count: int, word_bits: int) -> int:
    """Bytes of `count` int32 bias values, padded to a whole word."""
    word_bytes = word_bits // 8
    return -(-(int(count) * BIAS_BITS // 8) // word_bytes) * word_bytes


def layer_weight_bytes(count: int, bits: int, word_bits: int, tiles: int = 1, bias_count: int = 0) -> int:
    """A layer's bytes in `weights.bin`: its packed weight tiles plus its padded bias."""
    words = packed_weight_words(count, bits, word_bits, tiles)
    size = words * word_bits // 8 if word_bits % 8 == 0 else -(-words * word_bits // 8)
    return size + (bias_bytes(bias_count, word_bits) if bias_count else 0)


def network_weight_bytes(counts: Sequence[int], weight_bits: Sequence[int], word_bits: int,
                         tiles: Sequence[int] | None = None, bias_counts: Sequence[int] | None = None) -> int:
    """Σ `layer_weight_bytes` over layers (one tile and no bias each unless given)."""
    tiles = tiles or [1] * len(counts)
    bias_counts = bias_counts or [0] * len(counts)
    return sum(layer_weight_bytes(n, b, word_bits, t, c) for n, b, t, c in zip(counts, weight_bits, tiles, bias_counts))
