"""Classic CNNs written in torch import through both exporters, round-trip and compile.

Each of the nine models of `frontend.zoo.torch_cnns` is exported with the TorchScript exporter at
opsets 9 and 13 and with the dynamo exporter at its default opset; every export imports, prints and
parses, exports back through `export_onnx` to outputs within 1e-4 of the original model in
onnxruntime, and compiles for Eyeriss with every Conv/Gemm/MatMul mapped and every other op listed
as a host op. Fast cases use a quarter of the channels and 64×64 inputs; the rest are `slow`.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from quantloop.driver import compile as compile_model
from quantloop.frontend import export_onnx, import_onnx
from quantloop.frontend.onnx_load import load_model
from quantloop.frontend.torch_import import from_torch, torch_to_onnx
from quantloop.frontend.zoo.torch_cnns import MODELS, build
from quantloop.ir import Conv2dOp, GemmOp, HostOp, MatMulOp, make_context, op_kind, parse_module, print_module
from quantloop.passes.canonicalize import CanonicalizePass

EXPORTS = {"ts9": dict(opset=9), "ts13": dict(opset=13), "dynamo": dict(dynamo=True)}
#: Default-run cases (SE blocks at opset 9; torch's LocalResponseNorm with Shape chains and If on
#: constants folded at opset 13); every other combination, the dynamo exports
#: (the exporter's start-up alone takes ~20 s) and the full compiles (tens of seconds each) are slow.
FAST = {("mobilenet_v3_small", "ts9"), ("alexnet", "ts13")}
FAST_COMPILE: set[tuple[str, str]] = set()
MAPPED = ("Conv", "Gemm", "MatMul")


def _model(name: str, width: float = 0.25) -> torch.nn.Module:
    return build(name, width=width, num_classes=10, **({"pool_size": 1} if name == "alexnet" else {}))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _cases(fast):
    for name in MODELS:
        for export in EXPORTS:
            marks = () if (name, export) in fast else (pytest.mark.slow,)
            yield pytest.param(name, export, marks=marks, id=f"{name}-{export}")


@pytest.fixture(scope="module")
def exported():
    cache: dict[tuple, onnx.ModelProto] = {}

    def get(name: str, export: str, width: float = 0.25, size: int = 64) -> onnx.ModelProto:
        key = (name, export, width, size)
        if key not in cache:
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
            cache[key] = torch_to_onnx(_model(name, width), x, **EXPORTS[export])
        return cache[key]

    return get


def _check_roundtrip(model: onnx.ModelProto, size: int) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    module = import_onnx(model)
    CanonicalizePass().apply(make_context(), module)
    parsed = parse_module(print_module(module, elide_weights_over=None))
    assert print_module(parsed, elide_weights_over=None) == print_module(module, elide_weights_over=None)
    got, expected = _run(export_onnx(parsed), x), _run(model, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name,export", list(_cases(FAST)))
def test_imports_and_round_trips(exported, name, export):
    model = exported(name, export)
    if export != "dynamo":
        assert model.opset_import[0].version == EXPORTS[export]["opset"]
    _check_roundtrip(model, 64)


@pytest.mark.parametrize("name,export", list(_cases(FAST_COMPILE)))
def test_compiles_for_eyeriss_with_every_layer_mapped_and_the_rest_on_the_host(exported, name, export, tmp_path):
    model = exported(name, export)
    result = compile_model(model, target="eyeriss", output_dir=tmp_path / "out", emit="schedule,report")
    assert all(layer.energy_pj > 0 and layer.cycles > 0 for layer in result.layers)
    check_mapped_and_hosted(model, result)


#: ONNX ops the importer folds into the layer before them (activation, affine, BatchNorm) or drops (Identity),
#: so they reach neither the accelerator nor the host list.
FOLDED_INTO_LAYERS = {"Relu", "Identity", "Mul", "Add", "Sub", "Div", "BatchNormalization"}


def check_mapped_and_hosted(model: onnx.ModelProto, result) -> None:
    """Exactly the Conv/Gemm/MatMul nodes left after the frontend's constant folding are the compiled layers
    (by name: a dropped or duplicated layer fails), and exactly the other imported ops are the host list."""
    folded = load_model(model)
    mapped = sorted(n.name for n in folded.graph.node if n.op_type in MAPPED)
    assert mapped and sorted(layer.name for layer in result.layers) == mapped
    module = import_onnx(model)
    CanonicalizePass().apply(make_context(), module)
    compute = sorted(op.properties["name"].data for op in module.walk() if isinstance(op, (Conv2dOp, GemmOp, MatMulOp)))
    assert compute == mapped
    others = [op for op in module.walk() if op.name.startswith("qnn.") and op.name != "qnn.constant"
              and not isinstance(op, (Conv2dOp, GemmOp, MatMulOp))]
    assert sorted(result.host_ops) == sorted(f"{op_kind(op)} {op.properties['name'].data}" for op in others)
    hosted = {entry.split(" ", 1)[1] for entry in result.host_ops}
    unaccounted = collections.Counter(n.op_type for n in folded.graph.node
                                      if n.op_type not in MAPPED and n.name not in hosted)
    assert set(unaccounted) <= FOLDED_INTO_LAYERS, unaccounted


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_full_size_models_round_trip(exported, name):
    _check_roundtrip(exported(name, "ts13", width=1.0, size=224), 224)


class SqueezeExciteNet(torch.nn.Module):
    """A MobileNetV3 block in small: conv, SE (ReduceMean → 1×1 conv → ReLU → 1×1 conv → HardSigmoid → Mul),
    HardSwish, and a classifier; the per-channel affine after the last conv folds into it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)
        self.proj = torch.nn.Conv2d(16, 8, 1)
        self.scale = torch.nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.nn.functional.hardswish(self.conv(x))
        gate = torch.nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        x = self.proj(x * gate) * self.scale - 0.25
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["torchscript", "dynamo"])
def test_squeeze_excite_block_maps_its_convs_and_hosts_the_rest(dynamo, tmp_path):
    net = SqueezeExciteNet().eval()
    x = torch.randn(1, 3, 16, 16)
    module = from_torch(net, x, dynamo=dynamo)
    CanonicalizePass().apply(make_context(), module)
    host = collections.Counter(op.op_type for op in module.walk() if isinstance(op, HostOp))
    assert host["HardSigmoid"] == 1 and host["Mul"] == 1  # the gate multiply; `* scale - 0.25` folded into proj
    assert "Sub" not in host
    assert len([op for op in module.walk() if isinstance(op, Conv2dOp)]) == 4
    got = _run(export_onnx(module), x.numpy())
    with torch.no_grad():
        assert np.abs(got - net(x).numpy()).max() <= 1e-4
    model = torch_to_onnx(net, x, dynamo=dynamo)
    result = compile_model(model, target="eyeriss", output_dir=tmp_path / "out", emit="schedule,report")
    check_mapped_and_hosted(model, result)
    assert [layer.kind for layer in result.layers] == ["conv"] * 4 + ["gemm"]
    listed = " ".join(result.host_ops)
    assert "qnn.host:HardSigmoid" in listed and "qnn.host:Mul" in listed and "qnn.global_avgpool" in listed


