"""PE types as target data, parameterised targets, latency and performance per area (issue 15)."""

from __future__ import annotations

import json

import pytest

from quantloop.costmodel.checks import check_bits
from quantloop.problem import Bits
from quantloop.errors import QuantloopError
from quantloop.targets.area import target_area
from quantloop.targets.ppa import ppa
from quantloop.targets.registry import list_targets, load_target


def test_builtin_pe_type_variants_are_listed_and_differ_only_in_the_pe():
    names = list_targets()
    for name in ("eyeriss_lightpe1", "eyeriss_lightpe2", "eyeriss_int16", "eyeriss_hybrid", "simba_lightpe1", "simba_lightpe2"):
        assert name in names
    base, lp1 = load_target("eyeriss"), load_target("eyeriss_lightpe1")
    assert base.compute.pe_type == "int8" and base.compute.clock_mhz == 200
    assert lp1.compute.pe_type == "lightpe1" and lp1.compute.clock_mhz == 315
    assert lp1.levels == base.levels and lp1.content_hash != base.content_hash
    # a shift PE's energy does not scale with the bits; it is cheaper and smaller than the multiplier MAC
    assert lp1.compute.mac_energy(4, 8, 8, "pot") == lp1.compute.mac_energy(2, 8, 16, "pot") < base.compute.mac_energy(8, 8, 8)
    assert target_area(lp1).compute < target_area(base).compute


def test_a_hybrid_pe_runs_int_and_pot_layers_and_shifts_are_cheaper():
    hybrid = load_target("eyeriss_hybrid").compute
    assert hybrid.unsupported(8, "int") is None and hybrid.unsupported(4, "pot") is None
    assert hybrid.unsupported(8, "pot2") is not None
    assert hybrid.mac_energy(4, 8, 8, "pot") == 0.4454 < hybrid.mac_energy(8, 8, 8, "int")
    assert hybrid.area_um2 == pytest.approx(803.812 + 308.6)  # both datapaths in every PE


def test_the_pes_decide_which_weights_they_execute():
    lp1, lp2, int16 = load_target("eyeriss_lightpe1"), load_target("eyeriss_lightpe2"), load_target("eyeriss_int16")
    check_bits(lp1, Bits(4, 8, 8, scheme="pot"))
    check_bits(lp2, Bits(8, 8, 8, scheme="pot2"))
    check_bits(int16, Bits(16, 16, 16))
    with pytest.raises(QuantloopError, match="lightpe1 PEs execute pot weights, not int"):
        check_bits(lp1, Bits(4, 8, 8))
    with pytest.raises(QuantloopError, match="at most 4 bits, not 8"):
        check_bits(lp1, Bits(8, 8, 8, scheme="pot"))
    with pytest.raises(QuantloopError, match="wider than the 8-bit word"):
        check_bits(load_target("eyeriss"), Bits(16, 16, 16))


def test_parameters_set_the_geometry_and_area_scales_with_the_buffer():
    base = load_target("eyeriss")
    big = load_target("eyeriss?pe=16x16&glb_kib=256&pe_type=lightpe1")
    assert big.name == "eyeriss?glb_kib=256&pe=16x16&pe_type=lightpe1"
    assert big.pe_count == 256 and big.levels[1].fanout_x == 16 and big.levels[1].fanout_y == 16
    assert big.levels[1].capacity_words == 2 * base.levels[1].capacity_words
    assert target_area(big).levels["shared_glb"] == pytest.approx(2 * target_area(base).levels["shared_glb"])
    # the defaults written out give the built-in itself
    same = load_target("eyeriss?pe=14x12&glb_kib=128&pe_type=int8")
    assert same.levels == base.levels and same.compute == base.compute
    # int16 PEs widen every word (and the partial sums) to 16 / 32 bits
    int16 = load_target("eyeriss_int16")
    assert [lvl.word_bits for lvl in int16.levels] == [16, 16, 16, 16, 32]


