"""Timeloop v0.4 problem and mapping YAML, read and written.

Problem: `problem.instance` with the 8 conv dims (G optional, default 1), strides, dilations, and
the quantization fork's `bitwidths` (aliases `datawidths`, `wordwidths`; `commonBitwidth`).
Mapping: a list of `{target, type: temporal | spatial | datatype | bypass, factors, permutation,
split, keep, bypass}`. `permutation` lists dims INNERMOST first; in a spatial entry the first
`split` dims of the permutation are spatial-X and the rest spatial-Y. Entries that target one
of a level's `spatial_stages` (Timeloop's dummy levels such as inter_PE_spatial) are folded into
that storage level's fan-out.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from quantloop.mapping import LevelMapping, Mapping
from quantloop.problem import DATASPACES, DIMS, MAX_DIM, SHAPE_KEYS, STRIDES, Bits, Problem, prime_factors
from quantloop.errors import QuantloopError
from quantloop.targets.arch import Arch

_TIMELOOP_DIM_ORDER = "CMRSNPQG"
_BITS_KEYS = ("bitwidths", "datawidths", "wordwidths")
#: libyaml's emitter when PyYAML was built with it (several times faster; same text as the pure-Python one)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: object) -> str:
    """YAML text of `data` in insertion order, by libyaml when available (the one YAML writer of Timeloop files)."""
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False)


def _load_yaml(path: str | Path) -> object:
    from quantloop.files import load_yaml

    return load_yaml(path, "YAML file")


# ---------------------------------------------------------------- problem


def problem_from_dict(data: dict, source: str = "problem") -> tuple[Problem, Bits | None]:
    """(Problem, Bits from the fork's bitwidths or None when the file has none)."""
    if not isinstance(data, dict) or not isinstance(data.get("problem"), dict):
        raise QuantloopError(f"{source}: expected a top-level `problem:` mapping")
    inst = data["problem"].get("instance")
    if not isinstance(inst, dict):
        raise QuantloopError(f"{source}: problem.instance is missing")
    values: dict = {}
    for key in SHAPE_KEYS:
        v = inst.get(key, 1 if key in ("G", "N") + STRIDES else None)
        if v is None:
            raise QuantloopError(f"{source}: problem.instance.{key} is missing")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise QuantloopError(f"{source}: problem.instance.{key}: expected a positive integer, got {v!r}")
        values[key] = v
    name = data["problem"].get("shape", {}).get("name", "") if isinstance(data["problem"].get("shape"), dict) else ""
    try:
        return _problem_and_bits(values, inst, name or Path(source).parent.name, source)
    except QuantloopError as err:
        raise QuantloopError(f"{source}: {err}" if source not in str(err) else str(err)) from None


def _problem_and_bits(values: dict, inst: dict, name: str, source: str) -> tuple[Problem, Bits | None]:
    problem = Problem(**values, name=name)
    bits = None
    for key in _BITS_KEYS:
        if key in inst:
            table = inst[key]
            if not isinstance(table, dict) or set(table) - set(DATASPACES):
                raise QuantloopError(f"{source}: problem.instance.{key}: expected {{Weights, Inputs, Outputs}} integers")
            bits = Bits(weights=table.get("Weights"), inputs=table.get("Inputs"), outputs=table.get("Outputs"))
    if "commonBitwidth" in inst:
        b = inst["commonBitwidth"]
        bits = Bits(weights=b, inputs=b, outputs=b)
    return problem, bits


def read_problem(path: str | Path) -> tuple[Problem, Bits | None]:
    return problem_from_dict(_load_yaml(path), str(path))


def problem_to_dict(problem: Problem, bits: Bits | None = None) -> dict:
    inst = {d: getattr(problem, d) for d in DIMS}
    inst.update(Wstride=problem.Wstride, Hstride=problem.Hstride, Wdilation=problem.Wdilation,
                Hdilation=problem.Hdilation)
    if bits is not None and any(b is not None for b in bits.as_tuple()):
        inst["bitwidths"] = {ds: b for ds, b in zip(DATASPACES, bits.as_tuple()) if b is not None}
    projection = {
        "Weights": [[["C"]], [["M"]], [["R"]], [["S"]], [["G"]]],
        "Inputs": [[["N"]], [["C"]], [["R", "Wdilation"], ["P", "Wstride"]], [["S", "Hdilation"], ["Q", "Hstride"]], [["G"]]],
        "Outputs": [[["N"]], [["M"]], [["Q"]], [["P"]], [["G"]]],
    }
    return {
        "problem": {
            "version": "0.4",
            "instance": inst,
            "shape": {
                "name": problem.name,
                "coefficients": [{"name": c, "default": 1} for c in STRIDES],
                "data_spaces": [
                    {"name": ds, "projection": projection[ds], **({"read_write": True} if ds == "Outputs" else {})}
                    for ds in DATASPACES
                ],
                "dimensions": list(_TIMELOOP_DIM_ORDER),
            },
        }
    }


def write_problem(path: str | Path, problem: Problem, bits: Bits | None = None) -> None:
    Path(path).write_text(dump_yaml(problem_to_dict(problem, bits)))


# ---------------------------------------------------------------- mapping


def _factor(d: object, f: object, source: str) -> tuple[str, int]:
    if d not in DIMS:
        raise QuantloopError(f"{source}: unknown dim {d!r} in factors")
    if isinstance(f, str) and f.isdigit():
        f = int(f)
    if not isinstance(f, int) or isinstance(f, bool) or not 1 <= f <= MAX_DIM:
        raise QuantloopError(f"{source}: factor of {d} must be an integer from 1 to {MAX_DIM}, got {f!r}")
    return str(d), f


def _parse_factors(value, source: str) -> dict[str, int]:
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (str, list)):
        tokens = value.split() if isinstance(value, str) else [str(tok).replace("=", "") for tok in value]
        items = []
        for tok in tokens:
            if len(tok) < 2 or not tok[1:].isdigit():
                raise QuantloopError(f"{source}: bad factor {tok!r} (expected e.g. C16)")
            items.append((tok[0], tok[1:]))
    else:
        raise QuantloopError(f"{source}: factors must be a string like 'C16 M1 ...'")
    out = {}
    for d, f in items:
        d, f = _factor(d, f, source)
        if d in out:
            raise QuantloopError(f"{source}: dim {d} appears twice in factors")
        out[d] = f
    return out


