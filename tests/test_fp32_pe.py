"""The FP32 baseline PE (issue 15, item 1): layers left in float32 on float PEs, costed as float MACs, stored as
raw float32 weights that reproduce the float model in onnxruntime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantloop import bits
from quantloop.errors import QuantloopError
from quantloop.problem import Bits
from quantloop.targets.registry import list_targets, load_target

FP32_MAC_PJ = 20.4882  # eyeriss' int8 intmac (1.11349 pJ) x 18.4, Horowitz's FP32 / int8 MAC ratio


def _tiny_float_model(seed: int = 0) -> onnx.ModelProto:
    """conv 1->4 3x3 + bias, relu, conv 4->4 3x3 pad 1, flatten, gemm -> 3: three layers that map in a moment."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_float_is_a_scheme_of_32_bits_with_a_32_bit_accumulator():
    assert bits.legal_widths(bits.FLOAT_SCHEME) == bits.FLOAT_BITS == (32,)
    assert bits.is_float_bits(bits.parse_bits("w32a32")) and bits.is_float_bits(bits.parse_bits("w32a32o32"))
    assert not bits.is_float_bits(bits.parse_bits("w32a8")) and not bits.is_float_bits(bits.parse_bits("w8a8"))
    assert Bits.parse("w32a32", scheme="float").accumulator_bits == 32  # not max(o, w + a) = 64
    assert Bits.parse("w8a8").accumulator_bits == 16
    assert Bits.parse("w32a32") == Bits.parse("w32a32", scheme="float") == Bits(32, 32, 32, scheme="float")
    with pytest.raises(QuantloopError, match="32-bit values are float32; scheme pot does not apply"):
        Bits.parse("w32a32", scheme="pot")
    assert "float" not in bits.SCHEMES  # weight quantization schemes: --scheme and bits files stay int/pot/pot2
    with pytest.raises(QuantloopError, match="32 bits is not a legal bit-width"):
        bits.check_width(32, "x")  # no 32-bit integers


def test_eyeriss_fp32_holds_one_32_bit_value_per_word_and_costs_a_fixed_float_mac():
    assert "eyeriss_fp32" in list_targets()
    arch = load_target("eyeriss_fp32")
    assert arch.compute.float_only and arch.compute.pe_type == "fp32"
    assert [lvl.word_bits for lvl in arch.levels] == [32] * 5  # psum_spad at float32, not 2 x 32
    for b in (Bits.parse("w32a32", scheme="float"), Bits()):
        assert arch.compute.mac_energy(b.weights, b.inputs, b.outputs, b.scheme) == FP32_MAC_PJ
    assert arch.compute.clock_mhz == 186 and arch.compute.area_um2 == 27371.1
    base = load_target("eyeriss")  # the default design is unchanged: 16-bit psums of int8 PEs
    assert base.levels[-1].word_bits == 16 and not base.compute.float_only
    # parameterised: the array size and buffers still apply
    small = load_target("eyeriss?pe=8x8&glb_kib=64&pe_type=fp32")
    assert small.pe_count == 64 and small.levels[1].capacity_bits == 64 * 1024 * 8


def test_the_pes_refuse_the_other_kind_of_layer():
    from quantloop.costmodel.checks import check_bits

    with pytest.raises(QuantloopError, match="the fp32 PEs execute float weights, not int"):
        check_bits(load_target("eyeriss_fp32"), Bits.parse("w8a8"))
    with pytest.raises(QuantloopError, match="float Weights are 32 bits, not 8"):
        check_bits(load_target("eyeriss_fp32"), Bits.parse("w8a8", scheme="float"))
    with pytest.raises(QuantloopError, match="the int8 PEs execute int/pot/pot2 weights, not float"):
        check_bits(load_target("eyeriss?pe_type=int8&pe=4x4"), Bits(32, 32, 32, scheme="float"))


def test_accel_bits_prints_float_operands_and_refuses_a_mixed_layer():
    from xdsl.utils.exceptions import VerifyException

    from quantloop.ir.accel import BitsAttr, LayerBits, OperandBits

    f = OperandBits(32, "float")
    attr = BitsAttr(LayerBits(f, f, f))
    attr.verify()
    assert attr.to_costmodel() == Bits(32, 32, 32, scheme="float")
    from quantloop.ir import make_context
    from xdsl.parser import Parser

    text = "#accel.bits<W = 32 : float, I = 32 : float, O = 32 : float>"
    assert Parser(make_context(), text).parse_attribute() == attr
    with pytest.raises(VerifyException, match="not a legal float width"):
        BitsAttr(LayerBits(OperandBits(16, "float"), f, f)).verify()
    with pytest.raises(VerifyException, match="all in float"):
        BitsAttr(LayerBits(OperandBits(8), f, f)).verify()


