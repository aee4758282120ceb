"""A small ONNX graph builder for the zoo: tracks shapes, parameter count and MACs.

With `materialize=False` no weights are drawn, so the zoo table (params, MACs) is cheap even for
VGG-16; with `materialize=True` seeded weights are drawn in float32 (He-scaled for convs, fan-in
scaled for the classifier, random-but-sane BatchNorm statistics so BN folding is exercised).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper


class GraphBuilder:
    def __init__(self, name: str, seed: int = 0, materialize: bool = True, opset: int = 17) -> None:
        self.name = name
        self.opset = opset
        self.materialize = materialize
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        #: (name, array or a function drawing it): weights are drawn in `build`, one at a time, in the
        #: order they were declared (the same seeded values), so a VGG's are never all held as arrays
        self.initializers: list[tuple[str, np.ndarray | Callable[[], np.ndarray]]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.params = 0
        self.macs = 0
        self._counter = 0
        self._inputs: list[onnx.ValueInfoProto] = []
        self.output = ""

    def _fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self._inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.shapes[name] = shape
        return name

    def _weight(self, name: str, shape: tuple[int, ...], draw, trainable: bool = True) -> str:
        if trainable:
            self.params += math.prod(shape)
        if self.materialize:
            self.initializers.append((name, lambda: np.asarray(draw(), dtype=np.float32).reshape(shape)))
        return name

    def _normal(self, shape: tuple[int, ...], std: float):
        """Zero-mean uniform values with standard deviation `std` (as torch's kaiming_uniform; three
        times faster to draw than normal values, which matters for VGG-16's 138 M weights)."""

        def draw() -> np.ndarray:
            values = self.rng.random(math.prod(shape), dtype=np.float32)
            values -= np.float32(0.5)
            values *= np.float32(2.0 * math.sqrt(3.0) * std)
            return values

        return draw

    def _uniform(self, shape: tuple[int, ...], low: float, high: float):
        return lambda: self.rng.uniform(low, high, math.prod(shape)).astype(np.float32)

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], prefix: str, named: bool = False,
              **attrs) -> str:
        name = prefix if named else self._fresh(prefix)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, out_channels: int, kernel: int, stride: int = 1, group: int = 1,
             bias: bool = False, padding: int | None = None) -> str:
        n, c, h, w = self.shapes[x]
        pad = kernel // 2 if padding is None else padding
        prefix = self._fresh("conv")
        wshape = (out_channels, c // group, kernel, kernel)
        fan_in = (c // group) * kernel * kernel
        inputs = [x, self._weight(f"{prefix}.weight", wshape, self._normal(wshape, math.sqrt(2.0 / fan_in)))]
        if bias:
            inputs.append(self._weight(f"{prefix}.bias", (out_channels,), self._normal((out_channels,), 0.05)))
        oh = (h + 2 * pad - kernel) // stride + 1
        ow = (w + 2 * pad - kernel) // stride + 1
        self.macs += n * out_channels * oh * ow * fan_in
        return self._node("Conv", inputs, (n, out_channels, oh, ow), prefix, named=True,
                          kernel_shape=[kernel, kernel], strides=[stride, stride],
                          pads=[pad, pad, pad, pad], dilations=[1, 1], group=group)

    def batchnorm(self, x: str, gamma_scale: float = 1.0) -> str:
        """`gamma_scale` < 1 damps residual branches (as torchvision's zero_init_residual, but not
        zero) so that activations stay O(10) through deep residual stacks."""
        c = self.shapes[x][1]
        prefix = self._fresh("bn")
        inputs = [
            x,
            self._weight(f"{prefix}.weight", (c,), self._uniform((c,), 0.5 * gamma_scale, 1.5 * gamma_scale)),
            self._weight(f"{prefix}.bias", (c,), self._normal((c,), 0.1)),
            self._weight(f"{prefix}.running_mean", (c,), self._normal((c,), 0.1), trainable=False),
            self._weight(f"{prefix}.running_var", (c,), self._uniform((c,), 0.5, 1.5), trainable=False),
        ]
        return self._node("BatchNormalization", inputs, self.shapes[x], prefix, named=True, epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self._node("Relu", [x], self.shapes[x], "relu")

    def relu6(self, x: str) -> str:
        lo, hi = "relu6.min", "relu6.max"
        if self.materialize and lo not in self.shapes:
            self.initializers.append((lo, np.array(0.0, np.float32)))
            self.initializers.append((hi, np.array(6.0, np.float32)))
            self.shapes[lo] = self.shapes[hi] = ()
        return self._node("Clip", [x, lo, hi], self.shapes[x], "relu6")

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self.shapes[a], "add")

    def maxpool(self, x: str, kernel: int, stride: int, pad: int) -> str:
        n, c, h, w = self.shapes[x]
        oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        return self._node("MaxPool", [x], (n, c, oh, ow), "maxpool", kernel_shape=[kernel, kernel],
                          strides=[stride, stride], pads=[pad, pad, pad, pad])

    def avgpool(self, x: str, kernel: int, stride: int) -> str:
        n, c, h, w = self.shapes[x]
        oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        return self._node("AveragePool", [x], (n, c, oh, ow), "avgpool", kernel_shape=[kernel, kernel],
                          strides=[stride, stride], pads=[0, 0, 0, 0])

    def global_avgpool(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", [x], (n, c, 1, 1), "gap")

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], (shape[0], math.prod(shape[1:])), "flatten", axis=1)

    def dropout(self, x: str, ratio: float) -> str:
        if self.opset < 12:
            return self._node("Dropout", [x], self.shapes[x], "dropout", ratio=ratio)
        ratio_name = f"dropout.ratio_{ratio}"
        if self.materialize and ratio_name not in self.shapes:
            self.initializers.append((ratio_name, np.array(ratio, np.float32)))
            self.shapes[ratio_name] = ()
        return self._node("Dropout", [x, ratio_name], self.shapes[x], "dropout")

    def gemm(self, x: str, out_features: int) -> str:
        n, k = self.shapes[x]
        prefix = self._fresh("fc")
        wshape = (out_features, k)
        inputs = [
            x,
            self._weight(f"{prefix}.weight", wshape, self._normal(wshape, math.sqrt(1.0 / k))),
            self._weight(f"{prefix}.bias", (out_features,), self._normal((out_features,), 0.05)),
        ]
        self.macs += n * out_features * k
        return self._node("Gemm", inputs, (n, out_features), prefix, named=True, alpha=1.0, beta=1.0, transB=1)

    def build(self, output: str) -> onnx.ModelProto:
        out_info = helper.make_tensor_value_info(output, TensorProto.FLOAT, list(self.shapes[output]))
        graph = helper.make_graph(self.nodes, self.name, self._inputs, [out_info])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="quantloop.zoo")
        # filled in place (make_model copies its graph); each array is dropped once it is in the model, so
        # a VGG's weights are not held twice: `build` consumes the builder's weights
        initializers, self.initializers = self.initializers, []
        initializers.reverse()
        while initializers:
            name, value = initializers.pop()
            array = value() if callable(value) else value
            del value
            tensor = model.graph.initializer.add()
            tensor.name = name
            tensor.data_type = TensorProto.FLOAT
            tensor.dims.extend(array.shape)
            data = array.tobytes()
            del array  # only the bytes and then the proto's copy of them are alive at once
            tensor.raw_data = data
            del data
        model.ir_version = _IR_VERSION_FOR_OPSET.get(self.opset, 10)
        return model


# The oldest IR version that supports each opset, so onnxruntime loads every zoo model.
_IR_VERSION_FOR_OPSET = {11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
