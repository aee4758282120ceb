"""One onnxruntime session that runs the exact fake-quant network of any candidate.

The float model of the search space gets, after every quantized activation tensor, the chain
`Div(x, s) -> Round -> Clip(qmin, qmax) -> Mul(s)` (`ir.quantization.fake_quant` with zero point 0:
round half to even, float32 throughout, bit for bit what numpy computes), and its weights and
biases become graph inputs. Scales, code ranges, fake-quantized weights and biases are fed at run
time, so a candidate costs no model building and no session creation: only the scales its bits
change (from the activation ranges measured once on calibration data) and the weights at its
bits (memoised per layer and width). The network equals `runtime.fakequant_export`'s model of the
same bits after qnn-assign-bits (the candidate's bits file) and qnn-calibrate on the same data.

Numerics (the qnn-calibrate conventions of `ir/quantization.py`): weights symmetric, signed,
narrow range, per output channel (min-max or MSE clipping; pot / pot2 codes for those schemes);
activations symmetric with zero point 0, unsigned where assign-bits makes them unsigned, scale
from the float model's range on the calibration data (min/max or percentiles, as qnn-calibrate's
`act_range`); biases stay float (the accelerator adds
them as int32 at the far finer accumulator scale).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantloop.errors import QuantloopError
from quantloop.ir.quantization import activation_params, qrange, weight_fake_quant, weight_scales
from quantloop.options import DEFAULT_ACT_RANGE, DEFAULT_PERCENTILE, DEFAULT_WEIGHT_CLIP
from quantloop.passes.search.space import Config, SearchSpace


def rewire_through_quantizers(graph: onnx.GraphProto, renamed: dict[str, str], leading: list[onnx.NodeProto],
                              after: Callable[[str], list[onnx.NodeProto]]) -> None:
    """Make every reader of a tensor in `renamed` (and the graph output it is) read its quantized copy
    `renamed[tensor]` instead: `leading` nodes (quantizers of graph inputs and weights) go first, and
    `after(name)` (the quantizer that writes `renamed[name]`, or nothing) right after the node producing `name`."""
    nodes = list(leading)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        nodes.append(node)
        for name in node.output:
            nodes.extend(after(name))
    del graph.node[:]
    graph.node.extend(nodes)
    for out in graph.output:
        if out.name in renamed:
            out.name = renamed[out.name]


def _param_names(tensor: str) -> tuple[str, str, str]:
    return f"{tensor}__fq_scale", f"{tensor}__fq_min", f"{tensor}__fq_max"


def _dynamic_batch(model: onnx.ModelProto) -> bool:
    """Make the batch dim symbolic when the graph allows it (no Reshape with a fixed batch)."""
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            return False
    for value in [model.graph.input[0], *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            return False
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return True


def fakequant_graph(space: SearchSpace, observe: bool = False) -> tuple[onnx.ModelProto, bool]:
    """The parametrised fake-quant model (and whether its batch dim is dynamic).

    With `observe`, the float tensors at every quantizer are graph outputs instead (for ranges).
    """
    model = onnx.ModelProto()
    model.CopyFrom(space.model)
    graph = model.graph
    del graph.value_info[:]
    dynamic = False if observe else _dynamic_batch(model)
    layer_params = {layer.weight for layer in space.layers}
    if observe:
        for q in space.quantizers:
            if q.tensor not in {o.name for o in graph.output}:
                graph.output.append(helper.make_empty_tensor_value_info(q.tensor))
        return model, False
    kept, moved = [], []
    for init in graph.initializer:
        (moved if init.name in layer_params else kept).append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for init in moved:
        graph.input.append(helper.make_tensor_value_info(init.name, TensorProto.FLOAT, list(init.dims)))

    quantized = {q.tensor for q in space.quantizers}
    renamed = {t: f"{t}__fq" for t in quantized}

    def chain(tensor: str) -> list[onnx.NodeProto]:
        scale, low, high = _param_names(tensor)
        base = f"{tensor}__fq"
        return [
            helper.make_node("Div", [tensor, scale], [f"{base}_div"], name=f"{base}_div"),
            helper.make_node("Round", [f"{base}_div"], [f"{base}_round"], name=f"{base}_round"),
            helper.make_node("Clip", [f"{base}_round", low, high], [f"{base}_clip"], name=f"{base}_clip"),
            helper.make_node("Mul", [f"{base}_clip", scale], [renamed[tensor]], name=f"{base}_mul"),
        ]

    leading = [n for value in graph.input if value.name in quantized for n in chain(value.name)]
    rewire_through_quantizers(graph, renamed, leading, lambda name: chain(name) if name in quantized else [])
    for tensor in sorted(quantized):
        for name in _param_names(tensor):
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    return model, dynamic


class FakeQuantEvaluator:
    """Top-1 (or agreement) of candidates on fixed data, through one onnxruntime session."""

    def __init__(
        self,
        space: SearchSpace,
        calib_x: np.ndarray,
        *,
        weight_clip: str = DEFAULT_WEIGHT_CLIP,
        act_range: str = DEFAULT_ACT_RANGE,
        percentile: float = DEFAULT_PERCENTILE,
        threads: int = 1,
    ) -> None:
        from quantloop.runtime.accuracy import make_session

        self.space = space
        self.weight_clip = weight_clip
        self.act_range = act_range
        self.percentile = percentile
        self.float_weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in space.model.graph.initializer}
        observe, _ = fakequant_graph(space, observe=True)
        self.ranges = self._ranges(make_session(observe, threads), calib_x)
        model, self.dynamic = fakequant_graph(space)
        self.model = model
        self.session = make_session(model, threads)
        self.input_name = space.model.graph.input[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._weights: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _ranges(self, session, x: np.ndarray) -> dict[str, tuple[float, float]]:
        """Activation ranges exactly as qnn-calibrate observes them (its `RangeObserver`, seed 0,
        model input then results in graph order, batch by batch)."""
        from quantloop.passes.calibrate import RangeObserver

        names = [q.tensor for q in self.space.quantizers]
        data_name = self.space.model.graph.input[0].name
        batch = self.space.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or len(x)
        rng = np.random.default_rng(0)
        updates = -(-len(x) // batch)
        observers = {n: RangeObserver(self.act_range, self.percentile, rng, updates) for n in names}
        fetch = [n for n in names if n != data_name]
        for i in range(0, len(x), batch):
            part = x[i : i + batch]
            if data_name in observers:
                observers[data_name].update(part)
            for n, v in zip(fetch, session.run(fetch, {data_name: part})):
                observers[n].update(v)
        return {n: obs.range() for n, obs in observers.items()}

    def layer_weights(self, index: int, bits: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
        """(fake-quantized weights, per-channel scales) of layer `index` at `bits`, memoised."""
        key = (index, bits, scheme)
        if key not in self._weights:
            layer = self.space.layers[index]
            w = self.float_weights[layer.weight]
            scales = weight_scales(w, bits, self.weight_clip, scheme, axis=layer.channel_axis)
            self._weights[key] = (weight_fake_quant(w, scales, bits, scheme, axis=layer.channel_axis), scales)
        return self._weights[key]

    def activation_scale(self, tensor: str, bits: int, signed: bool) -> float:
        lo, hi = self.ranges[tensor]
        return activation_params(lo, hi, bits, signed)[0]

    def feeds(self, config: Config) -> dict[str, np.ndarray]:
        """Every graph input but the data: scales, code ranges and weights of `config`."""
        space = self.space
        bits = space.tensor_bits(config)
        feeds: dict[str, np.ndarray] = {}
        for q in space.quantizers:
            b = bits[q.tensor]
            scale = self.activation_scale(q.tensor, b, q.signed)
            low, high = qrange(b, q.signed)
            names = _param_names(q.tensor)
            feeds[names[0]] = np.array(scale, np.float32)
            feeds[names[1]] = np.array(low, np.float32)
            feeds[names[2]] = np.array(high, np.float32)
        for i, layer in enumerate(space.layers):
            feeds[layer.weight] = self.layer_weights(i, config.weights[i], config.layer_scheme(i))[0]
        return feeds

    def predict(self, config: Config, x: np.ndarray) -> np.ndarray:
        feeds = self.feeds(config)
        if self.dynamic:
            feeds[self.input_name] = x
            return self.session.run([self.output_name], feeds)[0]
        batch = self.space.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
        outs = []
        for i in range(0, len(x), batch):
            feeds[self.input_name] = x[i : i + batch]
            outs.append(self.session.run([self.output_name], feeds)[0])
        return np.concatenate(outs, axis=0)

    def top1(self, config: Config, x: np.ndarray, y: np.ndarray) -> float:
        logits = self.predict(config, x).reshape(len(x), -1)
        return float(np.mean(np.argmax(logits, axis=1) == y))


def float_predict(space: SearchSpace, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The float model's outputs on `x` (batched when the model allows it)."""
    from quantloop.runtime.accuracy import make_session, predict

    model = onnx.ModelProto()
    model.CopyFrom(space.model)
    if _dynamic_batch(model):
        session = make_session(model, threads)
        return session.run(None, {model.graph.input[0].name: x})[0]
    return predict(make_session(model, threads), x)


def check_inputs(space: SearchSpace, x: np.ndarray, y: np.ndarray | None, source: str, num_classes: int | None):
    """Data checked against the model input (shape, dtype, labels): `runtime.dataset.check_dataset`."""
    from quantloop.runtime.dataset import check_dataset

    info = space.model.graph.input[0]
    dims = info.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if info.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise QuantloopError(f"{source}: the model input {info.name} is not float32")
    return check_dataset(x, y, shape, np.float32, num_classes, source)