def test_accel_lower_keeps_float_layers_only_on_float_pes(tmp_path):
    from quantloop.frontend import import_onnx
    from quantloop.ir import make_context
    from quantloop.passes.pipeline import run_pipeline

    module = import_onnx(_tiny_float_model())
    with pytest.raises(QuantloopError, match="not a quantized type; run qnn-assign-bits.*do not execute float"):
        run_pipeline(module.clone(), "qnn-canonicalize,accel-lower{target=eyeriss}", make_context())
    lowered = run_pipeline(module, "qnn-canonicalize,accel-lower{target=eyeriss_fp32}", make_context())
    from quantloop.ir.accel import layers

    assert [str(op.bits.data.weights) for op in layers(lowered)] == ["32 : float"] * 3


def test_raw_float32_packing_is_bit_exact():
    from quantloop.backend.packing import pack_float32, unpack_float32

    x = np.array([1.5, -0.0, np.nan, 3e-40, -7.25, np.inf, 1e38], np.float32)
    for word_bits, size in ((32, 28), (64, 32), (48, 42)):
        data = pack_float32(x, word_bits)
        assert len(data) == size
        assert np.array_equal(unpack_float32(data, x.size, word_bits).view(np.int32), x.view(np.int32))


def test_tiled_float_weights_go_through_pack_float32_bit_for_bit():
    """`backend.weights.pack_tiles` / `unpack_tiles` store float weights as `pack_float32` does (the writer and
    the reader of weights.bin share it): -0.0, NaN and subnormals survive, and the padding is +0.0."""
    from quantloop.backend.packing import pack_float32
    from quantloop.backend.weights import TilePlan, pack_tiles, unpack_tiles

    w = np.array([1.5, -0.0, np.nan, 3e-40, -7.25, np.inf], np.float32).reshape(2, 3, 1, 1)
    one_tile = TilePlan.from_nest(("M", "C", "R", "S"), (2, 3, 1, 1), [])
    assert pack_tiles(w, one_tile, 32, 32, True, "float") == pack_float32(w, 32)
    plan = TilePlan.from_nest(("M", "C", "R", "S"), (2, 3, 1, 1), [("M", 2)])  # 2 tiles of 3, padded to 2 words
    data = pack_tiles(w, plan, 32, 64, True, "float")
    assert len(data) == 2 * 2 * 8
    back = unpack_tiles(data, plan, 32, 64, True, "float")
    assert back.dtype == np.float32 and np.array_equal(back.view(np.int32), w.view(np.int32))


