"""A target written as the inputs stock `timeloop-model` reads: architecture, ERT and ART.

The architecture is in the flattened v0.3-style form Timeloop itself parses (what Timeloop's
Python front end makes of a v0.4 `arch.yaml`): one `local` list, outer level first, each level
named `name[1..instances]` with `meshX` / `meshY` giving how its instances are laid out, the
dummy spatial stages as `dummy_storage` levels, and the MACs last. Energies go in an ERT (pJ
per vector access, as Accelergy writes it), areas in an ART.

Stock Timeloop stores one value per word at every level. `emulated_words` makes it see our bit
packing: a level whose kept data spaces all pack `k` values per word is written with a word of
`⌊word_bits / k⌋` bits and `k` times the words per vector access, capacity and bandwidth, so its
vector accesses, capacity check and bandwidth cycles come out exactly as quantloop counts them
(Timeloop's counts are then in values). A level whose kept data spaces pack differently cannot
be expressed; it is written as it is and named in `Emulation.mixed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantloop.problem import DATASPACES
from quantloop.targets.arch import Arch, StorageLevel

TOP = "system_top_level"


@dataclass(frozen=True)
class Emulation:
    """Per storage level: values per word Timeloop is made to see (1 = the level as declared),
    and the levels whose kept data spaces pack differently (not expressible in stock Timeloop)."""

    values_per_word: tuple[int, ...]
    mixed: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return not self.mixed


def emulated_words(arch: Arch, values_per_word: np.ndarray, keep: np.ndarray) -> Emulation:
    """`values_per_word[L, 3]` and `keep[L, 3]` of one evaluated mapping (`BatchResult` rows)."""
    per_level, mixed = [], []
    for l, lvl in enumerate(arch.levels):
        kinds = {int(values_per_word[l, k]) for k in range(len(DATASPACES)) if keep[l, k]}
        if len(kinds) > 1:
            mixed.append(lvl.name)
            per_level.append(1)
        else:
            per_level.append(kinds.pop() if kinds else 1)
    return Emulation(tuple(per_level), tuple(mixed))


def _instances_and_mesh(arch: Arch):
    """(name, instances, meshX, meshY, storage level or None) for every Timeloop level, outer first."""
    out = []
    mx = my = 1
    for lvl in arch.levels:
        out.append((lvl.name, mx * my, mx, my, lvl))
        stage_x, stage_y = mx, my
        for st in lvl.spatial_stages:
            out.append((st.name, stage_x * stage_y, stage_x, stage_y, None))
            stage_x, stage_y = stage_x * st.fanout_x, stage_y * st.fanout_y
        mx, my = mx * lvl.fanout_x, my * lvl.fanout_y
    return out, mx, my


def _storage_attributes(lvl: StorageLevel, opw: int, mx: int, my: int) -> dict:
    datawidth = lvl.word_bits // opw if opw > 1 else lvl.word_bits
    block = lvl.block_size * opw
    attrs: dict = {
        "datawidth": datawidth,
        "width": block * datawidth * lvl.cluster_size,
        "cluster_size": lvl.cluster_size,
        "multiple_buffering": 1,
        "meshX": mx,
        "meshY": my,
    }
    if lvl.capacity_words is not None:
        # depth × width / datawidth / cluster_size = capacity_words × opw values
        attrs["depth"] = lvl.capacity_words // lvl.block_size
    for key, bw in (("read_bandwidth", lvl.read_bandwidth), ("write_bandwidth", lvl.write_bandwidth),
                    ("shared_bandwidth", lvl.shared_bandwidth)):
        if bw:
            attrs[key] = bw * opw
    return attrs


def architecture(arch: Arch, emulation: Emulation | None = None) -> dict:
    """The `architecture:` document of `arch` (with bit packing emulated when given)."""
    opw = emulation.values_per_word if emulation is not None else (1,) * arch.num_levels
    levels, mx, my = _instances_and_mesh(arch)
    local = []
    for name, n, x, y, lvl in levels:
        if lvl is None:
            local.append({"name": f"{name}[1..{n}]", "class": "dummy_storage",
                          "attributes": {"width": 1, "depth": 1, "datawidth": 1, "meshX": x, "meshY": y}})
        else:
            level_class = "DRAM" if lvl.capacity_words is None else "storage"
            local.append({"name": f"{name}[1..{n}]", "class": level_class,
                          "attributes": _storage_attributes(lvl, opw[arch.levels.index(lvl)], x, y)})
    c = arch.compute
    local.append({"name": f"{c.name}[1..{c.instances}]", "class": "intmac",
                  "attributes": {"datawidth": c.ref_weight_bits, "meshX": mx, "meshY": my}})
    return {"architecture": {"version": "0.4", "subtree": [{"name": TOP, "attributes": {"version": "0.4"},
                                                            "local": local}]}}


def energy_reference_table(arch: Arch, mac_energy_pj: float) -> dict:
    """The `ERT:` document: pJ per vector access of every storage level, pJ per MAC (at the layer's bits)."""
    levels, _, _ = _instances_and_mesh(arch)
    tables = []
    for name, n, _, _, lvl in levels:
        if lvl is None:
            continue
        actions = [("read", lvl.read_energy), ("write", lvl.write_energy), ("update", lvl.update_energy),
                   ("leak", lvl.leak_per_cycle)]
        tables.append({"name": f"{TOP}.{name}[1..{n}]",
                       "actions": [{"name": a, "arguments": {}, "energy": float(e)} for a, e in actions]})
    c = arch.compute
    tables.append({"name": f"{TOP}.{c.name}[1..{c.instances}]",
                   "actions": [{"name": "compute", "arguments": {}, "energy": float(mac_energy_pj)},
                               {"name": "leak", "arguments": {}, "energy": float(c.leak_per_cycle)}]})
    return {"ERT": {"version": "0.4", "tables": tables}}


def area_reference_table(arch: Arch) -> dict:
    """The `ART:` document (µm² per instance; 0 where the target declares no area)."""
    levels, _, _ = _instances_and_mesh(arch)
    tables = [{"name": f"{TOP}.{name}[1..{n}]", "area": float(getattr(lvl, "area_um2", 0.0) or 0.0)}
              for name, n, _, _, lvl in levels if lvl is not None]
    c = arch.compute
    tables.append({"name": f"{TOP}.{c.name}[1..{c.instances}]", "area": float(getattr(c, "area_um2", 0.0) or 0.0)})
    return {"ART": {"version": "0.4", "tables": tables}}


#: what timeloop-model is given as constraints: none (constraints only restrict a search, never a cost)
EMPTY_CONSTRAINTS = {"architecture_constraints": {"targets": []}}