def _parse_permutation(value, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (str, list)):
        raise QuantloopError(f"{source}: permutation must be a string like 'CMPQ', got {value!r}")
    perm = list(value)
    for d in perm:
        if d not in DIMS:
            raise QuantloopError(f"{source}: unknown dim {d!r} in permutation")
    if len(set(perm)) != len(perm):
        raise QuantloopError(f"{source}: permutation {''.join(perm)!r} names a dim twice")
    return perm


def _dataspace_list(entry: dict, key: str, source: str) -> set[str]:
    value = entry.get(key)
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(ds, str) for ds in value):
        raise QuantloopError(f"{source}: {key} must be a list of data spaces, got {value!r}")
    return set(value)


def _resolve(arch: Arch, target: str, source: str) -> tuple[int, bool]:
    for i, lvl in enumerate(arch.levels):
        if lvl.name == target:
            return i, False
        if any(s.name == target for s in lvl.spatial_stages):
            return i, True
    raise QuantloopError(f"{source}: unknown level {target!r} for target {arch.name}")


def mapping_from_list(arch: Arch, entries: list, source: str = "mapping") -> Mapping:
    """A `Mapping` from Timeloop's `mapping:` list (datatype / bypass, temporal and spatial directives)."""
    if isinstance(entries, dict) and "mapping" in entries:
        entries = entries["mapping"]
    if not isinstance(entries, list):
        raise QuantloopError(f"{source}: expected a `mapping:` list")
    L = arch.num_levels
    temporal: list[list] = [[] for _ in range(L)]
    sx: list[dict] = [{} for _ in range(L)]
    sy: list[dict] = [{} for _ in range(L)]
    keep: list[set | None] = [None] * L
    for n, e in enumerate(entries):
        where = f"{source}: mapping[{n}]"
        if not isinstance(e, dict) or "target" not in e or "type" not in e:
            raise QuantloopError(f"{where}: each entry needs `target` and `type`")
        if not isinstance(e["target"], str):
            raise QuantloopError(f"{where}: target must be a level name, got {e['target']!r}")
        idx, dummy = _resolve(arch, e["target"], where)
        kind = e["type"]
        if kind in ("datatype", "bypass"):
            keep[idx] = _keep_entry(e, where, dummy, keep[idx], arch.levels[idx].may_keep)
        elif kind == "temporal":
            active = _temporal_entry(e, where, dummy)
            if not dummy:
                temporal[idx] = active
        elif kind == "spatial":
            _spatial_entry(e, where, sx[idx], sy[idx])
        else:
            raise QuantloopError(f"{where}: unknown type {kind!r} (expected temporal, spatial, datatype or bypass)")
    levels = []
    for i in range(L):
        k = keep[i] if keep[i] is not None else set(arch.levels[i].may_keep)
        levels.append(LevelMapping(tuple(temporal[i]), tuple(sx[i].items()), tuple(sy[i].items()), frozenset(k)))
    return Mapping(tuple(levels))


