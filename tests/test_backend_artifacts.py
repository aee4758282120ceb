"""End to end: zoo model → qnn → calibrated → accel (mapped) → write_artifacts; every artefact checked.

The default run uses reduced-size zoo models and random legal mappings from the cost model (the mapper is
exercised by its own tests; here the mapping only has to be legal and varied). The slow set compiles
MobileNetV2 and ResNet-18 at full size at w4a8 and w8a8 on Eyeriss and Simba (ResNet-18 with the mapper),
and cnn_digits with the mapper through every artefact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest

from quantloop.backend import unpack, unpack_biases
from quantloop.backend.artifacts import write_artifacts
from quantloop.backend.schedule import load_schema
from quantloop.cli import main
from quantloop.costmodel.model import evaluate, evaluate_batch
from quantloop.costmodel.random_mappings import random_mappings
from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
from quantloop.ir.accel import MappingAttr, layers
from quantloop.targets.registry import load_target

SMALL = "zoo:mobilenet_v2?width=0.25&resolution=32&num_classes=10"
pytestmark = pytest.mark.filterwarnings("ignore:qnn-calibrate. no calibration data")


def qnn_module(spec: str, bits: str, scheme: str = "int"):
    """The calibrated qnn module of a zoo model (seeded random calibration inputs)."""
    from quantloop.frontend.onnx_import import import_onnx
    from quantloop.frontend.zoo.registry import load_zoo_model
    from quantloop.ir.qnn import make_context
    from quantloop.passes.assign_bits import AssignBitsPass
    from quantloop.passes.calibrate import CalibratePass
    from quantloop.passes.canonicalize import CanonicalizePass

    module = import_onnx(load_zoo_model(spec))
    ctx = make_context()
    CanonicalizePass().apply(ctx, module)
    AssignBitsPass(bits=bits).apply(ctx, module)
    CalibratePass(scheme=scheme, samples=8).apply(ctx, module)
    return module


def attach_random_mappings(module, arch, seed: int = 0) -> None:
    """A random legal mapping (fan-outs, constraints, capacity) with its cost on every accel.layer."""
    from quantloop.passes.accel_map import cost_attr

    names = [lvl.name for lvl in arch.levels]
    for i, op in enumerate(layers(module)):
        problem, bits = op.problem.to_costmodel(op.label), op.bits.to_costmodel()
        candidates = random_mappings(arch, problem, 64, rng=seed + i)
        ok = np.flatnonzero(evaluate_batch(arch, problem, candidates, bits).capacity_ok)
        assert ok.size, f"no random mapping of {op.label} fits {arch.name}"
        mapping = candidates.mapping(int(ok[0]))
        op.properties["mapping"] = MappingAttr.from_costmodel(mapping, names)
        op.properties["cost"] = cost_attr(evaluate(arch, problem, mapping, bits), optimal=False, mappings_considered=1)


def accel_module(qnn, target: str, mapper: str = "random", cache_dir: str = ""):
    from quantloop.ir.qnn import make_context
    from quantloop.passes.accel_lower import AccelLowerPass
    from quantloop.passes.accel_map import AccelMapPass

    module = qnn.clone()
    ctx = make_context()
    AccelLowerPass(target=target).apply(ctx, module)
    if mapper == "random":
        attach_random_mappings(module, load_target(target))
    else:
        AccelMapPass(cache_dir=cache_dir).apply(ctx, module)
    module.verify()
    return module


def compile_artifacts(out: Path, spec: str, bits: str, target: str, scheme: str = "int", mapper: str = "random",
                      cache_dir: str = ""):
    qnn = qnn_module(spec, bits, scheme)
    accel = accel_module(qnn, target, mapper, cache_dir)
    paths = write_artifacts(out, qnn_module=qnn, accel_module=accel, target=target, emit="all",
                            command_line=f"quantloop compile {spec} --target {target} --bits {bits}")
    return qnn, accel, paths


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _weight_initializers(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """Layer name → name of the float initializer its Conv / Gemm / MatMul node reads as weights."""
    inits = {t.name for t in model.graph.initializer}
    by_node = {n.name: n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    out = {}
    for name in names:
        node = by_node[name]
        assert node.input[1] in inits, f"layer {name}: weights {node.input[1]} are not an initializer"
        out[name] = node.input[1]
    return out


def check_unpacked_weights_reproduce_the_fake_quant_model(out: Path, n_inputs: int = 2) -> None:
    """unpack(dequantize=True) equals the fake-quant model's weights bit for bit, and a model holding the
    unpacked weights gives exactly the outputs of model.quant.onnx in onnxruntime."""
    model = onnx.load(out / "model.quant.onnx")
    floats = unpack(out, dequantize=True)
    mapping = _weight_initializers(model, list(floats))
    inits = {t.name: t for t in model.graph.initializer}
    swapped = onnx.ModelProto()
    swapped.CopyFrom(model)
    for layer, init in mapping.items():
        expected = onnx.numpy_helper.to_array(inits[init])
        assert floats[layer].shape == expected.shape, layer
        assert np.array_equal(floats[layer], expected), f"layer {layer}: unpacked weights differ from the model's"
        index = [t.name for t in swapped.graph.initializer].index(init)
        swapped.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(floats[layer], init))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    for _ in range(n_inputs):
        x = rng.standard_normal(shape).astype(np.float32)
        for a, b in zip(_run(model, x), _run(swapped, x)):
            assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    qnn, accel, paths = compile_artifacts(out, SMALL, "w4a8", "eyeriss")
    return out, qnn, accel, paths


def test_every_artefact_is_written(small_build):
    out, _, accel, paths = small_build
    expected = {"schedule.json", "schedule.txt", "timeloop", "weights.bin", "weights.json", "model.quant.onnx",
                "report.json", "energy_by_level.png", "energy_by_dataspace.png"}
    assert {p.name for p in out.iterdir()} == expected
    for kind, path in paths.items():
        assert path.exists() and out in (path, *path.parents), kind
    assert len(list((out / "timeloop").iterdir())) == len(layers(accel))
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_schedule_json_validates_and_names_target_and_command(small_build):
    out, _, accel, _ = small_build
    schedule = json.loads((out / "schedule.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(schedule)
    arch = load_target("eyeriss")
    assert schedule["target"]["name"] == "eyeriss" and schedule["target"]["content_hash"] == arch.content_hash
    assert schedule["command_line"].startswith("quantloop compile zoo:mobilenet_v2")
    assert [layer["name"] for layer in schedule["layers"]] == [op.label for op in layers(accel)]
    for entry, op in zip(schedule["layers"], layers(accel)):
        assert entry["cost"]["energy_pj"] == op.cost.data.energy_pj
        assert entry["bits"]["Weights"]["bits"] == 4 and entry["bits"]["Inputs"]["bits"] == 8
    assert {h["op"] for h in schedule["host_ops"]} >= {"qnn.add", "qnn.global_avgpool"}


def test_timeloop_files_re_evaluate_with_quantloop_cost(small_build, capsys):
    out, _, _, _ = small_build
    schedule = json.loads((out / "schedule.json").read_text())
    arch = load_target("eyeriss")
    for entry in schedule["layers"][:4]:
        folder = out / entry["timeloop"]
        assert main(["cost", "--target", "eyeriss", "--problem", str(folder / "problem.yaml"),
                     "--mapping", str(folder / "map.yaml"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["total_energy_pj"] == entry["cost"]["energy_pj"], entry["name"]
        assert result["cycles"] == entry["cost"]["cycles"]
        mapping = read_mapping(folder / "map.yaml", arch)
        assert [lvl["temporal"] for lvl in entry["mapping"]] == [[list(t) for t in lm.temporal] for lm in mapping.levels]
        problem, bits = read_problem(folder / "problem.yaml")
        assert problem.macs == entry["cost"]["macs"]


def test_weights_follow_the_dram_loops_and_unpack_exactly(small_build):
    out, _, accel, _ = small_build
    manifest = json.loads((out / "weights.json").read_text())
    by_name = {op.label: op for op in layers(accel)}
    assert [e["name"] for e in manifest["layers"]] == list(by_name)
    for entry in manifest["layers"]:
        op = by_name[entry["name"]]
        dram = op.mapping.to_costmodel().levels[0].temporal
        assert entry["loop_nest"] == [[d, f] for d, f in dram]
        assert entry["tile_order"] == [[d, f] for d, f in dram if d in "GCMRS"]
        assert entry["word_bits"] == load_target("eyeriss").levels[0].word_bits
        assert entry["bits"] == 4 and entry["signed"]
        in_type = op.input.type.element_type
        assert entry["activations"]["input"] == {"bits": 8, "signed": in_type.signed, "scale": in_type.scale,
                                                 "zero_point": in_type.zero_point}
        assert entry["activations"]["output"]["scale"] == op.output.type.element_type.scale
    codes = unpack(out)
    for name, array in codes.items():
        assert array.dtype == np.int32 and array.min() >= -7 and array.max() <= 7
        assert list(array.shape) == list(by_name[name].weight.type.get_shape())
    assert set(unpack_biases(out)) == {op.label for op in by_name.values() if op.bias is not None}


def test_unpacked_weights_reproduce_model_quant_onnx(small_build):
    check_unpacked_weights_reproduce_the_fake_quant_model(small_build[0])


def test_report_json_totals_and_quantloop_report(small_build, capsys):
    out, _, accel, _ = small_build
    report = json.loads((out / "report.json").read_text())
    total, rows = report["total"], report["layers"]
    assert total["energy_pj"] == pytest.approx(sum(r["energy_pj"] for r in rows), rel=1e-12)
    assert total["cycles"] == sum(r["cycles"] for r in rows)
    assert total["weight_bytes"] == sum(r["weight_bytes"] for r in rows) == (out / "weights.bin").stat().st_size
    assert {r["name"] for r in rows} == {op.label for op in layers(accel)}
    assert all({"name", "energy_pj", "cycles", "bits"} <= set(r) for r in rows)
    assert report["host_ops"]
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Network totals" in printed and str(out / "energy_by_level.png") in printed
    assert rows[0]["name"] in printed
    assert "also in report.json" not in printed
    assert main(["report", str(out), "--sort", "energy"]) == 0
    table = capsys.readouterr().out.split("Layers", 1)[1]
    top = max(rows, key=lambda r: r["energy_pj"])["name"]
    first_row = next(line for line in table.splitlines() if line.startswith("│"))
    assert first_row.split("│")[1].strip() == top


@pytest.mark.slow
@pytest.mark.parametrize("bits,scheme,target", [("w8a8", "int", "simba"), ("w3a4", "int", "eyeriss"),
                                                ("w4a8", "pot", "eyeriss"), ("w6a8", "pot2", "simba")])
def test_other_bits_schemes_and_targets_round_trip(tmp_path, bits, scheme, target):
    spec = "zoo:resnet18?width=0.125&resolution=32&num_classes=10"
    compile_artifacts(tmp_path / "out", spec, bits, target, scheme)
    manifest = json.loads((tmp_path / "out" / "weights.json").read_text())
    assert {e["scheme"] for e in manifest["layers"]} == {scheme}
    check_unpacked_weights_reproduce_the_fake_quant_model(tmp_path / "out", n_inputs=1)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("bits", ["w4a8", "w8a8"])
@pytest.mark.parametrize("target", ["eyeriss", "simba"])
def test_full_size_models_unpack_to_the_fake_quant_outputs(tmp_path, model, bits, target):
    """Both models compiled with the real mapper, end to end (QUANTLOOP_TEST_MAPPER=random swaps in random
    legal mappings when only the backend is being worked on)."""
    mapper = os.environ.get("QUANTLOOP_TEST_MAPPER", "accel-map")
    compile_artifacts(tmp_path / "out", f"zoo:{model}", bits, target, mapper=mapper,
                      cache_dir=str(tmp_path / "cache"))
    check_unpacked_weights_reproduce_the_fake_quant_model(tmp_path / "out", n_inputs=1)
    schedule = json.loads((tmp_path / "out" / "schedule.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(schedule)


@pytest.mark.slow
def test_mapper_mappings_round_trip_through_every_artefact(tmp_path, capsys):
    """The real mapper (accel-map) on a small trained model: schedule, Timeloop files and weights agree."""
    out = tmp_path / "out"
    _, accel, _ = compile_artifacts(out, "zoo:cnn_digits", "w4a8", "eyeriss", mapper="accel-map",
                                    cache_dir=str(tmp_path / "cache"))
    schedule = json.loads((out / "schedule.json").read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(schedule)
    manifest = {e["name"]: e for e in json.loads((out / "weights.json").read_text())["layers"]}
    for entry, op in zip(schedule["layers"], layers(accel)):
        assert entry["cost"]["optimal"] == op.cost.data.optimal
        assert entry["cost"]["mappings_considered"] == op.cost.data.mappings_considered > 1
        folder = out / entry["timeloop"]
        assert main(["cost", "--target", "eyeriss", "--problem", str(folder / "problem.yaml"),
                     "--mapping", str(folder / "map.yaml"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["total_energy_pj"], result["cycles"]) == (entry["cost"]["energy_pj"], entry["cost"]["cycles"])
        dram = op.mapping.to_costmodel().levels[0].temporal
        assert manifest[op.label]["tile_order"] == [[d, f] for d, f in dram if d in "GCMRS"]
    check_unpacked_weights_reproduce_the_fake_quant_model(out, n_inputs=3)

def test_an_unmapped_layer_or_another_target_is_a_clean_error(tmp_path):
    from quantloop.errors import QuantloopError
    from quantloop.ir.qnn import make_context
    from quantloop.passes.accel_lower import AccelLowerPass

    qnn = qnn_module(SMALL, "w8a8")
    unmapped = qnn.clone()
    AccelLowerPass(target="eyeriss").apply(make_context(), unmapped)
    first = layers(unmapped)[0].label
    with pytest.raises(QuantloopError, match=f"layer {first}: has no mapping; run accel-map"):
        write_artifacts(tmp_path / "a", qnn_module=qnn, accel_module=unmapped, target="eyeriss", command_line="x")
    mapped = accel_module(qnn, "eyeriss")
    with pytest.raises(QuantloopError, match="mapped for target eyeriss"):
        write_artifacts(tmp_path / "b", qnn_module=qnn, accel_module=mapped, target="simba", command_line="x", emit="all")
    assert list(tmp_path.iterdir()) == []


def _conv_gemm_matmul_model():
    """conv (bias) → flatten → gemm without trans_b (weights stored K×N) → matmul: every weight layout."""
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ModuleOp, TensorType, f32

    from quantloop.ir.qnn import ConstantOp, Conv2dOp, FlattenOp, GemmOp, MatMulOp

    rng = np.random.default_rng(5)
    fn = func.FuncOp("main", ([TensorType(f32, [1, 3, 6, 6])], [TensorType(f32, [1, 6])]))
    (x,) = fn.body.block.args
    ops = []

    def add(op):
        ops.append(op)
        return op

    def const(shape, name):
        return add(ConstantOp(rng.standard_normal(shape).astype(np.float32), name=name))

    c = add(Conv2dOp(x, const((4, 3, 3, 3), "w1"), const((4,), "b1"), strides=(2, 2), act="relu", name="conv1"))
    f = add(FlattenOp(c, 1, name="flat"))
    g = add(GemmOp(f, const((16, 12), "w2"), const((12,), "b2"), trans_b=False, act="relu", name="fc2"))
    m = add(MatMulOp(g, const((12, 6), "w3"), name="mm3"))
    add(func.ReturnOp(m))
    fn.body.block.add_ops(ops)
    return ModuleOp([fn])


def test_gemm_and_matmul_weights_keep_their_stored_orientation(tmp_path):
    from quantloop.ir.qnn import make_context
    from quantloop.passes.assign_bits import AssignBitsPass
    from quantloop.passes.calibrate import CalibratePass

    qnn = _conv_gemm_matmul_model()
    AssignBitsPass(bits="w5a8").apply(make_context(), qnn)
    CalibratePass(samples=8).apply(make_context(), qnn)
    accel = accel_module(qnn, "simba")
    write_artifacts(tmp_path / "out", qnn_module=qnn, accel_module=accel, target="simba", command_line="x", emit="all")
    manifest = {e["name"]: e for e in json.loads((tmp_path / "out" / "weights.json").read_text())["layers"]}
    assert manifest["fc2"]["layout"] == ["K", "N"] and manifest["fc2"]["canonical_dims"] == ["C", "M"]
    assert manifest["fc2"]["shape"] == [16, 12] and manifest["fc2"]["axis"] == 1
    assert manifest["mm3"]["canonical_dims"] == ["C", "M"] and "bias" not in manifest["mm3"]
    assert manifest["conv1"]["canonical_shape"] == [1, 4, 3, 3, 3] and manifest["conv1"]["bias"]["count"] == 4
    check_unpacked_weights_reproduce_the_fake_quant_model(tmp_path / "out", n_inputs=2)
    from quantloop.ir.qnn import ConstantOp

    floats = {op.node_name: op.array for op in qnn.walk() if isinstance(op, ConstantOp) and op.node_name in ("b1", "b2")}
    biases = unpack_biases(tmp_path / "out", dequantize=True)
    for layer, const in (("conv1", "b1"), ("fc2", "b2")):
        scales = np.array(manifest[layer]["bias"]["scales"], np.float32)
        assert np.all(np.abs(biases[layer] - floats[const]) <= scales / 2 * (1 + 1e-6)), layer


def test_a_matmul_of_two_activations_is_listed_without_stored_weights(tmp_path):
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ModuleOp, TensorType, f32

    from quantloop.ir.qnn import ConstantOp, GemmOp, MatMulOp, ReluOp, make_context
    from quantloop.passes.assign_bits import AssignBitsPass
    from quantloop.passes.calibrate import CalibratePass

    fn = func.FuncOp("main", ([TensorType(f32, [3, 3])], [TensorType(f32, [3, 5])]))
    (x,) = fn.body.block.args
    r = ReluOp(x, name="relu")
    w = ConstantOp(np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32), name="w")
    mm = MatMulOp(x, r, name="mm")
    fc = GemmOp(mm, w, None, name="fc")
    fn.body.block.add_ops([r, w, mm, fc, func.ReturnOp(fc)])
    qnn = ModuleOp([fn])
    AssignBitsPass(bits="w8a8").apply(make_context(), qnn)
    CalibratePass(samples=4).apply(make_context(), qnn)
    write_artifacts(tmp_path / "out", qnn_module=qnn, accel_module=accel_module(qnn, "eyeriss"), target="eyeriss",
                    command_line="x")
    manifest = json.loads((tmp_path / "out" / "weights.json").read_text())
    assert [e["name"] for e in manifest["layers"]] == ["fc"]
    assert manifest["layers_without_stored_weights"] == [{"name": "mm", "weight_producer": "qnn.relu"}]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["name"]: r["weight_bytes"] for r in report["layers"]}["mm"] == 0


def test_a_large_model_keeps_its_onnx_weights_as_external_data(small_build, tmp_path, monkeypatch):
    """Past `ONNX_EXTERNAL_WEIGHTS_BYTES` the fake-quant model's weights go to `model.quant.onnx.data`
    (so writing VGG-16 does not hold them twice); the pair loads from the model's path and gives the
    same outputs as the single-file model of the same module."""
    import quantloop.backend.artifacts as artifacts

    out, qnn, accel, _ = small_build
    monkeypatch.setattr(artifacts, "ONNX_EXTERNAL_WEIGHTS_BYTES", 0)
    big = tmp_path / "big"
    paths = write_artifacts(big, qnn_module=qnn, accel_module=accel, target="eyeriss", emit="onnx", command_line="")
    assert {p.name for p in big.iterdir()} == {"model.quant.onnx", "model.quant.onnx.data"}
    assert set(paths) - {"dir"} == {"model_quant_onnx", "model_quant_onnx_data"}
    assert (big / "model.quant.onnx").stat().st_size < (out / "model.quant.onnx").stat().st_size / 10
    external = onnx.load(big / "model.quant.onnx")
    inline = onnx.load(out / "model.quant.onnx")
    onnx.checker.check_model(str(big / "model.quant.onnx"))
    shape = [d.dim_value for d in inline.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for a, b in zip(_run(external, x), _run(inline, x)):
        assert np.array_equal(a, b)
