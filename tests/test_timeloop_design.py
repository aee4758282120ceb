"""Timeloop designs (v0.4 arch.yaml + components + ERT + ART, or the v0.3 flattened form) as targets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from quantloop.cli import main
from quantloop.targets.area import target_area
from quantloop.targets.registry import BUILTIN_DIR as BUILTIN
from quantloop.targets.registry import load_target
from quantloop.targets.schema import content_hash, load_spec_file
from quantloop.targets.timeloop_design import design_spec

DATA = Path(__file__).parent / "data" / "timeloop"
PAIRS = [("eyeriss_like", "eyeriss"), ("simba_like", "simba")]


PE_TYPE_KEYS = ("clock_mhz", "pe_type", "schemes", "max_weight_bits")
"""What a built-in's PE type adds (issue 15): a Timeloop design declares no clock and no PE type."""


def _normalised(spec) -> dict:
    """Name and description say where a target came from; everything else is its content."""
    data = spec.model_dump(mode="json")
    data["compute"] = {k: v for k, v in data["compute"].items() if k not in PE_TYPE_KEYS}
    return {**data, "name": "", "description": ""}


@pytest.mark.parametrize("design,builtin", PAIRS)
def test_imported_design_equals_the_builtin(design, builtin):
    imported = design_spec(DATA / design)
    reference = load_target(builtin)
    assert imported.name == design
    # The only deliberate difference is the name and description; geometry, energies, constraints,
    # dummy-level stages, reference MAC bits and areas agree exactly, so the content hashes agree.
    assert _normalised(imported) == _normalised(load_spec_file(BUILTIN / f"{builtin}.yaml"))
    builtin_spec = load_spec_file(BUILTIN / f"{builtin}.yaml")
    pe_type = {k: getattr(builtin_spec.compute, k) for k in PE_TYPE_KEYS}
    renamed = imported.model_copy(update={"name": reference.name, "description": reference.description,
                                          "compute": imported.compute.model_copy(update=pe_type)})
    assert content_hash(renamed) == reference.content_hash


@pytest.mark.parametrize("design", [d for d, _ in PAIRS])
def test_v03_flattened_architecture_equals_the_v04_design(design):
    """Same geometry, stages, energies and areas; a v0.3 architecture has no inline constraints."""
    v4 = _normalised(design_spec(DATA / design))
    v3 = _normalised(design_spec(DATA / design / "timeloop_input_architecture.yaml"))
    assert all(lvl["constraints"] == v3["levels"][1]["constraints"] for lvl in v3["levels"])  # all empty
    for lvl in v4["levels"]:
        lvl["constraints"] = v3["levels"][0]["constraints"]
    assert v3 == v4


def test_v03_with_its_constraints_file_equals_the_v04_design():
    """c_on_x_m_on_y's constraints.yaml is its arch.yaml constraints as Timeloop reads them."""
    folder = DATA / "c_on_x_m_on_y"
    assert _normalised(design_spec(folder / "timeloop_input_architecture.yaml")) == _normalised(design_spec(folder))


LAYERS = ["pw1x1_C32_M64_P56", "conv3x3_C64_M64_P56", "dw3x3_G64_P56", "default_problem"]


