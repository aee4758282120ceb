"""Target YAML schema (pydantic v2) and its conversion to the normalised `Arch` view.

The schema mirrors Timeloop v0.4 architecture semantics so a Timeloop spec carries over:

* `levels` are storage levels from DRAM inwards. `word_bits` is Timeloop's `datawidth`;
  `width` is the bits of one vector access (default word_bits × cluster_size); `depth` the
  number of vector entries (omit for DRAM = unbounded). As in Timeloop:
  block_size = width / (word_bits × cluster_size) words per vector access and
  capacity = depth × width / word_bits / cluster_size words per instance.
  `capacity_words` may be given instead of `depth`.
* `fanout: {x, y}` is the spatial fan-out from every instance of this level to the next inner
  level (or to the MACs). Timeloop's dummy spatial levels are listed in `fanout.stages` (name and
  the x / y they contribute) only to read and write Timeloop mapping YAML.
* `energy_pj: {read, write, update}` is the energy per VECTOR access (Accelergy ERT); fills use
  `write`. `leak_pj_per_cycle` per instance. `bandwidth: {read, write, shared}` words/cycle per
  instance (omit = unlimited).
* `partial_sum_bits` (optional): the width the level stores partial sums at (Outputs while a
  reduction is still open); by default the MAC's accumulator width max(o, w + a). Where the word
  is no wider than that, one partial sum per word.
* `constraints` follow Timeloop constraint files: `dataspace: {keep, bypass}` (must keep / must
  bypass; the mapper chooses the rest), `spatial_x` / `spatial_y: {factors}` (fixed spatial
  factors; 1 forbids the dim on that axis), `temporal: {factors, permutation}` (permutation lists
  dims innermost first).
* `area_um2` (a level, and `compute`): the area of one instance in µm², as Accelergy's ART
  gives it; `targets/area.py` sums it per level and in total.
* `compute`: the MAC array. Energy per MAC for weight / input / partial-sum widths w, a, o:
  `energy_mode: scaled` (default): E = energy_pj · (multiplier_fraction · (w·a)/(w_ref·a_ref)
  + (1 − multiplier_fraction) · o/acc_ref); `energy_mode: fixed`: E = energy_pj whatever the
  bits (the quantization fork); `shift_add_energy_pj: {pot: e, pot2: e}`: shift-add PEs
  (QUIDAM LightPE-1/-2) used for those weight schemes, whose energy does not scale with w·a.
  `schemes` lists the weight schemes the PEs execute (default: int, pot, pot2); `float` PEs
  (`schemes: [float]`) run layers left in float32, 32 bits per value.
  The default multiplier_fraction 0.8 comes from Horowitz (ISSCC 2014, 45 nm): an 8-bit
  multiply costs ≈0.2 pJ and a 16-bit add ≈0.05 pJ; Accelergy's ERT for `intmac`
  (aladdin_multiplier + aladdin_adder) only reports the compound energy, so the split cannot be
  read from the reference files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantloop.problem import DATASPACES, DIMS
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch, ComputeLevel, SpatialStage, StorageLevel

DataSpace = Literal["Weights", "Inputs", "Outputs"]
Dim = Literal["N", "G", "C", "M", "P", "Q", "R", "S"]


#: Bounds that keep every derived number (capacities, instance counts, access counts) exact in int64 and
#: within OR-Tools' integer range; far beyond any real design.
MAX_WORD_BITS = 4096
MAX_COUNT = 1 << 20  # fan-outs, stages, cluster sizes
MAX_DEPTH = 1 << 40
MAX_PJ = 1e9  # per access or per cycle: finite, and no sum of them can overflow to infinity
MAX_AREA_UM2 = 1e12  # one instance (a square metre); totals stay finite
MIN_BANDWIDTH = 1e-6  # words per cycle: cycle counts stay finite
Factor = Annotated[int, Field(ge=1, le=(1 << 31) - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Energy(_Strict):
    """pJ per vector access."""

    read: float = Field(ge=0, le=MAX_PJ)
    write: float = Field(ge=0, le=MAX_PJ)
    update: float | None = Field(default=None, ge=0, le=MAX_PJ, description="defaults to write")


class Bandwidth(_Strict):
    """Words per cycle per instance; omitted = unlimited."""

    read: float | None = Field(default=None, ge=MIN_BANDWIDTH, le=MAX_COUNT)
    write: float | None = Field(default=None, ge=MIN_BANDWIDTH, le=MAX_COUNT)
    shared: float | None = Field(default=None, ge=MIN_BANDWIDTH, le=MAX_COUNT)


class Stage(_Strict):
    name: str
    x: int = Field(default=1, ge=1, le=MAX_COUNT)
    y: int = Field(default=1, ge=1, le=MAX_COUNT)


class Fanout(_Strict):
    x: int = Field(default=1, ge=1, le=MAX_COUNT)
    y: int = Field(default=1, ge=1, le=MAX_COUNT)
    stages: list[Stage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _stages_multiply(self) -> "Fanout":
        if self.stages:
            sx = sy = 1
            for s in self.stages:
                sx *= s.x
                sy *= s.y
            if (sx, sy) != (self.x, self.y):
                raise ValueError(f"stages multiply to x={sx}, y={sy} but the fan-out is x={self.x}, y={self.y}")
        return self


class DataspaceConstraint(_Strict):
    keep: list[DataSpace] = Field(default_factory=list)
    bypass: list[DataSpace] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> "DataspaceConstraint":
        both = set(self.keep) & set(self.bypass)
        if both:
            raise ValueError(f"data spaces both kept and bypassed: {sorted(both)}")
        return self


class SpatialConstraint(_Strict):
    factors: dict[Dim, Factor] = Field(default_factory=dict)


class TemporalConstraint(_Strict):
    factors: dict[Dim, Factor] = Field(default_factory=dict)
    permutation: list[Dim] = Field(default_factory=list, description="innermost first")

    @model_validator(mode="after")
    def _distinct(self) -> "TemporalConstraint":
        twice = sorted({d for d in self.permutation if self.permutation.count(d) > 1})
        if twice:
            raise ValueError(f"permutation names {', '.join(twice)} more than once")
        return self


class Constraints(_Strict):
    dataspace: DataspaceConstraint = Field(default_factory=DataspaceConstraint)
    spatial_x: SpatialConstraint = Field(default_factory=SpatialConstraint)
    spatial_y: SpatialConstraint = Field(default_factory=SpatialConstraint)
    temporal: TemporalConstraint = Field(default_factory=TemporalConstraint)
    max_tile_values: dict[Literal["Weights", "Inputs", "Outputs"], int] = Field(
        default_factory=dict, description="at most this many values of a data space per tile (when kept)")

    @model_validator(mode="after")
    def _positive_tiles(self) -> "Constraints":
        for ds, limit in self.max_tile_values.items():
            if limit < 1:
                raise ValueError(f"max_tile_values: {ds} must be at least 1, got {limit}")
        return self


class Level(_Strict):
    name: str
    word_bits: int = Field(ge=1, le=MAX_WORD_BITS)
    width: int | None = Field(default=None, ge=1, le=MAX_WORD_BITS * MAX_COUNT, description="bits per vector access")
    depth: int | None = Field(default=None, ge=1, le=MAX_DEPTH)
    capacity_words: int | None = Field(default=None, ge=1, le=MAX_DEPTH)
    cluster_size: int = Field(default=1, ge=1, le=MAX_COUNT)
    fanout: Fanout = Field(default_factory=Fanout)
    energy_pj: Energy
    leak_pj_per_cycle: float = Field(default=0.0, ge=0, le=MAX_PJ)
    bandwidth: Bandwidth = Field(default_factory=Bandwidth)
    constraints: Constraints = Field(default_factory=Constraints)
    partial_sum_bits: int | None = Field(
        default=None, ge=1, le=MAX_WORD_BITS, description="width of stored partial sums (default: the MAC's max(o, w + a))")
    area_um2: float | None = Field(default=None, ge=0, le=MAX_AREA_UM2,
                                   description="area of ONE instance in µm² (Accelergy ART)")

    @model_validator(mode="after")
    def _geometry(self) -> "Level":
        if self.depth is not None and self.capacity_words is not None:
            raise ValueError("give depth or capacity_words, not both")
        width = self.width if self.width is not None else self.word_bits * self.cluster_size
        per_access = self.word_bits * self.cluster_size
        if width < per_access:
            raise ValueError(
                f"level too small to hold anything: width {width} bits is less than one word per cluster member "
                f"(word_bits × cluster_size = {per_access})"
            )
        if width % per_access:
            raise ValueError(f"width {width} is not a multiple of word_bits × cluster_size = {per_access}")
        words = self.capacity_words if self.capacity_words is not None else (
            None if self.depth is None else self.depth * width // per_access)
        must = len(self.constraints.dataspace.keep)
        if words is not None and words < max(1, must):
            raise ValueError(
                f"level too small to hold anything: {words} words per instance but it must keep {must} data spaces"
            )
        return self


class ReferenceBits(_Strict):
    weights: int = Field(default=8, ge=1, le=64)
    inputs: int = Field(default=8, ge=1, le=64)
    accumulator: int = Field(default=16, ge=1, le=128)


class Compute(_Strict):
    name: str = "mac"
    energy_pj: float = Field(ge=0, le=MAX_PJ, description="energy per MAC at the reference bits")
    reference_bits: ReferenceBits = Field(default_factory=ReferenceBits)
    multiplier_fraction: float = Field(default=0.8, ge=0, le=1)
    energy_mode: Literal["scaled", "fixed"] = "scaled"
    shift_add_energy_pj: dict[Literal["pot", "pot2"], Annotated[float, Field(ge=0, le=MAX_PJ)]] = Field(
        default_factory=dict)
    leak_pj_per_cycle: float = Field(default=0.0, ge=0, le=MAX_PJ)
    area_um2: float | None = Field(default=None, ge=0, le=MAX_AREA_UM2, description="area of ONE MAC in µm² (Accelergy ART)")
    clock_mhz: float | None = Field(default=None, ge=1e-3, le=1e6, description="clock of the array; cycles -> seconds")
    pe_type: str | None = Field(default=None, description="the PE type chosen from the file's pe_types")
    schemes: list[Literal["int", "pot", "pot2", "float"]] | None = Field(
        default=None, min_length=1,
        description="weight schemes the PEs execute (None: any quantized one; float only when listed)")
    max_weight_bits: int | None = Field(default=None, ge=1, le=64, description="widest weight the PEs execute")


class TargetSpec(_Strict):
    """A target YAML file."""

    name: str
    description: str = ""
    levels: list[Level] = Field(min_length=1)
    compute: Compute

    @model_validator(mode="after")
    def _unique_names(self) -> "TargetSpec":
        names = [lvl.name for lvl in self.levels]
        if len(names) != len(set(names)):
            raise ValueError(f"level names must be unique, got {names}")
        if self.levels[0].constraints.dataspace.bypass:
            raise ValueError(f"the outermost level {names[0]} must be able to keep every data space")
        return self


def _format_error(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "<root>"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key (misspelled?)"
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif e["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    return f"{source}: {loc}: {msg}"


def parse_spec(data: object, source: str) -> TargetSpec:
    try:
        return TargetSpec.model_validate(data)
    except ValidationError as err:
        raise QuantloopError(_format_error(source, err)) from None


def load_spec_file(path: str | Path, parameters: Mapping[str, str] | None = None) -> TargetSpec:
    """A target file as a spec; `parameters` (texts) set a parameterised file's parameters
    (`targets/template.py`), and an error then names the spec with its parameters."""
    from quantloop.files import load_yaml
    from quantloop.targets.template import canonical_query, resolve

    source = f"{path}?{canonical_query(parameters)}" if parameters else str(path)
    spec = parse_spec(resolve(load_yaml(path, "target file"), parameters or {}, source), source)
    if parameters:
        spec = spec.model_copy(update={"name": f"{spec.name}?{canonical_query(parameters)}"})
    return spec


def content_hash(spec: TargetSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_arch(spec: TargetSpec, source: str = "") -> Arch:
    """Build the normalised view (derived instances, block sizes, capacities in words)."""
    levels = []
    instances = 1
    for lvl in spec.levels:
        width = lvl.width if lvl.width is not None else lvl.word_bits * lvl.cluster_size
        block = width // (lvl.word_bits * lvl.cluster_size)
        if lvl.capacity_words is not None:
            cap = lvl.capacity_words
        elif lvl.depth is not None:
            cap = lvl.depth * width // lvl.word_bits // lvl.cluster_size
        else:
            cap = None
        dsc = lvl.constraints.dataspace
        stages = tuple(SpatialStage(s.name, s.x, s.y) for s in lvl.fanout.stages)
        levels.append(
            StorageLevel(
                name=lvl.name, word_bits=lvl.word_bits, capacity_words=cap, block_size=block,
                cluster_size=lvl.cluster_size, instances=instances, fanout_x=lvl.fanout.x,
                fanout_y=lvl.fanout.y,
                may_keep=frozenset(ds for ds in DATASPACES if ds not in dsc.bypass),
                must_keep=frozenset(dsc.keep) if levels else frozenset(DATASPACES),
                read_energy=lvl.energy_pj.read, write_energy=lvl.energy_pj.write,
                update_energy=lvl.energy_pj.write if lvl.energy_pj.update is None else lvl.energy_pj.update,
                leak_per_cycle=lvl.leak_pj_per_cycle, read_bandwidth=lvl.bandwidth.read,
                write_bandwidth=lvl.bandwidth.write, shared_bandwidth=lvl.bandwidth.shared,
                spatial_x_factors=dict(lvl.constraints.spatial_x.factors),
                spatial_y_factors=dict(lvl.constraints.spatial_y.factors),
                temporal_factors=dict(lvl.constraints.temporal.factors),
                temporal_permutation=tuple(lvl.constraints.temporal.permutation),
                spatial_stages=stages, psum_bits=lvl.partial_sum_bits, area_um2=lvl.area_um2,
                max_tile_values=dict(lvl.constraints.max_tile_values),
            )
        )
        instances *= lvl.fanout.x * lvl.fanout.y
    c = spec.compute
    compute = ComputeLevel(
        name=c.name, instances=instances, energy=c.energy_pj, ref_weight_bits=c.reference_bits.weights,
        ref_input_bits=c.reference_bits.inputs, ref_acc_bits=c.reference_bits.accumulator,
        mult_fraction=c.multiplier_fraction, energy_mode=c.energy_mode,
        shift_add_energy=dict(c.shift_add_energy_pj), leak_per_cycle=c.leak_pj_per_cycle, area_um2=c.area_um2,
        clock_mhz=c.clock_mhz, pe_type=c.pe_type, schemes=None if c.schemes is None else frozenset(c.schemes),
        max_weight_bits=c.max_weight_bits,
    )
    return Arch(name=spec.name, levels=tuple(levels), compute=compute, source=source,
                content_hash=content_hash(spec), description=spec.description)


def load_arch_file(path: str | Path, source: str | None = None, parameters: Mapping[str, str] | None = None) -> Arch:
    return to_arch(load_spec_file(path, parameters), source or str(path))


__all__ = ["TargetSpec", "parse_spec", "load_spec_file", "to_arch", "load_arch_file", "content_hash", "DIMS"]
