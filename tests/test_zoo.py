import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantloop.cli import main
from quantloop.errors import QuantloopError
from quantloop.frontend import zoo
from quantloop.frontend.zoo import models, registry

TORCHVISION_PARAMS = {
    "mobilenet_v2": 3_504_872,
    "mobilenet_v1": 4_231_976,
    "resnet18": 11_689_512,
    "vgg16": 138_357_544,
}
SMALL = {
    "mobilenet_v1": "zoo:mobilenet_v1?width=0.25&resolution=64&num_classes=10",
    "mobilenet_v2": "zoo:mobilenet_v2?width=0.35&resolution=64&num_classes=10",
    "resnet18": "zoo:resnet18?width=0.25&resolution=64&num_classes=10",
    "vgg16": "zoo:vgg16?width=0.0625&num_classes=10",
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision(name):
    assert models.build(name, materialize=False).params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet18"])
def test_parameter_count_of_the_onnx_model_itself(name):
    params, macs = zoo.count_params_macs(zoo.load_zoo_model(f"zoo:{name}"))
    assert params == TORCHVISION_PARAMS[name]
    assert macs == models.build(name, materialize=False).macs


@pytest.mark.slow
def test_vgg16_onnx_initializers_hold_torchvision_parameter_count():
    model = zoo.load_zoo_model("zoo:vgg16")
    trainable = {n.input[i] for n in model.graph.node if n.op_type in ("Conv", "Gemm") for i in (1, 2)}
    count = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name in trainable)
    assert count == TORCHVISION_PARAMS["vgg16"]


def test_known_mac_counts():
    # torchvision's published GFLOPS (multiply-adds) at 224x224.
    assert models.build("mobilenet_v2", materialize=False).macs == 300_774_272
    assert round(models.build("resnet18", materialize=False).macs / 1e9, 2) == 1.81
    assert round(models.build("vgg16", materialize=False).macs / 1e9, 2) == 15.47


def test_make_divisible_follows_torchvision():
    assert [models.make_divisible(c * 0.5) for c in (32, 16, 24, 96, 320)] == [16, 8, 16, 48, 160]
    assert models.make_divisible(1280 * 1.4) == 1792
    assert models.make_divisible(8 * 1.5) == 16


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_variants_run_in_onnxruntime_with_sane_activations(name):
    model = zoo.load_zoo_model(SMALL[name])
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString())
    shape = sess.get_inputs()[0].shape
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    y = sess.run(None, {"input": x})[0]
    assert y.shape == (1, 10)
    assert np.all(np.isfinite(y)) and 0.05 < np.abs(y).max() < 100


def test_models_contain_the_expected_op_kinds():
    ops = {n.op_type for n in zoo.load_zoo_model(SMALL["mobilenet_v2"]).graph.node}
    assert {"Conv", "BatchNormalization", "Clip", "Add", "GlobalAveragePool", "Flatten", "Dropout", "Gemm"} <= ops
    ops = {n.op_type for n in zoo.load_zoo_model(SMALL["resnet18"]).graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Gemm"} <= ops
    ops = [n.op_type for n in zoo.load_zoo_model(SMALL["vgg16"]).graph.node]
    assert ops.count("Conv") == 13 and ops.count("Gemm") == 3 and "AveragePool" in ops
    assert "BatchNormalization" not in ops


def test_bn_statistics_are_not_identity():
    model = zoo.load_zoo_model(SMALL["mobilenet_v2"])
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    gamma, beta, mean, var = (inits[name] for name in bn.input[1:])
    for array, neutral in ((gamma, 1.0), (beta, 0.0), (mean, 0.0), (var, 1.0)):
        assert not np.allclose(array, neutral)
    assert np.all(var > 0)


def test_seed_option_changes_weights_and_same_seed_is_deterministic():
    def first_weight(spec):
        return onnx.numpy_helper.to_array(zoo.load_zoo_model(spec).graph.initializer[0])

    a = first_weight("zoo:mobilenet_v2?width=0.35&resolution=32&seed=3")
    b = first_weight("zoo:mobilenet_v2?resolution=32&width=0.35&seed=3")
    c = first_weight("zoo:mobilenet_v2?width=0.35&resolution=32&seed=4")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_load_returns_an_independent_copy():
    first = zoo.load_zoo_model(SMALL["mobilenet_v2"])
    first.graph.node.pop()
    assert len(zoo.load_zoo_model(SMALL["mobilenet_v2"]).graph.node) == len(first.graph.node) + 1


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_opset_option(opset):
    model = zoo.load_zoo_model(f"zoo:mobilenet_v2?width=0.35&resolution=32&opset={opset}")
    assert model.opset_import[0].version == opset
    onnx.checker.check_model(model)
    ort.InferenceSession(model.SerializeToString())


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("zoo:nosuchnet", "models: cnn_digits, mobilenet_v1, mobilenet_v1_digits, mobilenet_v2, mobilenet_v2_digits, resnet18, vgg16"),
        ("zoo:mobilenet_v2?depth=3", "unknown option 'depth'"),
        ("zoo:mobilenet_v2?width=wide", "width='wide' is not a valid float"),
        ("zoo:mobilenet_v2?resolution=100", "resolution 100 must be a positive multiple of 32"),
        ("zoo:vgg16?resolution=96", "multiple of 224"),
        ("zoo:resnet18?opset=9", "opset 9 is not supported"),
    ],
)
def test_bad_specs_name_the_problem(spec, fragment):
    with pytest.raises(QuantloopError, match="zoo:") as info:
        zoo.load_zoo_model(spec)
    assert fragment in str(info.value)


def test_file_backed_entries_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "ZOO", dict(registry.ZOO))
    path = tmp_path / "tiny.onnx"
    onnx.save(zoo.load_zoo_model("zoo:mobilenet_v2?width=0.35&resolution=32&num_classes=4"), str(path))
    registry.register_file("tiny", str(path), "a tiny packaged model")
    registry.register_file("tiny-calib", str(tmp_path / "calib.npz"), "calibration data", kind="data")
    assert len(zoo.load_zoo_model("zoo:tiny").graph.node) > 10
    assert zoo.zoo_file_path("zoo:tiny-calib") == tmp_path / "calib.npz"
    info = {i.name: i for i in registry.list_models()}["tiny"]
    assert info.params == zoo.count_params_macs(onnx.load(str(path)))[0] > 0
    assert "tiny-calib" not in {i.name for i in registry.list_models()}
    with pytest.raises(QuantloopError, match="data set"):
        zoo.load_zoo_model("zoo:tiny-calib")
    with pytest.raises(QuantloopError, match="unknown option"):
        zoo.load_zoo_model("zoo:tiny?width=0.5")


def test_zoo_command_prints_the_table(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "zoo:mobilenet_v2" in out and "3,504,872" in out and "138,357,544" in out


def test_zoo_command_json(capsys):
    import json

    assert main(["zoo", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: rows[n]["params"] for n in TORCHVISION_PARAMS} == TORCHVISION_PARAMS