@pytest.mark.parametrize("design", [d for d, _ in PAIRS])
@pytest.mark.parametrize("layer", LAYERS)
def test_v03_with_timeloopfes_layer_constraints_differs_only_by_its_permutation_additions(tmp_path, design, layer):
    """timeloopfe's per-layer constraints (README caveat 3) add layer-dependent permutations (size-1
    dims first, G prepended) that never change a cost; everything else equals the v0.4 reading,
    including the bypass lists a !Parallel gives its branches."""
    for name in ("timeloop_input_architecture.yaml", "ERT.yaml", "ART.yaml"):
        shutil.copy(DATA / design / name, tmp_path / name)
    shutil.copy(DATA / design / layer / "constraints.yaml", tmp_path / "constraints.yaml")
    v3 = _normalised(design_spec(tmp_path / "timeloop_input_architecture.yaml"))
    v4 = _normalised(design_spec(DATA / design))
    instance = yaml.safe_load((DATA / design / layer / "problem.yaml").read_text())["problem"]["instance"]
    unit_dims = {d for d in "NGCMPQRS" if instance.get(d, 1) == 1} | {"G"}
    for a, b in zip(v3["levels"], v4["levels"]):
        pa, pb = a["constraints"]["temporal"].pop("permutation"), b["constraints"]["temporal"].pop("permutation")
        added = pa[: len(pa) - len(pb)]
        assert pa[len(added):] == pb and set(added) <= unit_dims, (a["name"], pa, pb)
        for lvl in (a, b):  # timeloopfe lists bypasses in set order
            lvl["constraints"]["dataspace"] = {k: sorted(v) for k, v in lvl["constraints"]["dataspace"].items()}
    assert v3 == v4


@pytest.mark.parametrize("design,builtin", PAIRS)
def test_targets_import_writes_yaml_equal_to_the_design(tmp_path, capsys, design, builtin):
    out = tmp_path / "my.yaml"
    assert main(["targets", "import", str(DATA / design), "-o", str(out)]) == 0
    written = load_spec_file(out)
    assert content_hash(written) == content_hash(design_spec(DATA / design))
    assert main(["targets", "import", str(DATA / design), "-o", str(out)]) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err


