"""Target schema, built-in targets, registry and the plug-in paths."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from quantloop.targets.template import resolve  # the built-in is a template (parameters, PE types)

from quantloop.cli import main
from quantloop.errors import QuantloopError
from quantloop.targets import registry
from quantloop.targets.registry import list_targets, load_target
from quantloop.targets.schema import load_arch_file, parse_spec

BUILTIN = Path(registry.__file__).parent


def test_builtin_eyeriss_geometry_matches_timeloop():
    a = load_target("eyeriss")
    caps = {l.name: l.capacity_words for l in a.levels}
    assert caps == {"DRAM": None, "shared_glb": 131072, "ifmap_spad": 24, "weights_spad": 384, "psum_spad": 16}
    assert [l.block_size for l in a.levels] == [8, 8, 2, 2, 1]
    assert a.pe_count == 168 and a.levels[1].fanout_x == 14 and a.levels[1].fanout_y == 12
    assert a.levels[1].spatial_x_dims == frozenset("GMQ")
    assert a.levels[1].spatial_y_dims == frozenset("GCMS")


def test_builtin_simba_geometry_matches_timeloop():
    a = load_target("simba")
    caps = {l.name: l.capacity_words for l in a.levels}
    assert caps["PEWeightRegs"] == 1 and caps["GlobalBuffer"] == 65536 and caps["PEAccuBuffer"] == 128
    regs = a.levels[a.level_index("PEWeightRegs")]
    assert regs.instances == 256 and regs.cluster_size == 64 and regs.clusters == 4
    assert a.pe_count == 256


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(QuantloopError, match=r"unknown \(known targets: .*eyeriss.*simba"):
        load_target("eyeris")


def test_content_hash_is_stable_and_tracks_content(tmp_path):
    text = (BUILTIN / "eyeriss.yaml").read_text()
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("# a comment\n" + text)
    b.write_text(text.replace("glb_kib: {default: 128,", "glb_kib: {default: 64,"))
    assert load_arch_file(a).content_hash == load_target("eyeriss").content_hash
    assert load_arch_file(b).content_hash != load_target("eyeriss").content_hash


def _spec(**level_changes) -> dict:
    spec = resolve(yaml.safe_load((BUILTIN / "eyeriss.yaml").read_text()), {}, "eyeriss")
    spec["levels"][1].update(level_changes)
    return spec


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"wordbits": 8}, r"^t\.yaml: levels\.1\.wordbits: unknown key \(misspelled\?\)$"),
        ({"word_bits": "eight"}, r"^t\.yaml: levels\.1\.word_bits: .*integer"),
        ({"width": 4}, r"^t\.yaml: levels\.1: level too small to hold anything"),
        ({"fanout": {"x": 14, "y": 12, "stages": [{"name": "a", "x": 7}]}}, r"levels\.1\.fanout: .*stages multiply"),
    ],
)
def test_schema_errors_are_one_line_with_the_key_path(change, pattern):
    with pytest.raises(QuantloopError, match=pattern) as info:
        parse_spec(_spec(**change), "t.yaml")
    assert "\n" not in str(info.value)


def test_missing_key_is_named():
    spec = _spec()
    del spec["levels"][2]["energy_pj"]
    with pytest.raises(QuantloopError, match=r"^t\.yaml: levels\.2\.energy_pj: required key is missing$"):
        parse_spec(spec, "t.yaml")


def test_mac_energy_formula():
    c = load_target("eyeriss").compute
    assert c.mac_energy(8, 8, 16) == pytest.approx(c.energy)
    assert c.mac_energy(None, None, None) == pytest.approx(c.energy)
    # E = E_ref (f (w a)/(w_ref a_ref) + (1 - f) acc/acc_ref), acc = max(o, w + a)
    assert c.mac_energy(4, 8, 8) == pytest.approx(c.energy * (0.8 * 0.5 + 0.2 * 12 / 16))
    assert c.mac_energy(4, 4, 8) < c.mac_energy(4, 8, 8) < c.mac_energy(8, 8, 16)


def test_fixed_and_shift_add_mac_energy(tmp_path):
    spec = resolve(yaml.safe_load((BUILTIN / "eyeriss.yaml").read_text()), {}, "eyeriss")
    spec["compute"]["shift_add_energy_pj"] = {"pot": 0.3}
    arch = load_arch_file(_write(tmp_path / "e.yaml", spec))
    assert arch.compute.mac_energy(4, 8, 8, "pot") == 0.3
    assert arch.compute.mac_energy(2, 8, 8, "pot") == 0.3
    assert arch.compute.mac_energy(4, 8, 8, "pot2") != 0.3  # no LightPE-2 declared: multiplier formula
    spec["compute"]["energy_mode"] = "fixed"
    fixed = load_arch_file(_write(tmp_path / "f.yaml", spec))
    assert fixed.compute.mac_energy(2, 2, 8) == fixed.compute.energy


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


SYSTOLIC = textwrap.dedent(
    """
    name: systolic16
    description: 16x16 weight-stationary systolic array (test plug-in)
    levels:
      - name: DRAM
        word_bits: 8
        width: 64
        energy_pj: {read: 200.0, write: 200.0}
      - name: SRAM
        word_bits: 8
        width: 128
        depth: 4096
        energy_pj: {read: 20.0, write: 22.0}
        bandwidth: {read: 32, write: 32}
        fanout: {x: 16, y: 16}
        constraints:
          spatial_x: {factors: {N: 1, P: 1, Q: 1, R: 1, S: 1, G: 1}}
          spatial_y: {factors: {N: 1, P: 1, Q: 1, R: 1, S: 1, G: 1}}
      - name: WeightReg
        word_bits: 8
        depth: 1
        energy_pj: {read: 0.05, write: 0.06}
        constraints:
          dataspace: {keep: [Weights], bypass: [Inputs, Outputs]}
    compute:
      energy_pj: 0.5
    """
)

SYSTOLIC_MAP = textwrap.dedent(
    """
    mapping:
      - {target: WeightReg, type: datatype, keep: [Weights], bypass: [Inputs, Outputs]}
      - {target: SRAM, type: datatype, keep: [Inputs, Outputs], bypass: [Weights]}
      - {target: DRAM, type: datatype, keep: [Weights, Inputs, Outputs], bypass: []}
      - {target: WeightReg, type: temporal, factors: C1 M1 R1 S1 N1 P14 Q14 G1, permutation: PQCMRSNG}
      - {target: SRAM, type: spatial, factors: C16 M16 R1 S1 N1 P1 Q1 G1, permutation: CMRSNPQG, split: 1}
      - {target: SRAM, type: temporal, factors: C2 M1 R1 S1 N1 P2 Q2 G1, permutation: PQCMRSNG}
      - {target: DRAM, type: temporal, factors: C1 M4 R1 S1 N1 P1 Q1 G1, permutation: MCRSNPQG}
    """
)

PROBLEM = textwrap.dedent(
    """
    problem:
      instance: {N: 1, G: 1, C: 32, M: 64, P: 28, Q: 28, R: 1, S: 1}
    """
)


def test_plugin_target_folder_listed_and_costed(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "targets"
    folder.mkdir()
    target = _write(folder / "systolic16.yaml", SYSTOLIC)
    monkeypatch.setenv("QUANTLOOP_TARGET_PATH", str(folder))
    assert "systolic16" in list_targets()
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "systolic16" in out and "256" in out and "QUANTLOOP_TARGET_PATH" in out
    problem = _write(tmp_path / "p.yaml", PROBLEM)
    mapping = _write(tmp_path / "m.yaml", SYSTOLIC_MAP)
    assert main(["cost", "--target", str(target), "--problem", str(problem), "--mapping", str(mapping), "--json"]) == 0
    import json

    got = json.loads(capsys.readouterr().out)
    assert got["macs"] == 32 * 64 * 28 * 28
    assert got["cycles"] == 4 * 2 * 2 * 2 * 14 * 14  # compute-bound, 256 MACs busy
    assert got["utilization"] == pytest.approx(1.0)
    regs = {(r["level"], r["dataspace"]): r for r in got["per_level"]}
    assert regs[("WeightReg", "Weights")]["reads_per_instance"] == 4 * 2 * 2 * 2 * 14 * 14
    # by name too
    assert main(["cost", "--target", "systolic16", "--problem", str(problem), "--mapping", str(mapping), "--json"]) == 0


def test_entry_point_target(tmp_path, monkeypatch):
    _write(tmp_path / "sys.yaml", SYSTOLIC.replace("name: systolic16", "name: ep16"))
    module = tmp_path / "ql_plugin_mod.py"
    module.write_text(f"def target_path():\n    return {str(tmp_path / 'sys.yaml')!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="ep16", value="ql_plugin_mod:target_path", group="quantloop.targets")

    def fake_entry_points(group=None, **_):
        return [ep] if group == "quantloop.targets" else []

    monkeypatch.setattr(registry.metadata, "entry_points", fake_entry_points)
    assert "ep16" in list_targets()
    assert load_target("ep16").pe_count == 256
    sys.modules.pop("ql_plugin_mod", None)


def test_target_path_must_be_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTLOOP_TARGET_PATH", str(tmp_path / "nope"))
    with pytest.raises(QuantloopError, match="QUANTLOOP_TARGET_PATH: .* is not a folder"):
        list_targets()


@pytest.mark.parametrize("name", ["eyeriss_paper", "simba_paper"])
def test_paper_targets_use_16_bit_words_and_a_fixed_mac_energy(name):
    """The configuration of the core paper's code: 16-bit words everywhere, MAC energy independent of the bits."""
    a = load_target(name)
    assert {lvl.word_bits for lvl in a.levels} == {16}
    assert a.compute.energy_mode == "fixed"
    assert a.compute.mac_energy(2, 2, 4) == a.compute.mac_energy(8, 8, 16) == pytest.approx(0.8975)


