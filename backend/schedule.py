"""``schedule.json`` (validated by ``schedule.schema.json``) and ``schedule.txt``.

Per layer: the canonical problem, bits/scheme/signedness of each data space, the mapping per storage level
(temporal loops outer→inner, spatial X/Y fan-out below the level, kept data spaces), the tile each level
holds per kept data space (values, packed words, bits) and the level's buffer use in bits, and the cost
(energy per level and data space, MAC energy, leakage, cycles, utilization). Network totals are the sums
over layers (layers run one after another, so cycles add up too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from quantloop.version import __version__
from quantloop.backend.layers import LayerRecord, tile_sizes
from quantloop.problem import DATASPACES, DIMS, STRIDES
from quantloop.costmodel.timeloop_yaml import format_map_txt
from quantloop.targets.arch import Arch

SCHEDULE_VERSION = 1


def load_schema() -> dict:
    return json.loads(resources.files("quantloop.backend").joinpath("schedule.schema.json").read_text())


def target_summary(target: Arch) -> dict:
    return {
        "name": target.name,
        "content_hash": target.content_hash,
        "mac_instances": target.compute.instances,
        "levels": [
            {
                "name": lvl.name,
                "word_bits": lvl.word_bits,
                "capacity_words": lvl.capacity_words,
                "instances": lvl.instances,
                "fanout_x": lvl.fanout_x,
                "fanout_y": lvl.fanout_y,
            }
            for lvl in target.levels
        ],
    }


def _mapping_levels(record: LayerRecord, target: Arch) -> list[dict]:
    tiles = tile_sizes(record.problem, record.mapping)
    stats = {(s.level, s.dataspace): s for s in record.cost.per_level}
    out = []
    for l, (lvl, lm) in enumerate(zip(target.levels, record.mapping.levels)):
        level_tiles = {}
        for ds in lm.kept:
            s = stats[(lvl.name, ds)]
            level_tiles[ds] = {
                "values": tiles[l][ds],
                "words": s.utilized_capacity_words,
                "bits": s.utilized_capacity_bits,
                "values_per_word": s.values_per_word,
            }
        out.append(
            {
                "level": lvl.name,
                **lm.to_json(),
                "tiles": level_tiles,
                "buffer_bits": sum(t["bits"] for t in level_tiles.values()),
                "capacity_bits": lvl.capacity_bits,
                "word_bits": lvl.word_bits,
            }
        )
    return out


def _cost(record: LayerRecord) -> dict:
    c = record.cost
    return {
        "energy_pj": c.total_energy_pj,
        "cycles": c.cycles,
        "compute_cycles": c.compute_cycles,
        "utilization": c.utilization,
        "macs": c.macs,
        "mac_energy_pj": c.mac_energy_pj,
        "leakage_pj": dict(c.leakage_pj),
        "per_level": [s.to_json(capacity=False) for s in c.per_level],
        "optimal": record.optimal,
        "mappings_considered": record.mappings_considered,
    }


def layer_entry(record: LayerRecord, target: Arch, timeloop_folder: str) -> dict:
    p = record.problem
    return {
        "name": record.name,
        "kind": record.kind,
        "timeloop": f"timeloop/{timeloop_folder}",
        "problem": {**{d: int(getattr(p, d)) for d in DIMS}, **{k: int(getattr(p, k)) for k in STRIDES}},
        "bits": {
            ds: {"bits": o.bits, "scheme": o.scheme, "signed": o.signed} for ds, o in record.operands.items()
        },
        "mapping": _mapping_levels(record, target),
        "cost": _cost(record),
    }


def energy_breakdown(record: LayerRecord) -> dict[str, dict[str, float]]:
    """pJ per level and data space (leakage under "leakage", MACs under level "MAC", data space "compute")."""
    out: dict[str, dict[str, float]] = {}
    for s in record.cost.per_level:
        out.setdefault(s.level, {})[s.dataspace] = s.energy_pj
    for level, pj in record.cost.leakage_pj.items():
        if pj:
            out.setdefault(level, {})["leakage"] = pj
    out["MAC"] = {"compute": record.cost.mac_energy_pj}
    return out


def build_schedule(
    records: Sequence[LayerRecord], target: Arch, host_ops: list[dict], command_line: str, folders: dict[str, str]
) -> dict:
    layers = [layer_entry(r, target, folders[r.name]) for r in records]
    by_level: dict[str, float] = {}
    by_dataspace: dict[str, float] = {}
    for r in records:
        for level, parts in energy_breakdown(r).items():
            for ds, pj in parts.items():
                by_level[level] = by_level.get(level, 0.0) + pj
                by_dataspace[ds] = by_dataspace.get(ds, 0.0) + pj
    return {
        "version": SCHEDULE_VERSION,
        "quantloop_version": __version__,
        "command_line": command_line,
        "target": target_summary(target),
        "layers": layers,
        "host_ops": host_ops,
        "totals": {
            "energy_pj": sum(r.cost.total_energy_pj for r in records),
            "cycles": sum(r.cost.cycles for r in records),
            "macs": sum(r.cost.macs for r in records),
            "mac_energy_pj": sum(r.cost.mac_energy_pj for r in records),
            "energy_by_level_pj": by_level,
            "energy_by_dataspace_pj": by_dataspace,
        },
    }


def write_schedule_json(out_dir: Path, schedule: dict) -> Path:
    path = Path(out_dir) / "schedule.json"
    path.write_text(json.dumps(schedule, indent=1))
    return path


def _bits_text(record: LayerRecord) -> str:
    parts = []
    for ds in DATASPACES:
        o = record.operands[ds]
        kind = o.scheme if o.scheme != "int" else ("int" if o.signed else "uint")
        parts.append(f"{ds} {o.bits}-bit {kind}")
    return ", ".join(parts)


def format_schedule_txt(records: Sequence[LayerRecord], target: Arch, command_line: str) -> str:
    """One block per layer: header with problem, bits, energy and cycles, then the loop nest.

    Energies are in uJ throughout (the total and every layer), per MAC in pJ."""
    total_e = sum(r.cost.total_energy_pj for r in records)
    total_c = sum(r.cost.cycles for r in records)
    lines = [
        f"quantloop {__version__} schedule for target {target.name} ({target.content_hash[:12]})",
        f"command: {command_line}",
        f"{len(records)} layers, total energy {total_e / 1e6:.4f} uJ, {total_c} cycles",
        "",
    ]
    for r in records:
        p = r.problem
        dims = " ".join(f"{d}={getattr(p, d)}" for d in DIMS)
        strides = f"stride {p.Hstride}x{p.Wstride}, dilation {p.Hdilation}x{p.Wdilation}"
        c = r.cost
        title = f"=== layer {r.name} ({r.kind}) "
        lines += [
            title + "=" * max(3, 78 - len(title)),
            f"problem: {dims}; {strides}; {c.macs} MACs",
            f"bits: {_bits_text(r)}",
            f"energy {c.total_energy_pj / 1e6:.6g} uJ ({c.total_energy_pj / c.macs:.4g} pJ/MAC), {c.cycles} cycles, "
            f"utilization {c.utilization:.1%}"
            + ("" if r.optimal is None else f", {'proven optimal' if r.optimal else 'best found'}"),
            "",
            format_map_txt(target, r.mapping, r.problem).rstrip(),
            "",
        ]
    return "\n".join(lines) + "\n"


def write_schedule_txt(out_dir: Path, records: Sequence[LayerRecord], target: Arch, command_line: str) -> Path:
    path = Path(out_dir) / "schedule.txt"
    path.write_text(format_schedule_txt(records, target, command_line))
    return path
