"""A Timeloop design (v0.4 `arch.yaml` with timeloopfe's tags, or a v0.3 / flattened architecture)
turned into the data of a quantloop target YAML (`targets/schema.py`), as Timeloop's front end reads it.

Hierarchy (v0.4): nodes run outer → inner. A `!Container` with `spatial: {meshX, meshY}` is the
dummy spatial level timeloopfe inserts (`inter_<name>_spatial`): a stage of the fan-out of the
storage level above it, carrying the container's `spatial` constraints. A `!Parallel` sends each
data space down the one branch that keeps it (the branch's nodes bypass the rest) and becomes a
chain in the order written, as timeloopfe flattens it; `!Nothing` only marks a branch; a
`!Container`'s attributes are inherited by the nodes after it in its list. The last component is
the MAC.

Constraints keep Timeloop's meaning: `factors` fix a dimension's factor (1 forbids it),
`permutation` lists dims innermost first, and in a spatial constraint `split: k` puts the first k
dims of the permutation on X and the rest (unlisted dims included) on Y. Timeloop's max factors
(`C<=4`), factor 0 (the whole dimension) and a split among unlisted dims are refused, not guessed.

Energies come from Accelergy's ERT.yaml and areas from ART.yaml beside the architecture: quantloop
does not run Accelergy, so a design without an ERT is refused naming the first component that
needs one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from quantloop.problem import DATASPACES, DIMS
from quantloop.errors import QuantloopError
from quantloop.targets.timeloop_design.tables import bare_name, read_art, read_ert
from quantloop.targets.timeloop_design.tags import TaggedNode, load_yaml

ARCH_FILES = ("arch.yaml", "timeloop_input_architecture.yaml")
_NODE_KEYS = {"name", "class", "subclass", "attributes", "constraints", "spatial", "required_actions", "enabled",
              "area_scale", "energy_scale", "nodes"}
_CONSTRAINT_KEYS = {"dataspace": {"keep", "bypass"}, "temporal": {"factors", "permutation"},
                    "spatial": {"factors", "permutation", "split"}}
# attributes that change Timeloop's semantics when not at these defaults; quantloop models only the defaults
_DEFAULT_ONLY = {"multiple_buffering": 1, "allow_overbooking": False, "min_utilization": 0, "reduction_supported": True}


@dataclass(frozen=True)
class DesignFiles:
    """The files of one design: the architecture and, beside it, Accelergy's tables and components."""

    arch: Path
    ert: Path | None
    art: Path | None
    components: tuple[Path, ...]
    constraints: Path | None = None  # read only for a v0.3 architecture (v0.4 writes them inline)

    @property
    def name(self) -> str:
        return self.arch.parent.name if self.arch.name in ARCH_FILES else self.arch.stem


def design_files(path: Path) -> DesignFiles:
    """Locate a design given its folder or its architecture file."""
    path = Path(path)
    if path.is_dir():
        arch = next((path / f for f in ARCH_FILES if (path / f).is_file()), None)
        if arch is None:
            raise QuantloopError(f"{path}: not a Timeloop design folder (no {' or '.join(ARCH_FILES)})")
    elif path.is_file():
        arch = path
    else:
        raise QuantloopError(f"{path}: target not found")
    folder = arch.parent
    found = {n: folder / n for n in ("ERT.yaml", "ART.yaml", "constraints.yaml") if (folder / n).is_file()}
    comps = tuple(sorted((folder / "components").glob("*.yaml"))) if (folder / "components").is_dir() else ()
    return DesignFiles(arch, found.get("ERT.yaml"), found.get("ART.yaml"), comps, found.get("constraints.yaml"))


def is_timeloop_architecture(path: Path) -> bool:
    """A YAML file whose top level is Timeloop's `architecture:` (quantloop targets have `levels:`)."""
    try:
        head = Path(path).read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^architecture\s*:", head, re.M) is not None


# ---------------------------------------------------------------- flattening the hierarchy