REF = Path(os.environ["QUANTLOOP_REFERENCE_DIR"])
CASES = json.loads((REF / "index.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["path"] for c in CASES])
def test_reference_case_on_the_imported_design(capsys, case):
    """Every public reference case, costed on the design folder itself: same numbers as the built-ins."""
    folder = REF / case["path"]
    design = DATA / case["path"].split("/")[0]
    argv = ["cost", "--target", str(design), "--problem", str(folder / "problem.yaml"),
            "--mapping", str(folder / "map.yaml"), "--json"]
    if case["tool"] == "quant-fork":
        argv += ["--mac-energy", "fixed", "--psum-bits", "outputs"]  # the fork's conventions
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    exp = json.loads((folder / "expected.json").read_text())
    assert got["total_energy_pj"] == pytest.approx(exp["total_energy_pj"], rel=1e-9)
    assert got["cycles"] == exp["cycles"]
    rows = {(r["level"], r["dataspace"]): r for r in got["per_level"]}
    for p in exp["per_level"]:
        r = rows[(p["level"], p["dataspace"])]
        assert (r["reads_per_instance"], r["fills_per_instance"], r["updates_per_instance"]) == (
            p["reads_per_instance"], p["fills_per_instance"], p["updates_per_instance"])
        assert r["energy_pj"] == pytest.approx(p["energy_pj"], rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------------ area


def test_area_from_art_per_level_and_total():
    art = {t["name"].split("[")[0].split(".")[-1]: t["area"]
           for t in yaml.safe_load((DATA / "eyeriss_like" / "ART.yaml").read_text())["ART"]["tables"]}
    arch = load_target(DATA / "eyeriss_like")
    area = target_area(arch)
    assert area.levels["psum_spad"] == pytest.approx(art["psum_spad"] * 168 / 1e6)
    assert area.levels["shared_glb"] == pytest.approx(art["shared_glb"] / 1e6)
    assert area.compute == pytest.approx(art["mac"] * 168 / 1e6)
    expected = sum(art[l.name] * l.instances for l in arch.levels) + art["mac"] * 168  # dummy levels not counted
    assert area.total_mm2 == pytest.approx(expected / 1e6)
    assert target_area(load_target("eyeriss")).total_mm2 == pytest.approx(area.total_mm2)


def test_area_is_unknown_when_a_level_declares_none(tmp_path):
    spec = yaml.safe_load((BUILTIN / "eyeriss.yaml").read_text())
    del spec["levels"][2]["area_um2"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    area = target_area(load_target(tmp_path / "t.yaml"))
    assert area.levels["ifmap_spad"] is None and area.total_mm2 is None and area.levels["psum_spad"] is not None


def test_area_in_cost_and_targets_output(capsys):
    case = next(c for c in CASES if c["path"] == "eyeriss_like/pw1x1_C32_M64_P56")
    folder = REF / case["path"]
    argv = ["cost", "--target", "eyeriss", "--problem", str(folder / "problem.yaml"), "--mapping", str(folder / "map.yaml")]
    assert main(argv + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    total = target_area(load_target("eyeriss")).total_mm2
    assert got["area"]["total_mm2"] == pytest.approx(total) and set(got["area"]["levels_mm2"]) >= {"psum_spad"}
    assert main(argv) == 0
    assert f"total {total:.4g} mm²" in capsys.readouterr().out
    assert main(["targets", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert listed["eyeriss"]["area"]["total_mm2"] == pytest.approx(total)


# ------------------------------------------------------------------------ constraints


def _design(tmp_path: Path, base: str = "eyeriss_like") -> Path:
    folder = tmp_path / base
    shutil.copytree(DATA / base, folder)
    return folder


def test_simba_spatial_factor_strings_and_parallel_branches():
    arch = load_target(DATA / "simba_like")
    names = [l.name for l in arch.levels]
    assert names == ["DRAM", "GlobalBuffer", "PEInputBuffer", "PEWeightBuffer", "PEAccuBuffer", "PEWeightRegs"]
    glb = arch.levels[1]
    assert glb.spatial_x_dims == frozenset("GCM")  # "R=1 S=1 P=1 Q=1 N=1"


def test_parallel_branches_bypass_what_they_do_not_keep():
    """timeloopfe: each data space reaching a !Parallel goes down the one branch that keeps it."""
    arch = load_target(DATA / "eyeriss_like")
    may = {l.name: set(l.may_keep) for l in arch.levels}
    assert may["ifmap_spad"] == {"Inputs"} and may["weights_spad"] == {"Weights"} and may["psum_spad"] == {"Outputs"}


@pytest.mark.parametrize("old,new,where,what", [
    ("dataspace: {keep: [Weights]}", "dataspace: {keep: [Weights, Inputs]}",
     "architecture.nodes[6].nodes[1]", "['Inputs'] kept in two peer branches (nodes[0] and nodes[1])"),
    ("dataspace: {keep: [Outputs]}", "dataspace: {keep: []}", "architecture.nodes[6]", "no branch keeps ['Outputs']"),
])
def test_parallel_branch_errors(tmp_path, capsys, old, new, where, what):
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    arch.write_text(arch.read_text().replace(old, new, 1))
    err = _error(capsys, folder)
    assert f"{arch}: {where}: " in err and what in err, err


def test_nothing_branch_lets_a_dataspace_pass(tmp_path):
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    arch.write_text(arch.read_text().replace("dataspace: {keep: [Outputs]}", "dataspace: {keep: []}", 1)
                    .replace("  - !Component # MAC unit", "    - !Nothing {constraints: {dataspace: {keep: [Outputs]}}}\n\n  - !Component # MAC unit"))
    levels = {l.name: l for l in load_target(folder).levels}
    assert "Outputs" not in levels["psum_spad"].may_keep and "Outputs" not in levels["ifmap_spad"].may_keep


def _two_d_design(tmp_path: Path, spatial: str) -> Path:
    """eyeriss_like with its two 1-D PE containers replaced by one 2-D mesh carrying `spatial`."""
    folder = _design(tmp_path)
    text = (folder / "arch.yaml").read_text()
    start, end = text.index("  - !Container # Each column"), text.index("  - !Parallel")
    text = text[:start] + f"""  - !Container
    name: PE
    spatial: {{meshX: 14, meshY: 12}}
    constraints:
      spatial: {spatial}

""" + text[end:]
    (folder / "arch.yaml").write_text(text)
    return folder


def test_split_puts_permutation_dims_on_x_and_the_rest_on_y(tmp_path):
    """Timeloop: with `split: k` the first k dims of the (completed) permutation are X, the rest Y."""
    folder = _two_d_design(tmp_path, "{permutation: [C, M], split: 1, factors: [N=1]}")
    glb = load_target(folder).levels[1]
    assert glb.fanout_x == 14 and glb.fanout_y == 12 and [s.name for s in glb.spatial_stages] == ["inter_PE_spatial"]
    assert glb.spatial_x_dims == frozenset("C")
    assert glb.spatial_y_dims == frozenset("GMPQRS")


def test_fixed_factor_lands_on_its_axis(tmp_path):
    folder = _two_d_design(tmp_path, "{permutation: [C, M], split: 1, factors: [C=7, M=12]}")
    glb = load_target(folder).levels[1]
    assert glb.spatial_x_factors["C"] == 7 and glb.spatial_y_factors["C"] == 1
    assert glb.spatial_y_factors["M"] == 12 and glb.spatial_x_factors["M"] == 1


def test_constrained_mapping_obeys_c_on_x_m_on_y(tmp_path):
    from quantloop.problem import Bits, Problem
    from quantloop.mapper.api import map_layer

    folder = _two_d_design(tmp_path, "{permutation: [C, M], split: 1, factors: [N=1, G=1, P=1, Q=1, R=1, S=1]}")
    arch = load_target(folder)
    problem = Problem(name="pw", C=28, M=24, P=4, Q=4)
    result = map_layer(problem, arch, Bits(), objective="energy")
    lm = result.mapping.levels[1]
    assert {d for d, f in lm.spatial_x if f > 1} == {"C"} and {d for d, f in lm.spatial_y if f > 1} == {"M"}


# ------------------------------------------------------------------------ errors


def _error(capsys, folder_or_file: Path) -> str:
    assert main(["targets", "import", str(folder_or_file)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err and captured.out == ""
    return err


def test_unknown_tag_names_file_and_key_path(tmp_path, capsys):
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    arch.write_text(arch.read_text().replace("- !Component # Weight scratchpad", "- !Storage # Weight scratchpad"))
    err = _error(capsys, folder)
    assert str(arch) in err and "architecture.nodes[6].nodes[1]" in err and "unknown tag !Storage" in err


def test_duplicate_keys_are_refused_but_yaml_merge_keys_work(tmp_path, capsys):
    """The exercises' components use `<<: *write_action` then override `name`: that is YAML, not a duplicate."""
    assert load_target(DATA / "eyeriss_like").pe_count == 168  # reads components/regfile.yaml
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    arch.write_text(arch.read_text().replace("        depth: 12\n", "        depth: 12\n        depth: 24\n", 1))
    assert "duplicate key 'depth'" in _error(capsys, folder)


def test_missing_ert_entry_names_the_component(tmp_path, capsys):
    folder = _design(tmp_path)
    ert = yaml.safe_load((folder / "ERT.yaml").read_text())
    ert["ERT"]["tables"] = [t for t in ert["ERT"]["tables"] if "weights_spad" not in t["name"]]
    (folder / "ERT.yaml").write_text(yaml.safe_dump(ert))
    err = _error(capsys, folder)
    assert "ERT.yaml" in err and "weights_spad" in err and "architecture.nodes[6].nodes[1]" in err


def test_missing_ert_says_accelergy_is_needed(tmp_path, capsys):
    folder = _design(tmp_path)
    (folder / "ERT.yaml").unlink()
    err = _error(capsys, folder)
    assert "component DRAM" in err and "Accelergy" in err and "ERT.yaml" in err


@pytest.mark.parametrize("old,new,where,what", [
    ("factors: [N=1, M=1, C=1, P=1, Q=1, R=1, S=1]", "factors: [N=1, X=1]",
     "architecture.nodes[6].nodes[0].constraints.temporal.factors[1]", "unknown dimension 'X'"),
    ("dataspace: {keep: [Weights]}", "dataspace: {keep: [Weights], bypass: [Weights]}",
     "architecture.nodes[6].nodes[1].constraints.dataspace", "both kept and bypassed"),
    ("factors: [N=1, C=1, P=1, R=1, S=1]", "factors: [N=1, C=16]",
     "architecture.nodes[4].constraints.spatial.factors", "C=16 exceeds the X fan-out 14"),
    ("permutation: [N, M, C, P, Q, R, S]", "permutation: [N, M, N]",
     "architecture.nodes[6].nodes[0].constraints.temporal.permutation", "appears twice"),
    ("dataspace: {keep: [Inputs]}", "dataspace: {keep: [Inputs]}\n        no_reuse: [Inputs]",
     "architecture.nodes[6].nodes[0].constraints.no_reuse", "unsupported constraint"),
    ("factors: [N=1, P=1, Q=1, R=1]", "factors: [N=one]",
     "architecture.nodes[5].constraints.spatial.factors[0]", "expected DIM=N"),
    ("factors: [N=1, P=1, Q=1, R=1]", "factors: [N=1, M<=4]",
     "architecture.nodes[5].constraints.spatial.factors[1]", "maximum factors are not supported"),
    ("factors: [N=1, P=1, Q=1, R=1]", "factors: [N=0]",
     "architecture.nodes[5].constraints.spatial.factors[0]", "factor 0"),
    ("permutation: [N, C, P, R, S, Q, M]\n        factors: [N=1, C=1, P=1, R=1, S=1]\n        split: 999",
     "permutation: [N, C]\n        factors: [N=1, C=1, P=1, R=1, S=1]\n        split: 7",
     "architecture.nodes[4].constraints.spatial.split", "7 falls among the dims the permutation does not list"),
])
def test_constraint_errors_name_file_and_key_path(tmp_path, capsys, old, new, where, what):
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    assert old in arch.read_text()
    arch.write_text(arch.read_text().replace(old, new, 1))
    err = _error(capsys, folder)
    assert err.startswith(f"quantloop: error: {arch}: {where}: ") or f"{arch}: {where}: " in err, err
    assert what in err


def test_target_flag_takes_a_design_folder_and_its_arch_file():
    by_folder = load_target(DATA / "simba_like")
    by_file = load_target(DATA / "simba_like" / "arch.yaml")
    assert by_folder.content_hash == by_file.content_hash and by_folder.pe_count == 256


def test_report_json_carries_the_target_area():
    from quantloop.backend.report import build_report

    arch = load_target(DATA / "simba_like")
    report = build_report([], arch, {"layers": []}, [], "cmd", [])
    assert report["target"]["area"] == target_area(arch).to_json()
    assert report["target"]["area"]["total_mm2"] == pytest.approx(target_area(load_target("simba")).total_mm2)


def test_component_mesh_is_a_fanout_of_the_level_above(tmp_path):
    """`spatial` on a component: that many copies below the storage level above it (no dummy level)."""
    folder = _design(tmp_path)
    arch_file = folder / "arch.yaml"
    text = arch_file.read_text().replace("    name: mac\n    class: intmac\n",
                                         "    name: mac\n    class: intmac\n    spatial: {meshX: 2}\n")
    arch_file.write_text(text)
    arch = load_target(folder)
    psum = arch.levels[-1]
    assert (psum.fanout_x, psum.fanout_y, psum.spatial_stages) == (2, 1, ())
    assert arch.pe_count == 336


def test_design_folders_on_the_target_path_are_found_by_name(tmp_path, monkeypatch, capsys):
    _design(tmp_path)
    monkeypatch.setenv("QUANTLOOP_TARGET_PATH", str(tmp_path))
    assert load_target("eyeriss_like").pe_count == 168
    assert main(["targets", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert "Timeloop design" in listed["eyeriss_like"]["source"]


def test_v03_mesh_that_disagrees_with_the_instance_count(tmp_path, capsys):
    folder = _design(tmp_path)
    v3 = folder / "timeloop_input_architecture.yaml"
    v3.write_text(v3.read_text().replace("- name: psum_spad[1..168]", "- name: psum_spad[1..100]"))
    err = _error(capsys, v3)
    assert f"{v3}: architecture.subtree[0].local[6].attributes: meshX × meshY = 168 but the name says 100" in err


@pytest.mark.parametrize("text,what", [
    ("a: &a [*a]\narchitecture: {nodes: *a}\n", "architecture.nodes[0]: a node needs a tag"),
    ("x0: &x0 !Hierarchical {nodes: []}\n"
     + "".join(f"x{i}: &x{i} !Hierarchical {{nodes: [{', '.join([f'*x{i - 1}'] * 10)}]}}\n" for i in range(1, 30))
     + "architecture: {nodes: [*x29]}\n", "more than 100000 nodes"),
    ("architecture: {nodes: [!Parallel {nodes: 3}]}\n", "architecture.nodes[0].nodes: expected a list of nodes"),
])
def test_hostile_architectures_fail_fast_in_one_line(tmp_path, capsys, text, what):
    folder = _design(tmp_path)
    (folder / "arch.yaml").write_text(text)
    assert what in _error(capsys, folder)


def test_editing_the_ert_beside_an_arch_file_reloads_the_target(tmp_path):
    folder = _design(tmp_path)
    before = load_target(folder / "arch.yaml").levels[-1].read_energy
    ert = folder / "ERT.yaml"
    ert.write_text(ert.read_text().replace("0.492024", "0.5"))
    os.utime(ert, (ert.stat().st_atime, ert.stat().st_mtime + 10))
    assert (before, load_target(folder / "arch.yaml").levels[-1].read_energy) == (0.492024, 0.5)


#: Timeloop-valid constraint keys quantloop does not model: refused, and listed in both READMEs' limits.
UNMODELLED_KEYS = ("no_reuse", "no_iteration_over_dataspaces", "maximize_dims", "default_max_factor",
                   "default_min_factor")


@pytest.mark.parametrize("key", UNMODELLED_KEYS)
def test_unmodelled_timeloop_constraint_keys_are_refused(tmp_path, capsys, key):
    folder = _design(tmp_path)
    arch = folder / "arch.yaml"
    old = "dataspace: {keep: [Inputs]}"
    arch.write_text(arch.read_text().replace(old, f"{old}\n        {key}: [Inputs]", 1))
    err = _error(capsys, folder)
    assert f"constraints.{key}" in err and "unsupported constraint" in err


def test_limits_list_every_refused_timeloop_construct():
    """What a valid Timeloop design may say but quantloop refuses is listed in the README's Limits and in
    targets/README.md: max / min factors, factor 0, a split among unlisted dims, the unmodelled constraint
    keys and the attributes quantloop takes only at Timeloop's defaults (read from the code)."""
    from quantloop.targets.timeloop_design import design

    root = Path(__file__).parent.parent
    limits = (root / "README.md").read_text().split("## Limits", 1)[1].split("\n## ", 1)[0]
    targets = (root / "targets" / "README.md").read_text()
    needed = ["M<=4", "C>=2", "factor 0", "split", "Accelergy", *UNMODELLED_KEYS, *design._DEFAULT_ONLY]
    for text, name in ((limits, "README.md Limits"), (targets, "targets/README.md")):
        missing = [word for word in needed if word not in text]
        assert not missing, f"{name} does not list {missing}"