def test_compile_on_fp32_maps_float_layers_and_writes_float32_weights_that_reproduce_the_model(tmp_path):
    import onnxruntime as ort

    from quantloop import compile as compile_model
    from quantloop.backend.weights import unpack, unpack_biases

    model = _tiny_float_model()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    result = compile_model(str(path), target="eyeriss_fp32", output_dir=out, emit="weights,onnx,report,schedule",
                           cache_dir=str(tmp_path / "cache"))
    assert [layer.bits for layer in result.layers] == ["w32f i32f o32f"] * 3
    for layer in result.layers:  # every layer costs float MACs
        assert {ds: b["scheme"] for ds, b in layer.operand_bits.items()} == dict.fromkeys(("Weights", "Inputs", "Outputs"), "float")
        assert layer.energy_pj_by_level["MAC"]["compute"] == pytest.approx(layer.macs * FP32_MAC_PJ)
    import jsonschema

    from quantloop.backend.schedule import load_schema

    schedule = json.loads((out / "schedule.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(schedule)  # "float" is a scheme of the schema
    report = json.loads((out / "report.json").read_text())
    assert report["total"]["energy_by_level_pj"]["MAC"] == pytest.approx(report["total"]["macs"] * FP32_MAC_PJ)
    assert report["target"]["pe_type"] == "fp32"

    manifest = json.loads((out / "weights.json").read_text())
    assert {(e["bits"], e["scheme"], e["values_per_word"], len(e["scales"])) for e in manifest["layers"]} == {
        (32, "float", 1, 0)}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights, biases = unpack(out), unpack_biases(out)
    for name, key in (("conv1", "w1"), ("conv2", "w2"), ("fc", "w3")):
        assert weights[name].dtype == np.float32 and np.array_equal(weights[name], inits[key])
    assert np.array_equal(biases["conv1"], inits["b1"]) and np.array_equal(biases["fc"], inits["b3"])
    assert np.array_equal(unpack(out, dequantize=True)["conv2"], inits["w2"])

    x = np.random.default_rng(1).standard_normal((1, 1, 6, 6)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"x": x})[0]
    assert np.array_equal(run(onnx.load(out / "model.quant.onnx")), run(model))


@pytest.mark.parametrize("flags, what", [
    (["--bits", "w4a8"], "--bits w4a8 does not apply"),
    (["--scheme", "pot"], "--scheme pot does not apply"),
    (["--data", "zoo:digits-calib"], "--data zoo:digits-calib does not apply: there is nothing to calibrate"),
    (["--search", "--max-accuracy-drop", "1", "--val-data", "zoo:digits-val"], "--search does not apply"),
    (["--synergy"], "--synergy does not apply"),
])
def test_quantization_options_on_float_pes_are_one_line_errors(tmp_path, capsys, flags, what):
    from quantloop.cli import main

    path = tmp_path / "tiny.onnx"
    path.write_bytes(_tiny_float_model().SerializeToString())
    out = tmp_path / "out"
    code = main(["compile", str(path), "--target", "eyeriss_fp32", "-o", str(out), "--no-cache", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len([line for line in err if "error" in line]) == 1 and what in err[-1] and "eyeriss" in err[-1]


def test_explore_sweeps_fp32_next_to_integer_pes(tmp_path):
    from quantloop.explore.evaluate import EvalSettings
    from quantloop.explore.space import native_bits
    from quantloop.explore.sweep import run_sweep

    assert native_bits(load_target("eyeriss_fp32")) == ("w32a32", "float")
    path = tmp_path / "tiny.onnx"
    model = _tiny_float_model()
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(2).standard_normal((64, 1, 6, 6)).astype(np.float32)
    import onnxruntime as ort

    y_float = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[:1]})[0]
    assert y_float.shape == (1, 3)
    logits = np.concatenate([ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    y = logits.argmax(axis=1)
    y[::4] = (y[::4] + 1) % 3  # the float model is right on 75 % exactly
    np.savez(tmp_path / "val.npz", x=x, y=y)
    np.savez(tmp_path / "calib.npz", x=x)
    settings = EvalSettings(model=str(path), data=str(tmp_path / "calib.npz"), val_data=str(tmp_path / "val.npz"),
                            cache_dir=str(tmp_path / "cache"))
    doc = run_sweep(settings, "eyeriss?pe=4x4&glb_kib=16", {"pe_type": ["int8", "fp32"]})
    rows = {r["pe_type"]: r for r in doc["points"]}
    assert set(rows) == {"int8", "fp32"} and not doc["skipped"]
    fp32 = rows["fp32"]
    assert (fp32["bits"], fp32["scheme"]) == ("w32a32", "float")
    assert fp32["accuracy"] == 0.75  # the float model's own accuracy
    assert fp32["energy_pj"] > rows["int8"]["energy_pj"] and fp32["area_mm2"] > rows["int8"]["area_mm2"]


@pytest.mark.slow
def test_cnn_digits_on_eyeriss_fp32_keeps_the_float_models_accuracy_and_agrees_with_timeloop(
        timeloop, monkeypatch, tmp_path):
    from quantloop import compile as compile_model
    from quantloop.frontend.zoo import load_zoo_model
    from quantloop.runtime.accuracy import top1
    from quantloop.runtime.dataset import load_dataset

    monkeypatch.setenv("QUANTLOOP_TIMELOOP", timeloop.command[0])
    out = tmp_path / "out"
    result = compile_model("zoo:cnn_digits", target="eyeriss_fp32", output_dir=out, emit="weights,onnx,report,timeloop",
                           cache_dir=str(tmp_path / "cache"), verify_timeloop=True)
    assert {layer.bits for layer in result.layers} == {"w32f i32f o32f"}
    assert len(result.timeloop_check) == 4 and not [c.name for c in result.timeloop_check if c.flagged]
    x, y = load_dataset("zoo:digits-test")
    assert top1(onnx.load(out / "model.quant.onnx"), x, y) == top1(load_zoo_model("zoo:cnn_digits"), x, y)


def test_map_cli_costs_a_layer_on_fp32_pes(tmp_path, capsys):
    from quantloop.cli import main

    problem = Path(__file__).parent / "data" / "timeloop" / "eyeriss_like" / "default_problem" / "problem.yaml"
    args = ["map", "--target", "eyeriss_fp32", "--problem", str(problem), "--cache-dir", str(tmp_path)]
    assert main([*args, "--bits", "w32a32", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mac_energy_pj"] == pytest.approx(doc["macs"] * FP32_MAC_PJ)
    assert main([*args, "--bits", "w8a8"]) == 2
    assert "the fp32 PEs execute float weights, not int" in capsys.readouterr().err
    assert main(["map", "--target", "eyeriss", "--problem", str(problem), "--bits", "w32a32", "--no-cache"]) == 2
    assert "the int8 PEs execute int/pot/pot2 weights, not float" in capsys.readouterr().err


def test_map_and_cost_default_to_the_targets_native_float_bits(tmp_path, capsys):
    """Without --bits (or with 32-bit per-data-space overrides) fp32 PEs cost the layer in float, as
    `ComputeLevel.native_scheme` says, instead of refusing int weights nobody asked for."""
    from quantloop.cli import main

    problem = Path(__file__).parent / "data" / "timeloop" / "eyeriss_like" / "default_problem" / "problem.yaml"
    args = ["map", "--target", "eyeriss_fp32", "--problem", str(problem), "--cache-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    stock = json.loads(capsys.readouterr().out)
    assert stock["mac_energy_pj"] == pytest.approx(stock["macs"] * FP32_MAC_PJ)
    assert main([*args, "--bits-weights", "32", "--bits-inputs", "32", "--bits-outputs", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["mac_energy_pj"] == stock["mac_energy_pj"]
    assert main([*args, "--scheme", "int"]) == 2  # asked for int: the PEs refuse it
    assert "the fp32 PEs execute float weights, not int" in capsys.readouterr().err
    mapping = problem.with_name("map.yaml")
    assert main(["cost", "--target", "eyeriss_fp32", "--problem", str(problem), "--mapping", str(mapping), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["mac_energy_pj"] == pytest.approx(cost["macs"] * FP32_MAC_PJ)
    assert main(["cost", "--target", "eyeriss_fp32", "--problem", str(problem), "--mapping", str(mapping), "--scheme", "int"]) == 2
    assert "the fp32 PEs execute float weights, not int" in capsys.readouterr().err
    assert load_target("eyeriss").compute.native_scheme == "int"


def test_accel_lower_asks_the_target_whether_its_pes_run_float_layers():
    """A target whose PEs execute int and float (`schemes: [int, float]`) lowers float layers; `float_only`
    is not the question."""
    import dataclasses

    from quantloop.frontend import import_onnx
    from quantloop.ir import make_context
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.passes.accel_lower import COMPUTE_OPS, lower_op

    fp32 = load_target("eyeriss_fp32")
    both = dataclasses.replace(fp32, compute=dataclasses.replace(fp32.compute, schemes=frozenset({"int", "float"})))
    assert not both.compute.float_only
    module = import_onnx(_tiny_float_model())
    CanonicalizePass().apply(make_context(), module)
    ops = [op for op in module.walk() if isinstance(op, COMPUTE_OPS)]
    lowered = [lower_op(op, both, f"l{i}") for i, op in enumerate(ops)]
    assert [str(op.bits.data.weights) for op in lowered] == ["32 : float"] * 3
    with pytest.raises(QuantloopError, match="do not execute float"):
        lower_op(ops[0], load_target("eyeriss"), "l0")


def test_a_qdq_model_on_eyeriss_fp32_is_a_one_line_error_naming_the_layer(tmp_path, capsys):
    """targets/README.md: float PEs refuse quantized layers, so a QDQ model on eyeriss_fp32 is an error naming
    the layer (one line, exit 2, nothing written)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from quantloop.cli import main

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 1, 6, 6)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    src, qdq = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(_tiny_float_model(), src)
    quantize_static(str(src), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
    out = tmp_path / "out"
    assert main(["compile", str(qdq), "--target", "eyeriss_fp32", "-o", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert re.search(r"qdq\.onnx: accel-lower: layer '[^']+': bits: the fp32 PEs execute float weights, not int", errors[0])
    assert not out.exists()