@pytest.mark.parametrize("spec,message", [
    ("eyeriss?pe=0x4", "parameter pe: 0x4 is below the minimum 1"),
    ("eyeriss?pe=16", "parameter pe: '16' is not ROWSxCOLS"),
    ("eyeriss?glb_kib=lots", "parameter glb_kib: 'lots' is not an integer"),
    ("eyeriss?pe_type=fp16", "parameter pe_type: 'fp16' is not one of int8, int16, lightpe1, lightpe2, hybrid, fp32"),
    ("eyeriss?bogus=1", "unknown parameter bogus"),
    ("eyeriss?pe=2x2&pe=4x4", "parameter pe given twice"),
    ("eyeriss?pe", "expected NAME?key=value"),
    ("simba?pe=2x2", "unknown parameter pe (known: pe_type)"),
    ("eyeriss?psum_spad=1&pe_type=int16", None),  # valid: one 32-bit psum word
])
def test_invalid_parameters_are_one_line(spec, message):
    if message is None:
        assert load_target(spec).levels[-1].capacity_words == 1
        return
    with pytest.raises(QuantloopError) as err:
        load_target(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_invalid_combination_is_the_schemas_one_line(tmp_path):
    # parameters within their declared ranges can still build an invalid design: the schema says so in one line
    with pytest.raises(QuantloopError, match=r"e\.yaml\?glb_kib=0: levels\.1\.depth: Input should be greater than") as err:
        from quantloop.targets.schema import load_spec_file
        from quantloop.targets.registry import BUILTIN_DIR

        text = (BUILTIN_DIR / "eyeriss.yaml").read_text().replace("glb_kib: {default: 128, min: 1,", "glb_kib: {default: 128, min: 0,")
        path = tmp_path / "e.yaml"
        path.write_text(text)
        load_spec_file(path, {"glb_kib": "0"})
    assert "\n" not in str(err.value)


def test_ppa_latency_through_the_clock_and_perf_per_area():
    arch = load_target("eyeriss_lightpe1")
    p = ppa(arch, energy_pj=2e6, cycles=315_000, macs=10**8)
    assert p.latency_s == pytest.approx(1e-3)
    assert p.area_mm2 == pytest.approx(target_area(arch).total_mm2)
    assert p.perf_per_area == pytest.approx(1e8 / 1e-3 / 1e9 / p.area_mm2)
    assert load_target("eyeriss").seconds(200) == pytest.approx(1e-6)  # 200 MHz


def test_compile_reports_latency_area_and_perf_per_area(tmp_path):
    from quantloop import compile as compile_model

    out = tmp_path / "build"
    result = compile_model("zoo:cnn_digits", target="eyeriss_lightpe1", bits="w4a8", weight_scheme="pot", output_dir=out)
    report = json.loads((out / "report.json").read_text())
    total = report["total"]
    assert report["target"]["pe_type"] == "lightpe1" and report["target"]["clock_mhz"] == 315
    assert total["latency_s"] == pytest.approx(total["cycles"] / 315e6)
    assert total["area_mm2"] == pytest.approx(report["target"]["area"]["total_mm2"])
    assert total["perf_per_area_gmacs_per_mm2"] == pytest.approx(total["macs"] / total["latency_s"] / 1e9 / total["area_mm2"])
    assert result.to_json()["total"]["ppa"]["latency_s"] == pytest.approx(total["latency_s"])
    assert "GMAC/s/mm²" in result.table(width=300)
    with pytest.raises(QuantloopError, match="lightpe1 PEs execute pot weights, not int"):
        compile_model("zoo:cnn_digits", target="eyeriss_lightpe1", bits="w4a8")


def test_bits_file_chooses_the_weight_scheme_per_layer(tmp_path):
    """The scheme of each layer flows into its types, its cost, its packed weights and the fake-quant model."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from quantloop import compile as compile_model
    from quantloop.backend.weights import unpack
    from quantloop.runtime.fakequant_export import export_fakequant_onnx

    bits = tmp_path / "bits.json"
    bits.write_text(json.dumps({"/0/Conv": {"weights": 4, "scheme": "pot"}, "/4/Conv": {"scheme": "pot2"}}))
    out = tmp_path / "build"
    result = compile_model("zoo:cnn_digits", target="eyeriss", bits_file=str(bits), data="zoo:digits-calib", output_dir=out)
    schemes = {layer["name"]: layer["bits"]["scheme"] for layer in json.loads((out / "report.json").read_text())["layers"]}
    assert schemes == {"/0/Conv": "pot", "/4/Conv": "pot2", "/8/Conv": "int", "/13/Gemm": "int"}
    manifest = json.loads((out / "weights.json").read_text())
    assert {e["name"]: (e["scheme"], e["bits"]) for e in manifest["layers"]}["/0/Conv"] == ("pot", 4)
    # the fake-quant model's first conv weights are the packed pot codes' values: ± scale · 2^-k per channel
    decoded = unpack(out, dequantize=True)["/0/Conv"]
    model = export_fakequant_onnx(result.qnn_module)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    first = [v for v in inits.values() if v.shape == decoded.shape]
    assert any(np.array_equal(v, decoded) for v in first)
    per_channel = np.abs(decoded).reshape(decoded.shape[0], -1)
    for row in per_channel:
        nonzero = row[row > 0]
        ratios = np.log2(nonzero.max() / nonzero)
        assert np.allclose(ratios, np.round(ratios), atol=1e-5)  # powers of two of the channel's scale
    assert isinstance(model, onnx.ModelProto)


def test_a_layer_scheme_the_pes_cannot_run_names_the_layer(tmp_path):
    from quantloop import compile as compile_model

    bits = tmp_path / "bits.json"
    bits.write_text(json.dumps({"/0/Conv": {"weights": 4, "scheme": "pot"}}))
    with pytest.raises(QuantloopError, match=r"layer '/4/Conv'.*lightpe1 PEs execute pot weights, not int"):
        compile_model("zoo:cnn_digits", target="eyeriss_lightpe1", bits="w4a8", bits_file=str(bits))
    bits.write_text(json.dumps({"/0/Conv": {"scheme": "log"}}))
    with pytest.raises(QuantloopError, match="layer '/0/Conv' scheme must be one of int, pot, pot2, got 'log'"):
        compile_model("zoo:cnn_digits", target="eyeriss", bits_file=str(bits))


def test_the_search_offers_the_schemes_and_widths_the_pes_execute():
    from quantloop.passes.search.engine import check_widths, target_schemes

    assert target_schemes(load_target("eyeriss")) == ("int",)  # a multiplier with no shift path: int only, as before
    assert target_schemes(load_target("eyeriss_hybrid")) == ("int", "pot")
    for shifter in ("eyeriss_lightpe1", "eyeriss_lightpe2"):
        with pytest.raises(QuantloopError, match="execute only pot2? weights, and the search measures against uniform w8a8 int"):
            target_schemes(load_target(shifter))
    check_widths(load_target("eyeriss_hybrid"), [2, 8])
    with pytest.raises(QuantloopError, match="lightpe1 PEs of target .* execute weights of at most 4 bits"):
        check_widths(load_target("eyeriss_lightpe1"), [2, 8])


@pytest.mark.parametrize("expression,message", [
    ("${'x' * 1000000000}", "arithmetic needs numbers"),
    ("${__import__('os')}", "is not allowed"),
    ("${2 ** 4096}", "is not allowed"),
    ("${glb_kib // 0}", "division or modulo by zero"),
    ("${nothing}", "unknown name 'nothing'"),
])
def test_template_expressions_are_arithmetic_only(tmp_path, expression, message):
    from quantloop.targets.registry import BUILTIN_DIR
    from quantloop.targets.schema import load_spec_file

    text = (BUILTIN_DIR / "eyeriss.yaml").read_text().replace("depth: ${ifmap_spad}", f'depth: "{expression}"')
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(QuantloopError, match=message) as err:
        load_spec_file(path)
    assert "\n" not in str(err.value) and "levels[2].depth" in str(err.value)