def test_paper_targets_buffer_sizes():
    eyeriss = {l.name: l.capacity_words for l in load_target("eyeriss_paper").levels}
    assert eyeriss == {"DRAM": None, "shared_glb": 100 * 1024 // 2, "ifmap_spad": 12, "weights_spad": 224, "psum_spad": 24}
    assert load_target("eyeriss_paper").pe_count == 168
    simba = load_target("simba_paper")
    assert simba.levels[simba.level_index("GlobalBuffer")].capacity_words * 2 == 64 * 1024
    assert simba.levels[simba.level_index("PEInputBuffer")].instances == 16


@pytest.mark.parametrize("paper, reference, node", [
    ("eyeriss_paper", "eyeriss", 535.875 / 803.812),  # 65 -> 45 nm: the intmac's ART area at 45 nm / at 65 nm
    ("simba_paper", "simba", 1.0),  # both 45 nm
])
def test_paper_targets_declare_area_per_bit_of_their_reference_and_a_clock(paper, reference, node):
    """The paper configurations' areas are the reference designs' ART areas per bit (scaled to 45 nm) at
    their own sizes, so they have a total area, a clock and performance per area (issue 15)."""
    from quantloop.targets.area import target_area

    arch, ref = load_target(paper), load_target(reference)
    assert arch.compute.clock_mhz == 288 and target_area(arch).total_mm2 is not None
    assert arch.compute.area_um2 == pytest.approx(ref.compute.area_um2 * node, rel=1e-5)

    def per_bit(level):
        return level.area_um2 / (level.capacity_words * level.word_bits * level.cluster_size)

    ref_levels = {lvl.name: lvl for lvl in ref.levels}
    for lvl in arch.levels[1:]:  # DRAM has no area
        assert per_bit(lvl) == pytest.approx(per_bit(ref_levels[lvl.name]) * node, rel=1e-4), lvl.name