class UpsampleNet(torch.nn.Module):
    """nn.Upsample (nearest and bilinear), LeakyReLU, PReLU, maximum/minimum and a transpose."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1)
        self.up1 = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.up2 = torch.nn.Upsample(scale_factor=2, mode="bilinear")
        self.leaky, self.prelu = torch.nn.LeakyReLU(0.1), torch.nn.PReLU(4)

    def forward(self, x):
        y = self.up2(self.prelu(self.conv2(self.up1(self.leaky(self.conv1(x))))))
        return torch.maximum(y, torch.minimum(y * 0.5, torch.tensor(1.0))).transpose(2, 3)


@pytest.mark.parametrize("export", ["ts9", "ts13", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_upsample_and_elementwise_ops_run_on_the_host(export):
    net = UpsampleNet().eval()
    x = torch.randn(1, 3, 8, 8)
    module = from_torch(net, x, **EXPORTS[export])
    CanonicalizePass().apply(make_context(), module)
    hosted = sorted(op.op_type for op in module.walk() if isinstance(op, HostOp))
    assert hosted == ["LeakyRelu", "Max", "Min", "Mul", "PRelu", "Resize", "Resize", "Transpose"]
    with torch.no_grad():
        assert np.abs(_run(export_onnx(module), x.numpy()) - net(x).numpy()).max() <= 1e-4
