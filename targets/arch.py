"""The normalised, immutable view of a target that the cost model and the mapper consume.

`targets/schema.py` validates the YAML; `Arch.from_spec` (in schema.py) builds this view.
Storage levels are ordered outer → inner (DRAM first). Each level's fan-out
(`fanout_x × fanout_y`) is the number of children every instance feeds at the next inner
storage level (or at the MACs, for the innermost level). Timeloop's dummy spatial levels
(`inter_PE_spatial`, ...) are folded into the fan-out of the storage level above them; their
names are kept in `spatial_stages` so mappings can be written back in Timeloop's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping as TMapping

from quantloop.bits import FLOAT_SCHEME, SCHEMES
from quantloop.problem import DATASPACES, DIMS


class _FanOut:
    """A level or stage that fans out to `fanout_x` × `fanout_y` instances of the next inner level."""

    fanout_x: int
    fanout_y: int

    @property
    def fanout(self) -> int:
        return self.fanout_x * self.fanout_y


@dataclass(frozen=True)
class SpatialStage(_FanOut):
    """A Timeloop dummy spatial level folded into a storage level's fan-out (for YAML I/O)."""

    name: str
    fanout_x: int
    fanout_y: int


@dataclass(frozen=True)
class StorageLevel(_FanOut):
    """One storage level (all instances alike).

    Energies are pJ per VECTOR access (`block_size` words), as in Accelergy's ERT. Bandwidths
    are words per cycle per instance (None = unlimited). `capacity_words` is per instance
    (None = unbounded, DRAM).

    `psum_bits`: the width this level stores partial sums at, when the target declares it
    (else the MAC's accumulator width; see `quantloop.problem.Bits.psum`).

    Data-space rules: `must_keep` ⊆ `may_keep`; the mapper chooses the rest of `may_keep`.
    A data space not in `may_keep` is always bypassed.

    Constraints (Timeloop constraint semantics):
      * `spatial_x_factors` / `spatial_y_factors`: fixed spatial factors {dim: f} of this level's
        fan-out along X / Y; f = 1 forbids unrolling that dim on that axis. `spatial_x_dims` /
        `spatial_y_dims` give the dims that remain allowed.
      * `temporal_factors`: fixed temporal factors {dim: f} at this level; f = 1 forbids the dim.
      * `temporal_permutation`: dims listed INNERMOST FIRST (Timeloop's convention); the level's
        temporal loops with factor > 1 must appear in this relative order, inner to outer,
        and listed dims are inside unlisted ones.
      * `max_tile_values`: {data space: n}, a kept tile of that data space holds at most n values
        (a rule of `costmodel.legality.tile_bounds`, like the capacity).
    """

    name: str
    word_bits: int
    capacity_words: int | None
    block_size: int
    cluster_size: int
    instances: int
    fanout_x: int
    fanout_y: int
    may_keep: frozenset[str]
    must_keep: frozenset[str]
    read_energy: float
    write_energy: float
    update_energy: float
    leak_per_cycle: float = 0.0
    read_bandwidth: float | None = None
    write_bandwidth: float | None = None
    shared_bandwidth: float | None = None
    spatial_x_factors: TMapping[str, int] = field(default_factory=dict)
    spatial_y_factors: TMapping[str, int] = field(default_factory=dict)
    temporal_factors: TMapping[str, int] = field(default_factory=dict)
    temporal_permutation: tuple[str, ...] = ()
    spatial_stages: tuple[SpatialStage, ...] = ()
    psum_bits: int | None = None
    area_um2: float | None = None  # one instance; see targets/area.py
    max_tile_values: TMapping[str, int] = field(default_factory=dict)  # {data space: most values per kept tile}

    @property
    def spatial_x_dims(self) -> frozenset[str]:
        return frozenset(d for d in DIMS if self.spatial_x_factors.get(d) != 1)

    @property
    def spatial_y_dims(self) -> frozenset[str]:
        return frozenset(d for d in DIMS if self.spatial_y_factors.get(d) != 1)

    @property
    def capacity_bits(self) -> int | None:
        return None if self.capacity_words is None else self.capacity_words * self.word_bits

    @property
    def clusters(self) -> int:
        return max(1, self.instances // self.cluster_size)


@dataclass(frozen=True)
class ComputeLevel:
    """The MAC array.

    Energy per MAC (pJ) for weight / activation bits w, a (see `mac_energy`):
      * `energy_mode == "fixed"`: `energy` whatever the bits (the quantization fork).
      * `energy_mode == "scaled"` (multiplier MAC):
        `E = energy · (mult_fraction · (w·a)/(ref_weight_bits·ref_input_bits)
                       + (1 − mult_fraction) · acc_bits/ref_acc_bits)`, where acc_bits =
        max(Outputs bits, w + a) — the adder is at least as wide as the product and as the
        stored partial sums — or ref_acc_bits when Outputs bits are not given. At the reference
        widths (8×8, 16-bit partial sums) E equals `energy`.
      * `shift_add_energy` {scheme: pJ} gives the fixed per-MAC energy of shift-add PEs for the
        power-of-two schemes (`pot`, `pot2`), which does not scale with w·a.
    """

    name: str
    instances: int
    energy: float
    ref_weight_bits: int
    ref_input_bits: int
    ref_acc_bits: int
    mult_fraction: float
    energy_mode: str = "scaled"
    shift_add_energy: TMapping[str, float] = field(default_factory=dict)
    leak_per_cycle: float = 0.0
    area_um2: float | None = None  # one MAC; see targets/area.py
    clock_mhz: float | None = None
    pe_type: str | None = None
    schemes: frozenset[str] | None = None  # weight schemes the PEs execute; None: any
    max_weight_bits: int | None = None

    @property
    def executed_schemes(self) -> frozenset[str]:
        """The weight schemes the PEs execute: the declared ones, else every quantization scheme (float
        only where a target declares it: integer PEs do not run float layers)."""
        return self.schemes if self.schemes is not None else frozenset(SCHEMES)

    @property
    def float_only(self) -> bool:
        """The PEs execute float layers only (the `fp32` PE type): a compile leaves every layer in float32."""
        return self.executed_schemes == {FLOAT_SCHEME}

    @property
    def native_scheme(self) -> str:
        """The weight scheme a layer is costed in when none is asked for: int where the PEs execute it, else
        one they do execute (float on fp32 PEs)."""
        schemes = self.executed_schemes
        return "int" if "int" in schemes else min(schemes)

    def unsupported(self, weight_bits: int | None, scheme: str) -> str | None:
        """Why these PEs cannot execute weights of this width and scheme, or None when they can."""
        kind = f"the {self.pe_type} PEs" if self.pe_type else "the PEs"
        schemes = self.executed_schemes
        if scheme not in schemes:
            return f"{kind} execute {'/'.join(sorted(schemes))} weights, not {scheme}"
        if self.max_weight_bits is not None and weight_bits is not None and weight_bits > self.max_weight_bits:
            return f"{kind} execute weights of at most {self.max_weight_bits} bits, not {weight_bits}"
        return None

    def mac_energy(self, weight_bits: int | None, input_bits: int | None, output_bits: int | None,
                   scheme: str = "int") -> float:
        """pJ per MAC for these operand widths (None = the reference width)."""
        if self.energy_mode == "fixed":
            return self.energy
        if scheme in self.shift_add_energy:
            return float(self.shift_add_energy[scheme])
        w = self.ref_weight_bits if weight_bits is None else weight_bits
        a = self.ref_input_bits if input_bits is None else input_bits
        acc = self.ref_acc_bits if output_bits is None else max(output_bits, w + a)
        mult = (w * a) / (self.ref_weight_bits * self.ref_input_bits)
        return self.energy * (self.mult_fraction * mult + (1.0 - self.mult_fraction) * acc / self.ref_acc_bits)


@dataclass(frozen=True)
class Arch:
    """A target: storage levels outer → inner plus the MAC array.

    `levels[i].instances * levels[i].fanout == levels[i + 1].instances` and the innermost
    level's instances × fan-out equal `compute.instances`.
    """

    name: str
    levels: tuple[StorageLevel, ...]
    compute: ComputeLevel
    source: str = ""
    content_hash: str = ""
    description: str = ""

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def pe_count(self) -> int:
        return self.compute.instances

    def level_index(self, name: str) -> int:
        for i, lvl in enumerate(self.levels):
            if lvl.name == name:
                return i
        raise KeyError(name)

    def seconds(self, cycles: float) -> float | None:
        """Cycles → seconds through the array's clock (None when the target declares no clock)."""
        return None if self.compute.clock_mhz is None else cycles / (self.compute.clock_mhz * 1e6)

    def dataspaces_kept_anywhere(self) -> frozenset[str]:
        return frozenset(ds for ds in DATASPACES if any(ds in lvl.may_keep for lvl in self.levels))


Target = Arch
