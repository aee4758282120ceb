"""from_torch: a torch.nn.Module imports, canonicalizes and exports to the same outputs."""

import numpy as np
import onnxruntime as ort
import pytest

from quantloop.frontend import export_onnx, from_torch
from quantloop.ir import BatchNormOp, Conv2dOp, make_context
from quantloop.passes.canonicalize import CanonicalizePass

import torch


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU6(),
            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2),
        )
        self.classifier = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(8 * 2 * 2, 5))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def test_from_torch_matches_torch():
    torch.manual_seed(0)
    net = SmallNet()
    for bn in (net.features[1], net.features[4]):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
    net.train()
    x = torch.randn(1, 3, 16, 16)
    module = from_torch(net, x)
    assert net.training  # the caller's mode is restored
    CanonicalizePass().apply(make_context(), module)
    assert not [op for op in module.walk() if isinstance(op, BatchNormOp)]
    assert [op.act for op in module.walk() if isinstance(op, Conv2dOp)] == ["clip", "relu"]
    exported = export_onnx(module)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    assert np.abs(got - expected).max() <= 1e-5