@dataclass
class _Node:
    """One element of the flattened chain: storage, a dummy spatial level, or the MAC."""

    kind: str  # "component" | "spatial"
    name: str
    where: str
    cls: str = ""
    attrs: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)
    mesh: tuple[int, int] = (1, 1)  # a component's own mesh (fan-out from the level above) / a stage's extents


_MAX_NODES = 100_000  # YAML aliases can make a small file describe an exponentially large tree


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.visited = 0

    def fail(self, where: str, message: str) -> QuantloopError:
        return QuantloopError(f"{self.source}: {where}: {message}")

    def mapping(self, value: object, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def integer(self, value: object, where: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
            raise self.fail(where, f"expected an integer ≥ {minimum}, got {value!r}")
        return int(value)

    def mesh(self, spatial: object, where: str) -> tuple[int, int]:
        spatial = self.mapping(spatial, where)
        unknown = set(spatial) - {"meshX", "meshY"}
        if unknown:
            raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown key (expected meshX, meshY)")
        return (self.integer(spatial.get("meshX", 1), f"{where}.meshX"),
                self.integer(spatial.get("meshY", 1), f"{where}.meshY"))

    # v0.4 -----------------------------------------------------------------------------------------

    def branch_keeps(self, node: object, where: str) -> set[str]:
        """The data spaces a !Parallel branch keeps: every `dataspace.keep` in its subtree (as timeloopfe)."""
        kept: set[str] = set()
        stack = [(node, where)]
        while stack:
            n, at = stack.pop()
            self.visited += 1
            if self.visited > _MAX_NODES:
                raise self.fail(at, f"more than {_MAX_NODES} nodes (aliases repeating a subtree?)")
            if not isinstance(n, TaggedNode):
                continue  # reported by flatten_v4
            cons = n.body.get("constraints")
            if isinstance(cons, dict) and isinstance(cons.get("dataspace"), dict):
                kept |= set(self.dataspaces(cons["dataspace"].get("keep", []), f"{at}.constraints.dataspace.keep"))
            kids = n.body.get("nodes")
            if isinstance(kids, list):
                stack += [(k, f"{at}.nodes[{j}]") for j, k in enumerate(kids)]
        return kept

    def parallel(self, children: list, at: str, attrs: dict, reaching: frozenset[str]) -> list[_Node]:
        """timeloopfe's !Parallel: each data space reaching it goes down exactly one branch (the one
        whose nodes keep it); every node of a branch bypasses what its branch does not keep. The
        branches then form a chain in the order written."""
        keeps = [self.branch_keeps(child, f"{at}.nodes[{j}]") for j, child in enumerate(children)]
        for j, kj in enumerate(keeps):
            for k in range(j + 1, len(keeps)):
                shared = kj & keeps[k]
                if shared:
                    raise self.fail(f"{at}.nodes[{k}]", f"{sorted(shared)} kept in two peer branches (nodes[{j}] and "
                                                        f"nodes[{k}]); a data space goes down one branch")
        missing = sorted(reaching - set().union(*keeps), key=DATASPACES.index)
        if missing:
            raise self.fail(at, f"no branch keeps {missing}; to let them pass, add a branch "
                                f"`!Nothing {{constraints: {{dataspace: {{keep: {missing}}}}}}}`")
        out: list[_Node] = []
        for j, child in enumerate(children):
            part = self.flatten_v4([child], f"{at}.nodes[{j}]", attrs, branch=True, reaching=frozenset(keeps[j]))
            for n in part:
                if n.kind != "component":
                    continue
                ds = dict(self.mapping(n.constraints.get("dataspace"), f"{n.where}.constraints.dataspace"))
                bypass = list(ds.get("bypass") or [])
                bypass += [d for d in DATASPACES if d not in keeps[j] and d not in bypass]
                n.constraints = {**n.constraints, "dataspace": {**ds, "bypass": bypass}}
            out += part
        return out

    def flatten_v4(self, nodes: object, where: str, inherited: dict, branch: bool = False,
                   reaching: frozenset[str] = frozenset(DATASPACES)) -> list[_Node]:
        """Flatten a list of nodes at key path `where` (`branch`: `nodes` is one parallel branch at
        `where`; `reaching`: the data spaces that come down to this list)."""
        if not isinstance(nodes, list):
            raise self.fail(where, "expected a list of nodes")
        out: list[_Node] = []
        attrs = dict(inherited)
        for i, node in enumerate(nodes):
            at = where if branch else f"{where}[{i}]"
            self.visited += 1
            if self.visited > _MAX_NODES:
                raise self.fail(at, f"more than {_MAX_NODES} nodes (aliases repeating a subtree?)")
            if not isinstance(node, TaggedNode):
                raise self.fail(at, "a node needs a tag (!Container, !Component, !Hierarchical, !Parallel or !Nothing)")
            body = node.body
            unknown = set(body) - _NODE_KEYS
            if unknown:
                raise self.fail(f"{at}.{sorted(unknown)[0]}", f"unknown key in !{node.tag}")
            if node.tag == "Nothing":
                continue
            if node.tag in ("Hierarchical", "Parallel"):
                children = body.get("nodes", [])
                if node.tag == "Hierarchical":
                    out += self.flatten_v4(children, f"{at}.nodes", attrs, reaching=reaching)
                else:
                    if not isinstance(children, list):
                        raise self.fail(f"{at}.nodes", "expected a list of nodes")
                    out += self.parallel(children, at, attrs, reaching)
                continue
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise self.fail(f"{at}.name", f"!{node.tag} needs a name")
            own = {**attrs, **self.mapping(body.get("attributes"), f"{at}.attributes")}
            constraints = self.mapping(body.get("constraints"), f"{at}.constraints")
            mesh = self.mesh(body.get("spatial"), f"{at}.spatial")
            if node.tag == "Container":
                attrs = own
                other = set(constraints) - {"spatial"} - ({"dataspace"} if branch else set())
                if other:  # (a container that is a !Parallel branch may say which data spaces pass it)
                    raise self.fail(f"{at}.constraints.{sorted(other)[0]}",
                                    "a container's only constraints are `spatial` (its dummy level stores nothing)")
                spatial = {k: v for k, v in constraints.items() if k == "spatial"}
                if mesh != (1, 1):
                    out.append(_Node("spatial", f"inter_{name}_spatial", at, constraints=spatial, mesh=mesh))
                elif spatial:
                    raise self.fail(f"{at}.constraints", "spatial constraints on a container without a spatial mesh")
                continue
            cls = str(body.get("subclass") or body.get("class") or "")
            out.append(_Node("component", name, at, cls=cls, attrs=own, constraints=constraints, mesh=mesh))
        return out

    # v0.3 / flattened -----------------------------------------------------------------------------

    def flatten_v3(self, tree: dict, where: str) -> list[_Node]:
        out: list[_Node] = []
        for key in set(tree) - {"name", "attributes", "local", "subtree", "version"}:
            raise self.fail(f"{where}.{key}", "unknown key in a v0.3 architecture")
        local = tree.get("local", [])
        for i, el in enumerate(local if isinstance(local, list) else []):
            at = f"{where}.local[{i}]"
            el = self.mapping(el, at)
            if "constraints" in el:
                raise self.fail(f"{at}.constraints", "a v0.3 architecture gives constraints as architecture_constraints.targets")
            raw = str(el.get("name", ""))
            m = re.search(r"\[(\d+)\.\.(\d+)\]$", raw)
            instances = int(m.group(2)) - int(m.group(1)) + 1 if m else 1
            attrs = self.mapping(el.get("attributes"), f"{at}.attributes")
            mx = self.integer(attrs.get("meshX", instances), f"{at}.attributes.meshX")
            my = self.integer(attrs.get("meshY", max(1, instances // mx)), f"{at}.attributes.meshY")
            if mx * my != instances:
                raise self.fail(f"{at}.attributes", f"meshX × meshY = {mx * my} but the name says {instances} instances")
            cls = str(el.get("subclass") or el.get("class") or "")
            kind = "spatial" if cls == "dummy_storage" else "component"
            out.append(_Node(kind, bare_name(raw), at, cls=cls, attrs=attrs, mesh=(mx, my)))
        subtrees = tree.get("subtree", [])
        for j, sub in enumerate(subtrees if isinstance(subtrees, list) else []):
            out += self.flatten_v3(self.mapping(sub, f"{where}.subtree[{j}]"), f"{where}.subtree[{j}]")
        return out


_V3_TYPES = {"temporal": "temporal", "spatial": "spatial", "bypass": "dataspace", "datatype": "dataspace"}


def _v3_constraints(chain: list[_Node], doc: object, source: str) -> None:
    """Timeloop v0.3 `architecture_constraints: {targets: [...]}` (as timeloopfe emits them) onto the
    chain, in the v0.4 inline form. The dummy levels' all-1 temporal factors and bypass-everything
    entries that timeloopfe adds are what a dummy level is anyway; anything else there is an error."""
    reader = _Constraints(source)
    top = reader.mapping(doc, "<root>")
    by_name = {n.name: n for n in chain}
    for key in ("architecture_constraints", "mapspace_constraints"):
        body = reader.mapping(top.get(key), key)
        targets = body.get("targets", [])
        if not isinstance(targets, list):
            raise reader.fail(f"{key}.targets", "expected a list")
        for i, entry in enumerate(targets):
            at = f"{key}.targets[{i}]"
            entry = dict(reader.mapping(entry, at))
            name, kind = entry.pop("target", None), entry.pop("type", None)
            node = by_name.get(bare_name(str(name)))
            if node is None:
                raise reader.fail(f"{at}.target", f"no level named {name!r} in the architecture")
            if kind not in _V3_TYPES:
                raise reader.fail(f"{at}.type", f"{kind!r} is not supported (expected {', '.join(_V3_TYPES)})")
            section = _V3_TYPES[kind]
            if node.kind == "spatial" and section != "spatial":
                vacuous = (section == "temporal" and all(f == 1 for f in reader.factors(entry.get("factors"), f"{at}.factors").values())
                           or section == "dataspace" and not entry.get("keep"))
                if not vacuous:
                    raise reader.fail(at, f"{node.name} is a dummy spatial level: it stores nothing and has no temporal loops")
                continue
            if node is chain[-1]:
                raise reader.fail(at, "the compute level takes no constraints")
            unknown = set(entry) - _CONSTRAINT_KEYS[section]
            if unknown:
                raise reader.fail(f"{at}.{sorted(unknown)[0]}", "unknown or unsupported constraint key")
            # validate here, where the key path is known; the values are kept in the v0.4 inline form
            if section == "dataspace":
                entry = {k: reader.dataspaces(entry[k], f"{at}.{k}") for k in ("keep", "bypass") if entry.get(k)}
            elif section == "temporal":
                if entry.get("factors") is not None:
                    entry["factors"] = reader.factors(entry["factors"], f"{at}.factors")
                if entry.get("permutation") is not None:
                    entry["permutation"] = reader.permutation(entry["permutation"], f"{at}.permutation")
            else:
                if entry.get("factors") is not None:
                    entry["factors"] = reader.factors(entry["factors"], f"{at}.factors")
                if entry.get("permutation") is not None:
                    entry["permutation"] = reader.permutation(entry["permutation"], f"{at}.permutation")
                reader.spatial_axes(entry, node.mesh, at)
            merged = node.constraints.setdefault(section, {})
            for k, v in entry.items():
                if k in merged:
                    raise reader.fail(f"{at}.{k}", f"{section} {k} of {node.name} is given twice")
                merged[k] = v
            both = set(merged.get("keep", [])) & set(merged.get("bypass", []))
            if both:
                raise reader.fail(at, f"{node.name}: {sorted(both)} both kept and bypassed")


def _v3_fanouts(chain: list[_Node]) -> None:
    """v0.3 meshes are absolute instance grids; turn them into fan-outs below each element."""
    for node, child in zip(chain, chain[1:]):
        (px, py), (cx, cy) = node.mesh, child.mesh
        node.mesh = (max(1, cx // px), max(1, cy // py))
    chain[-1].mesh = (1, 1)


# ---------------------------------------------------------------- constraints


class _Constraints(_Reader):
    def dim(self, d: object, where: str) -> str:
        if d not in DIMS:
            raise self.fail(where, f"unknown dimension {d!r} (expected one of {', '.join(DIMS)})")
        return str(d)

    def factors(self, value: object, where: str) -> dict[str, int]:
        """`[N=1, C=16]`, `"R=1 S=1"`, `"R=1,S=1"`, `"C16"` or a mapping {N: 1}, as Timeloop parses them."""
        if isinstance(value, dict):
            return {self.dim(d, where): self.integer(f, f"{where}.{d}") for d, f in value.items()}
        items = value if isinstance(value, list) else re.split(r"[\s,]+", str(value).strip()) if value else []
        out: dict[str, int] = {}
        for i, item in enumerate(items):
            if re.fullmatch(r"\s*[A-Za-z]+\s*(<=|>=)\s*\d+\s*", str(item)):
                raise self.fail(f"{where}[{i}]", f"{item}: minimum / maximum factors are not supported (only DIM=N)")
            m = re.fullmatch(r"\s*([A-Za-z]+)\s*=?\s*(\d+)\s*", str(item))
            if not m:
                raise self.fail(f"{where}[{i}]", f"expected DIM=N such as C=16, got {item!r}")
            if int(m.group(2)) == 0:
                raise self.fail(f"{where}[{i}]", f"{item}: factor 0 (Timeloop: the whole dimension of each layer) "
                                                 "is not supported; give the factor")
            d = self.dim(m.group(1), f"{where}[{i}]")
            if d in out:
                raise self.fail(f"{where}[{i}]", f"dimension {d} is given twice")
            out[d] = self.integer(int(m.group(2)), f"{where}[{i}]")
        return out

    def permutation(self, value: object, where: str) -> list[str]:
        items = value if isinstance(value, list) else list(re.sub(r"[\s,]", "", str(value)))
        dims = [self.dim(d, f"{where}[{i}]") for i, d in enumerate(items)]
        if len(set(dims)) != len(dims):
            raise self.fail(where, f"a dimension appears twice in {dims}")
        return dims

    def dataspaces(self, value: object, where: str) -> list[str]:
        items = value if isinstance(value, list) else [value]
        for i, ds in enumerate(items):
            if ds not in DATASPACES:
                raise self.fail(f"{where}[{i}]", f"unknown data space {ds!r} (expected {', '.join(DATASPACES)})")
        return list(items)

    def check_keys(self, constraints: dict, where: str) -> None:
        for kind, body in constraints.items():
            if kind not in _CONSTRAINT_KEYS:
                raise self.fail(f"{where}.{kind}", f"unknown or unsupported constraint (expected {', '.join(_CONSTRAINT_KEYS)})")
            unknown = set(self.mapping(body, f"{where}.{kind}")) - _CONSTRAINT_KEYS[kind]
            if unknown:
                raise self.fail(f"{where}.{kind}.{sorted(unknown)[0]}", "unknown or unsupported constraint key")

    def storage(self, constraints: dict, where: str) -> dict:
        """dataspace / temporal constraints of a storage level, in quantloop's schema."""
        out: dict = {}
        ds = constraints.get("dataspace")
        if ds:
            keep = self.dataspaces(ds.get("keep", []), f"{where}.dataspace.keep")
            bypass = self.dataspaces(ds.get("bypass", []), f"{where}.dataspace.bypass")
            if set(keep) & set(bypass):
                raise self.fail(f"{where}.dataspace", f"{sorted(set(keep) & set(bypass))} both kept and bypassed")
            out["dataspace"] = {k: v for k, v in (("keep", keep), ("bypass", bypass)) if v}
        tm = constraints.get("temporal")
        if tm:
            t: dict = {}
            if tm.get("permutation") is not None:
                t["permutation"] = self.permutation(tm["permutation"], f"{where}.temporal.permutation")
            if tm.get("factors") is not None:
                t["factors"] = self.factors(tm["factors"], f"{where}.temporal.factors")
            out["temporal"] = t
        return out

    def spatial_axes(self, spatial: dict, mesh: tuple[int, int], where: str) -> tuple[dict[str, int], dict[str, int]]:
        """Timeloop's spatial constraint on one fan-out → fixed factors on X and on Y."""
        factors = self.factors(spatial.get("factors"), f"{where}.factors") if spatial.get("factors") else {}
        on_x = on_y = set(DIMS)
        if spatial.get("split") is not None:
            split = self.integer(spatial["split"], f"{where}.split", minimum=0)
            listed = self.permutation(spatial.get("permutation", []), f"{where}.permutation")
            if len(listed) < split < len(DIMS):  # Timeloop lets its mapper order the unlisted dims there
                raise self.fail(f"{where}.split", f"{split} falls among the dims the permutation does not list; "
                                                  "list every dim up to the split")
            full = listed + [d for d in DIMS if d not in listed]
            on_x, on_y = set(full[:split]), set(full[split:])
        fx = {d: 1 for d in DIMS if d not in on_x}
        fy = {d: 1 for d in DIMS if d not in on_y}
        for d, f in factors.items():
            if f == 1:
                fx[d] = fy[d] = 1
            elif d in on_x and (d not in on_y or mesh[1] == 1):
                fx[d] = f
                fy[d] = 1
            elif d in on_y and (d not in on_x or mesh[0] == 1):
                fy[d] = f
                fx[d] = 1
            else:
                raise self.fail(f"{where}.factors", f"{d}={f} on a {mesh[0]}×{mesh[1]} mesh: give permutation and split "
                                                    "to say whether it is on X or Y")
        for axis, fixed, extent in (("X", fx, mesh[0]), ("Y", fy, mesh[1])):
            big = {d: f for d, f in fixed.items() if f > extent}
            if big:
                d, f = next(iter(big.items()))
                raise self.fail(f"{where}.factors", f"{d}={f} exceeds the {axis} fan-out {extent}")
        return fx, fy


# ---------------------------------------------------------------- the target


def _number(attrs: dict, keys: tuple[str, ...], reader: _Reader, where: str) -> int | None:
    for k in keys:
        if k in attrs and attrs[k] is not None:
            return reader.integer(attrs[k], f"{where}.attributes.{k}")
    return None


def _energies(name: str, node: _Node, ert: dict | None, files: DesignFiles, actions: tuple[str, ...]) -> dict[str, float]:
    if ert is None:
        raise QuantloopError(
            f"{files.arch}: {node.where}: component {name} (class {node.cls or '?'}) needs Accelergy for its energies "
            "and there is no ERT.yaml beside the architecture; run Accelergy and put its ERT.yaml there"
        )
    table = ert.get(name)
    if table is None:
        raise QuantloopError(f"{files.ert}: ERT.tables: no entry for component {name} ({files.arch.name}: {node.where})")
    missing = [a for a in actions if a not in table]
    if missing:
        raise QuantloopError(f"{files.ert}: ERT.tables[{name}].actions: no {missing[0]!r} action for component {name}")
    return table


def load_design(path: str | Path) -> tuple[dict, DesignFiles]:
    """The quantloop target data (validated later by `targets.schema`) for a Timeloop design."""
    files = design_files(Path(path))
    source = str(files.arch)
    data = load_yaml(files.arch)
    reader = _Constraints(source)
    top = reader.mapping(data, "<root>")
    arch_top = reader.mapping(top.get("architecture"), "architecture")
    if not arch_top:
        raise reader.fail("architecture", "required key is missing (not a Timeloop architecture)")
    if "nodes" in arch_top:
        for other in ("architecture_constraints", "mapspace_constraints"):
            if other in top:
                raise reader.fail(other, "a v0.4 architecture writes its constraints inline (constraints: under each node)")
        chain = reader.flatten_v4(arch_top["nodes"], "architecture.nodes", {})
    elif "subtree" in arch_top or "local" in arch_top:
        chain = reader.flatten_v3(arch_top, "architecture")
        if not chain:
            raise reader.fail("architecture", "no components")
        _v3_fanouts(chain)
        if any(k in top for k in ("architecture_constraints", "mapspace_constraints")):
            _v3_constraints(chain, top, source)
        if files.constraints is not None:
            _v3_constraints(chain, load_yaml(files.constraints), str(files.constraints))
    else:
        raise reader.fail("architecture", "expected `nodes` (v0.4) or `subtree` / `local` (v0.3)")
    for p in files.components:  # compound components: read so that a broken file is reported, not ignored
        load_yaml(p)
    if not chain or chain[-1].kind != "component":
        raise reader.fail("architecture", "the innermost node must be the compute component (the MAC)")
    ert = read_ert(files.ert) if files.ert else None
    art = read_art(files.art) if files.art else {}
    v3 = "nodes" not in arch_top

    levels: list[dict] = []
    stages: list[list[_Node]] = []
    for node in chain[:-1]:
        if node.kind == "spatial":
            if not levels:
                raise reader.fail(node.where, f"spatial fan-out {node.name} above every storage level")
            stages[-1].append(node)
            continue
        if not v3 and node.mesh != (1, 1):  # a component's own mesh: fan-out of the level above
            if not levels:
                raise reader.fail(f"{node.where}.spatial", "the outermost storage level cannot have a mesh")
            levels[-1]["_direct"] = node.mesh
        levels.append(_storage_level(node, reader, ert, art, files))
        stages.append([])
        if v3 and node.mesh != (1, 1):
            levels[-1]["_direct"] = node.mesh
    mac = chain[-1]
    if not levels:
        raise reader.fail("architecture", "no storage level above the MAC")
    if not v3 and mac.mesh != (1, 1):
        levels[-1]["_direct"] = mac.mesh
    for lvl, lvl_stages in zip(levels, stages):
        _fanout(lvl, lvl_stages, reader)
    spec = {
        "name": files.name,
        "description": f"imported from the Timeloop design {files.name} ({', '.join(p.name for p in (files.arch, files.ert, files.art) if p)})",
        "levels": levels,
        "compute": _compute(mac, reader, ert, art, files),
    }
    return spec, files


def _storage_level(node: _Node, reader: _Constraints, ert: dict | None, art: dict, files: DesignFiles) -> dict:
    at, attrs = node.where, node.attrs
    for key, default in _DEFAULT_ONLY.items():
        if key in attrs and attrs[key] is not None and attrs[key] != default:
            raise reader.fail(f"{at}.attributes.{key}", f"{attrs[key]!r} is not supported (quantloop models {default!r})")
    word_bits = _number(attrs, ("datawidth", "word_bits", "word-bits"), reader, at)
    if word_bits is None:
        raise reader.fail(f"{at}.attributes", f"storage {node.name} needs `datawidth` (bits per word)")
    cluster = _number(attrs, ("cluster_size", "cluster-size"), reader, at) or 1
    width = _number(attrs, ("width",), reader, at)
    block = _number(attrs, ("block_size", "block-size"), reader, at)
    if width is None and block is not None:
        width = block * word_bits * cluster
    elif width is not None and block is not None and block != width // (word_bits * cluster):
        raise reader.fail(f"{at}.attributes.block_size", f"{block} disagrees with width / (datawidth × cluster_size)")
    level: dict = {"name": node.name, "word_bits": word_bits}
    if width is not None:
        level["width"] = width
    depth = _number(attrs, ("depth",), reader, at)
    entries = _number(attrs, ("entries",), reader, at)
    if depth is not None:  # none (as for the exercises' DRAM): unbounded
        level["depth"] = depth
    elif entries is not None:
        level["capacity_words"] = entries
    if cluster != 1:
        level["cluster_size"] = cluster
    e = _energies(node.name, node, ert, files, ("read", "write"))
    level["energy_pj"] = {"read": e["read"], "write": e["write"], "update": e.get("update", e["write"])}
    if e.get("leak"):
        level["leak_pj_per_cycle"] = e["leak"]
    bw = {k: _number(attrs, (f"{k}_bandwidth", f"{k}-bandwidth"), reader, at) for k in ("read", "write", "shared")}
    if any(v is not None for v in bw.values()):
        level["bandwidth"] = {k: v for k, v in bw.items() if v is not None}
    if node.name in art:
        level["area_um2"] = art[node.name]
    reader.check_keys(node.constraints, f"{at}.constraints")
    constraints = reader.storage(node.constraints, f"{at}.constraints")
    if node.constraints.get("spatial"):
        level["_own_spatial"] = (node.constraints["spatial"], f"{at}.constraints.spatial")
    if constraints:
        level["constraints"] = constraints
    return level


def _fanout(level: dict, stages: list[_Node], reader: _Constraints) -> None:
    """Fold the fan-out below a storage level (its children's own mesh, or the dummy stages) into it."""
    direct = level.pop("_direct", None)
    own = level.pop("_own_spatial", None)
    if direct and stages:
        raise reader.fail(stages[0].where, f"{level['name']} fans out both to components with a mesh and through "
                                           "containers; quantloop cannot express both")
    axes: dict[str, list[dict[str, int]]] = {"x": [], "y": []}
    if direct:
        level["fanout"] = {"x": direct[0], "y": direct[1]}
        if own:
            fx, fy = reader.spatial_axes(reader.mapping(own[0], own[1]), direct, own[1])
            axes["x"].append(fx)
            axes["y"].append(fy)
    elif own:  # no fan-out of its own (a container's stages carry it): only factors of 1 are consistent
        reader.spatial_axes(reader.mapping(own[0], own[1]), (1, 1), own[1])
    for st in stages:
        reader.check_keys(st.constraints, f"{st.where}.constraints")
        spatial = reader.mapping(st.constraints.get("spatial"), f"{st.where}.constraints.spatial")
        fx, fy = reader.spatial_axes(spatial, st.mesh, f"{st.where}.constraints.spatial")
        if st.mesh[0] > 1:
            axes["x"].append(fx)
        if st.mesh[1] > 1:
            axes["y"].append(fy)
    if stages:
        x = y = 1
        for st in stages:
            x, y = x * st.mesh[0], y * st.mesh[1]
        level["fanout"] = {"x": x, "y": y, "stages": [
            {"name": st.name, **({"x": st.mesh[0]} if st.mesh[0] > 1 else {}), **({"y": st.mesh[1]} if st.mesh[1] > 1 else {})}
            for st in stages
        ]}
    constraints = level.setdefault("constraints", {})
    for axis, found in axes.items():
        if not found:
            continue
        if len(found) > 1 and (any(f != found[0] for f in found) or any(v != 1 for v in found[0].values())):
            raise reader.fail(stages[-1].where, f"several spatial fan-outs on {axis.upper()} below {level['name']} "
                                                "with different or non-1 factor constraints; quantloop keeps one set per axis")
        fixed = dict(sorted(found[0].items(), key=lambda kv: DIMS.index(kv[0])))
        if fixed:
            constraints[f"spatial_{axis}"] = {"factors": fixed}
    if not constraints:
        level.pop("constraints")


def _compute(node: _Node, reader: _Constraints, ert: dict | None, art: dict, files: DesignFiles) -> dict:
    if node.constraints:
        raise reader.fail(f"{node.where}.constraints", "the compute component takes no constraints")
    e = _energies(node.name, node, ert, files, ("compute",))
    mult = _number(node.attrs, ("multiplier_width",), reader, node.where) or 8
    adder = _number(node.attrs, ("adder_width",), reader, node.where) or 2 * mult
    out: dict = {"name": node.name, "energy_pj": e["compute"],
                 "reference_bits": {"weights": mult, "inputs": mult, "accumulator": adder}}
    if e.get("leak"):
        out["leak_pj_per_cycle"] = e["leak"]
    if node.name in art:
        out["area_um2"] = art[node.name]
    return out