def _keep_entry(e: dict, where: str, dummy: bool, keep: set | None, may_keep: frozenset[str]) -> set | None:
    """The level's keep set after one datatype / bypass entry (None: not yet stated, the level's may-keep)."""
    if dummy:
        if e.get("keep"):
            raise QuantloopError(f"{where}: the spatial level {e['target']} cannot keep data")
        return keep
    kept, bypassed = _dataspace_list(e, "keep", where), _dataspace_list(e, "bypass", where)
    if e["type"] == "datatype" and not kept and not bypassed:
        return keep
    bad = (kept | bypassed) - set(DATASPACES)
    if bad:
        raise QuantloopError(f"{where}: unknown data spaces {sorted(bad)}")
    return ((set(may_keep) if keep is None else keep) | kept) - bypassed


def _temporal_entry(e: dict, where: str, dummy: bool) -> list[tuple[str, int]]:
    """The loops (outer → inner, factors > 1) of one temporal entry; none may sit at a spatial-only level."""
    factors = _parse_factors(e.get("factors", ""), where)
    perm = _parse_permutation(e.get("permutation", ""), where)
    loops = [d for d in DIMS if d not in perm and factors.get(d, 1) > 1] + list(reversed(perm))
    active = [(d, factors.get(d, 1)) for d in loops if factors.get(d, 1) > 1]
    if dummy and active:
        raise QuantloopError(f"{where}: temporal loops {active} at the spatial-only level {e['target']}")
    return active


def _spatial_entry(e: dict, where: str, sx: dict, sy: dict) -> None:
    """Adds one spatial entry's factors to the level's X (`split` first dims of the permutation) and Y tables."""
    factors = _parse_factors(e.get("factors", ""), where)
    perm = _parse_permutation(e.get("permutation", ""), where)
    perm += [d for d in DIMS if d not in perm]
    split = e.get("split", len(perm))
    if not isinstance(split, int) or isinstance(split, bool) or not 0 <= split <= len(perm):
        raise QuantloopError(f"{where}: split must be an integer from 0 to {len(perm)}, got {split!r}")
    # permutation is innermost first; keep our loops outer → inner
    for table, dims in ((sx, perm[:split]), (sy, perm[split:])):
        for d in reversed(dims):
            f = factors.get(d, 1)
            if f > 1:
                table[d] = table.get(d, 1) * f


def read_mapping(path: str | Path, arch: Arch) -> Mapping:
    return mapping_from_list(arch, _load_yaml(path), str(path))


def _factor_string(factors: dict[str, int], dims: str = _TIMELOOP_DIM_ORDER) -> str:
    return " ".join(f"{d}{factors.get(d, 1)}" for d in dims)


def _split_axis(loops: tuple, stages: list[int]) -> list[dict[str, int]]:
    """Distribute (dim, factor) loops of one axis over stages with the given fan-outs: a whole
    factor goes to the first stage with room for it, else its prime factors are spread."""
    out = [dict() for _ in stages]
    used = [1] * len(stages)

    def place(d: str, f: int) -> bool:
        for i, limit in enumerate(stages):
            if used[i] * f <= limit:
                out[i][d] = out[i].get(d, 1) * f
                used[i] *= f
                return True
        return False

    for d, f in loops:
        if place(d, f):
            continue
        for p in prime_factors(f):
            if not place(d, p):  # does not fit the stages: keep it on the last one (the checks report it)
                out[-1][d] = out[-1].get(d, 1) * p
                used[-1] *= p
    return out


def _stage_split(lvl, lm) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    """(Timeloop level name, X loops, Y loops) for a level's fan-out, outer stage first."""
    stages = list(lvl.spatial_stages)
    if not stages:
        return [(lvl.name, dict(lm.spatial_x), dict(lm.spatial_y))]
    xs = _split_axis(lm.spatial_x, [s.fanout_x for s in stages])
    ys = _split_axis(lm.spatial_y, [s.fanout_y for s in stages])
    return [(s.name, x, y) for s, x, y in zip(stages, xs, ys)]


def mapping_to_list(arch: Arch, mapping: Mapping) -> list[dict]:
    """Timeloop v0.4 mapping entries (innermost level first, like timeloop-mapper writes them).

    Written so that stock Timeloop loads them: a `type: spatial` entry only where a level (or one
    of its dummy spatial stages) fans out, since Timeloop rejects a spatial entry at a level
    without fan-out; and G only when the layer has groups, since G in the factors or permutation
    of a 7-dim problem (Timeloop's own conv shape) is an error (a missing dim defaults to 1).
    """
    dims = _TIMELOOP_DIM_ORDER if mapping.dim_products()["G"] > 1 else _TIMELOOP_DIM_ORDER.replace("G", "")
    datatype, loops = [], []
    for lvl, lm in reversed(list(zip(arch.levels, mapping.levels))):
        stages = list(lvl.spatial_stages)
        for st in reversed(stages):
            datatype.append({"target": st.name, "type": "datatype", "keep": [], "bypass": list(DATASPACES)})
        datatype.append({
            "target": lvl.name, "type": "datatype",
            "keep": [ds for ds in DATASPACES if ds in lm.keep],
            "bypass": [ds for ds in DATASPACES if ds not in lm.keep],
        })
    for lvl, lm in reversed(list(zip(arch.levels, mapping.levels))):
        fans_out = {s.name: s.fanout > 1 for s in lvl.spatial_stages} or {lvl.name: lvl.fanout > 1}
        for name, x, y in reversed(_stage_split(lvl, lm)):
            both = sorted(set(x) & set(y))
            if both:
                raise QuantloopError(
                    f"mapping: level {name} unrolls {', '.join(both)} on both X and Y, which one Timeloop spatial entry cannot express"
                )
            if fans_out[name]:
                perm = list(reversed(list(x))) + list(reversed(list(y)))
                perm += [d for d in dims if d not in perm]
                loops.append({"target": name, "type": "spatial", "factors": _factor_string({**x, **y}, dims),
                              "permutation": "".join(perm), "split": len(x)})
            elif x or y:
                raise QuantloopError(f"mapping: level {name} has no fan-out but the mapping unrolls {sorted({**x, **y})} there")
            if name != lvl.name:
                loops.append({"target": name, "type": "temporal", "factors": _factor_string({}, dims),
                              "permutation": dims})
        inner_first = [d for d, _ in reversed(lm.temporal)]
        inner_first += [d for d in dims if d not in inner_first]
        loops.append({"target": lvl.name, "type": "temporal", "factors": _factor_string(dict(lm.temporal), dims),
                      "permutation": "".join(inner_first)})
    return datatype + loops


def write_mapping(path: str | Path, arch: Arch, mapping: Mapping) -> None:
    Path(path).write_text(dump_yaml({"mapping": mapping_to_list(arch, mapping)}))


def format_map_txt(arch: Arch, mapping: Mapping, problem: Problem | None = None) -> str:
    """The loop nest as Timeloop's timeloop-model.map.txt prints it (tile sizes when `problem` is given)."""
    from quantloop.costmodel.model import _Nest  # tile sizes come from the model's own tables

    tiles = None
    if problem is not None:
        nest = _Nest(problem, mapping.to_arrays())
        tiles = [[int(nest.footprint(k, nest.inner[:, l])[0][0]) for k in range(3)] for l in range(arch.num_levels)]
    lines: list[str] = []
    depth = 0

    def header(name: str, kept: list[str]) -> None:
        lines.append(f"{name} [ {''.join(k + ' ' for k in kept)}] ")
        lines.append("-" * (len(lines[-1]) - 1))

    for l, (lvl, lm) in enumerate(zip(arch.levels, mapping.levels)):
        kept = [f"{ds}:{tiles[l][k]}" if tiles else ds for k, ds in enumerate(DATASPACES) if ds in lm.keep]
        header(lvl.name, kept)
        for d, f in lm.temporal:
            lines.append("|" + "  " * depth + f" for {d} in [0:{f})")
            depth += 1
        for name, x, y in _stage_split(lvl, lm):
            if not x and not y and name == lvl.name:
                continue
            lines.append("")
            header(name, [])
            for axis, loops in (("Y", y), ("X", x)):
                for d, f in loops.items():
                    lines.append("|" + "  " * depth + f" for {d} in [0:{f}) (Spatial-{axis})")
                    depth += 1
        lines.append("")
    lines.append("|" + "  " * depth + " << Compute >>")
    return "\n".join(lines) + "\n"
