"""Quantization-aware training (QAT) of one candidate of the search space, in torch on the CPU.

The float ONNX model of the search space is run by a small torch interpreter (`QatNetwork`: the ops
of the digits and MobileNet-style zoo models) with the candidate's fake quantization at exactly the
points the fake-quant evaluator puts it (`SearchSpace.quantizers` for activations, every compute
layer's weights per output channel), and fine-tuned with straight-through gradients.

Step sizes are learned with LSQ (Esser et al., ICLR 2020), not PACT: LSQ learns the scale of
weights and of signed and unsigned activations alike (residual sums and logits are signed here;
PACT only learns an upper clip of non-negative activations), and it starts from the post-training
scales (`FakeQuantEvaluator`'s: MSE / percentile calibration), so training starts at the PTQ point.
Gradients of the scales are scaled by 1 / sqrt(numel · qmax) as LSQ prescribes.

Deterministic: one torch thread, `torch.use_deterministic_algorithms(True)`, seeded torch and a
seeded numpy generator for the batch order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import numpy_helper

from quantloop.errors import QuantloopError
from quantloop.ir.quantization import qrange
from quantloop.options import DEFAULT_QAT_EPOCHS
from quantloop.passes.search.accuracy_cache import CachedTop1
from quantloop.passes.search.space import Config, SearchSpace

BATCH_SIZE = 32
LEARNING_RATE = 1e-4
#: `--accuracy qat` (QAT in the loop) fine-tunes a candidate only when its PTQ accuracy is at most this many
#: percentage points below the float model's: further down a short fine-tune rarely brings it back within the
#: drop, and skipping such candidates keeps the search's QAT count, its cost, in check (see README).
LOOP_MARGIN_PP = 30.0
#: A fine-tuned candidate that meets the accuracy constraint is fine-tuned again with the next seed(s); its
#: accuracy is the lowest of these runs, so it is feasible only if every run meets the constraint. One run's
#: validation top-1 is a noisy draw (MobileNetV1-digits at w3a3, 6 epochs, seeds 0/1/2: 99.50 / 98.25 / 98.25 %
#: on the 400 validation images, 97.6 / 98.0 / 98.0 % on test), and a search that fine-tunes many candidates keeps
#: the lucky draws; a second run rejects such a draw, for one more fine-tuning per candidate whose first run passes.
CONFIRMING_RUNS = 2
#: Bump when the training numerics change (cached QAT accuracies carry it).
QAT_VERSION = 1
SUPPORTED_OPS = frozenset("Conv Gemm Relu Clip MaxPool Add GlobalAveragePool Flatten Constant Identity".split())


def _torch():
    import torch

    return torch


def check_trainable(space: SearchSpace) -> None:
    """The torch interpreter runs the search space's model (and torch imports): else one line naming the ops."""
    _torch()
    unsupported = sorted({n.op_type for n in space.model.graph.node} - SUPPORTED_OPS)
    if unsupported:
        raise QuantloopError(f"qat: ops {', '.join(unsupported)} are not supported by the torch interpreter")


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _lsq(x, scale, qmin: float, qmax: float, grad_scale: float):
    """LSQ fake quantization: round-to-nearest-even of clamp(x / s) with straight-through gradients."""
    s = scale * grad_scale + (scale - scale * grad_scale).detach()  # value s, gradient scaled by grad_scale
    v = (x / s).clamp(qmin, qmax)
    return (v.round() - v).detach().add(v) * s


@dataclass
class QatResult:
    """The fine-tuned float weights of every compute layer, their per-channel scales, and the
    learned scale of every quantized activation tensor."""

    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]
    weight_scales: dict[str, np.ndarray]
    activation_scales: dict[str, float]
    history: list[float]


class QatNetwork:
    """The search space's float model in torch with the fake quantization of one candidate."""

    def __init__(self, space: SearchSpace, config: Config, evaluator) -> None:
        torch = _torch()
        check_trainable(space)
        if config.scheme != "int":
            raise QuantloopError("qat: only the int weight scheme is trained (pot / pot2 codes have no LSQ step)")
        self.space, self.config = space, config
        graph = space.model.graph
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float32).copy()) for t in graph.initializer}
        self.params: dict[str, object] = {}
        self.weight_q: dict[str, tuple] = {}  # weight name -> (scale param, qmin, qmax, axis, grad scale)
        for i, layer in enumerate(space.layers):
            bits = config.weights[i]
            _, scales = evaluator.layer_weights(i, bits, "int")
            w = torch.nn.Parameter(self.consts.pop(layer.weight))
            shape = [1] * w.dim()
            shape[layer.channel_axis] = -1
            s = torch.nn.Parameter(torch.from_numpy(np.asarray(scales, np.float32).reshape(shape).copy()))
            lo, hi = qrange(bits, True, narrow_range=True)
            self.params[layer.weight] = w
            self.params[f"{layer.weight}__scale"] = s
            self.weight_q[layer.weight] = (s, float(lo), float(hi), float(1.0 / np.sqrt(w.numel() / w.shape[layer.channel_axis] * hi)))
            if layer.bias is not None and layer.bias in self.consts:
                self.params[layer.bias] = torch.nn.Parameter(self.consts.pop(layer.bias))
        self.act_q: dict[str, tuple] = {}
        bits = space.tensor_bits(config)
        for q in space.quantizers:
            b = bits[q.tensor]
            scale = evaluator.activation_scale(q.tensor, b, q.signed)
            lo, hi = qrange(b, q.signed)
            s = torch.nn.Parameter(torch.tensor(float(scale)))
            self.params[f"{q.tensor}__scale"] = s
            self.act_q[q.tensor] = (s, float(lo), float(hi))

    def parameters(self) -> list:
        return list(self.params.values())

    def _value(self, env: dict, name: str):
        if name in env:
            return env[name]
        if name in self.params:
            return self.params[name]
        return self.consts[name]

    def _quantize_activation(self, name: str, x):
        if name not in self.act_q:
            return x
        s, lo, hi = self.act_q[name]
        return _lsq(x, s, lo, hi, float(1.0 / np.sqrt(x[0].numel() * max(abs(lo), hi))))

    def _weight(self, name: str):
        w = self.params[name]
        s, lo, hi, g = self.weight_q[name]
        return _lsq(w, s, lo, hi, g)

    def forward(self, x):
        torch = _torch()
        F = torch.nn.functional
        env = {self.input_name: self._quantize_activation(self.input_name, x)}
        for node in self.space.model.graph.node:
            a = _attrs(node)
            ins = [n for n in node.input]
            op = node.op_type
            if op == "Constant":
                env[node.output[0]] = torch.from_numpy(numpy_helper.to_array(a["value"]).astype(np.float32).copy())
                continue
            if op in ("Conv", "Gemm"):
                w = self._weight(ins[1]) if ins[1] in self.weight_q else self._value(env, ins[1])
                b = self._value(env, ins[2]) if len(ins) > 2 and ins[2] else None
                x_in = self._value(env, ins[0])
                if op == "Conv":
                    pads = a.get("pads", [0, 0, 0, 0])
                    if pads[0] != pads[2] or pads[1] != pads[3]:
                        raise QuantloopError(f"qat: {node.name}: asymmetric padding is not supported")
                    y = F.conv2d(x_in, w, b, stride=tuple(a.get("strides", [1, 1])), padding=(pads[0], pads[1]),
                                 dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))
                else:
                    if a.get("transA", 0):
                        x_in = x_in.t()
                    y = x_in @ (w.t() if a.get("transB", 0) else w)
                    y = y * a.get("alpha", 1.0)
                    if b is not None:
                        y = y + b * a.get("beta", 1.0)
            elif op == "Relu":
                y = F.relu(self._value(env, ins[0]))
            elif op == "Clip":
                lo = self._value(env, ins[1]) if len(ins) > 1 and ins[1] else None
                hi = self._value(env, ins[2]) if len(ins) > 2 and ins[2] else None
                y = torch.clamp(self._value(env, ins[0]), None if lo is None else float(lo), None if hi is None else float(hi))
            elif op == "MaxPool":
                pads = a.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(self._value(env, ins[0]), tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                 padding=(pads[0], pads[1]), ceil_mode=bool(a.get("ceil_mode", 0)))
            elif op == "Add":
                y = self._value(env, ins[0]) + self._value(env, ins[1])
            elif op == "GlobalAveragePool":
                y = self._value(env, ins[0]).mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = torch.flatten(self._value(env, ins[0]), a.get("axis", 1))
            else:  # Identity
                y = self._value(env, ins[0])
            env[node.output[0]] = self._quantize_activation(node.output[0], y)
        return env[self.output_name]

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            return np.concatenate([self.forward(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])

    def top1(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(self.predict(x).reshape(len(x), -1), axis=1) == y))

    def result(self, history: list[float]) -> QatResult:
        space = self.space
        return QatResult(
            weights={l.weight: self.params[l.weight].detach().numpy().copy() for l in space.layers},
            biases={l.bias: self.params[l.bias].detach().numpy().copy() for l in space.layers if l.bias in self.params},
            weight_scales={l.weight: self.weight_q[l.weight][0].detach().numpy().ravel().copy() for l in space.layers},
            activation_scales={t: float(q[0].detach()) for t, q in self.act_q.items()},
            history=history,
        )


def train_qat(space: SearchSpace, config: Config, evaluator, train_x: np.ndarray, train_y: np.ndarray, *,
              epochs: int = DEFAULT_QAT_EPOCHS, seed: int = 0, lr: float = LEARNING_RATE) -> QatNetwork:
    """Fine-tune the candidate `config` with LSQ fake quantization on (train_x, train_y); returns the
    trained network (its `result()` holds weights and scales). `evaluator` (a `FakeQuantEvaluator`
    on the calibration data) gives the post-training scales training starts from."""
    torch = _torch()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    net = QatNetwork(space, config, evaluator)
    x_t, y_t = torch.from_numpy(np.ascontiguousarray(train_x, np.float32)), torch.from_numpy(np.asarray(train_y, np.int64))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x_t)))
        total = 0.0
        for start in range(0, len(x_t), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            loss = loss_fn(net.forward(x_t[idx]).reshape(len(idx), -1), y_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # scales stay positive
                for s in [q[0] for q in net.act_q.values()] + [q[0] for q in net.weight_q.values()]:
                    s.clamp_(min=1e-8)
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x_t))
    net.history = history
    return net


QONNX_DOMAIN = "qonnx.custom_op.general"


def export_qonnx(net: QatNetwork):
    """The trained network as a QONNX model carrying its own scales: the float graph with the
    fine-tuned weights and biases, a `Quant` node (narrow, signed, per output channel) on every
    compute layer's weights and a `Quant` node (zero point 0, ROUND = half to even) after every
    quantized activation tensor, at the learned scales. quantloop imports it through the
    quantized-model path (`frontend/onnx_import.py`: QONNX `Quant`)."""
    import onnx
    from onnx import helper

    from quantloop.passes.search.fakequant import rewire_through_quantizers

    result = net.result(getattr(net, "history", []))
    space = net.space
    model = onnx.ModelProto()
    model.CopyFrom(space.model)
    graph = model.graph
    del graph.value_info[:]
    inits = {t.name: t for t in graph.initializer}
    for name, value in {**result.weights, **result.biases}.items():
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    bits = space.tensor_bits(net.config)
    extra = []

    def quant(tensor: str, out: str, scale: np.ndarray, b: int, signed: bool, narrow: bool) -> onnx.NodeProto:
        names = [f"{tensor}__q_scale", f"{tensor}__q_zeropt", f"{tensor}__q_bits"]
        extra.extend([
            numpy_helper.from_array(np.asarray(scale, np.float32), names[0]),
            numpy_helper.from_array(np.zeros_like(np.asarray(scale, np.float32)), names[1]),
            numpy_helper.from_array(np.asarray(float(b), np.float32), names[2]),
        ])
        return helper.make_node("Quant", [tensor, *names], [out], name=f"{tensor}__quant", domain=QONNX_DOMAIN,
                                signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    renamed = {}
    nodes = []
    for i, layer in enumerate(space.layers):
        shape = [1] * len(layer.weight_shape)
        shape[layer.channel_axis] = -1
        scale = result.weight_scales[layer.weight].reshape(shape)
        renamed[layer.weight] = f"{layer.weight}__quantized"
        nodes.append(quant(layer.weight, renamed[layer.weight], scale, net.config.weights[i], True, True))
    for q in space.quantizers:
        renamed[q.tensor] = f"{q.tensor}__quantized"
    for q in space.quantizers:
        if q.tensor == graph.input[0].name:
            nodes.append(quant(q.tensor, renamed[q.tensor], np.float32(result.activation_scales[q.tensor]),
                               bits[q.tensor], q.signed, False))
    signed = {q.tensor: q.signed for q in space.quantizers}

    def after(name: str) -> list[onnx.NodeProto]:
        if name not in signed:
            return []
        return [quant(name, renamed[name], np.float32(result.activation_scales[name]), bits[name], signed[name], False)]

    rewire_through_quantizers(graph, renamed, nodes, after)
    graph.initializer.extend(extra)
    model.opset_import.append(helper.make_opsetid(QONNX_DOMAIN, 1))
    return model


@dataclass
class QatChoice:
    """`--accuracy qat`: the front points fine-tuned (in cost order) and the one chosen, if any."""

    tried: list[dict]
    chosen: object | None  # engine.Point
    network: QatNetwork | None


def qat_front(result, calib_x: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, train_x: np.ndarray,
              train_y: np.ndarray, *, epochs: int, seed: int) -> QatChoice:
    """Fine-tune the Pareto front's points that cost less than w8a8, cheapest first, until one keeps
    the validation accuracy within the search's drop (confirmed by a second seed, as in the loop: `QatAccuracy`);
    a point PTQ keeps feasible is fine-tuned too (its fine-tuned model is deployed only if it meets the drop too)."""
    from quantloop.passes.search.engine import within_drop
    from quantloop.passes.search.fakequant import FakeQuantEvaluator

    options = result.options
    evaluator = FakeQuantEvaluator(result.space, calib_x, weight_clip=options.weight_clip,
                                   act_range=options.act_range, percentile=options.percentile)
    judge = QatAccuracy(result.space, lambda: evaluator, calib_x, train_x, train_y, val_x, val_y, epochs=epochs,
                        seed=seed, cache=None, settings={}, constraint=(result.float_accuracy, options.max_accuracy_drop))
    reference_cost = result.reference.cost(options.objective)
    tried: list[dict] = []
    for point in result.front:
        if point.cost(options.objective) >= reference_cost or point.config.scheme != "int":
            continue
        accuracy, net = judge.fine_tune(point.config)
        tried.append({"label": point.config.label(), "energy_pj": point.energy_pj, "cycles": point.cycles,
                      "ptq_accuracy": point.accuracy, "qat_accuracy": accuracy})
        if within_drop(result.float_accuracy, accuracy, options.max_accuracy_drop):
            return QatChoice(tried, point, net)
    return QatChoice(tried, None, None)


class QatAccuracy(CachedTop1):
    """QAT in the loop: the validation top-1 of a candidate after `epochs` of `train_qat`, cached on disk
    (beside the PTQ accuracies, `accuracy/`) by the model, the candidate, the calibration, training and
    validation data, the epochs, seed, learning rate, batch size, calibration settings, the confirming runs and
    allowed drop, torch version and `QAT_VERSION`. Retraining the same key gives the same network (training is
    deterministic), which is how the chosen point's model is rebuilt for export without storing weights.

    With `constraint` (the float accuracy and the allowed drop in pp: the search's), a run that meets it is
    confirmed by `CONFIRMING_RUNS` − 1 more runs at the next seeds and the candidate's accuracy is the lowest of
    them; the network `train` gives (and the search deploys) is always the first seed's. `trainings` counts the
    training runs, confirmations included (and any later `train`, such as the export's rebuild)."""

    def __init__(self, space: SearchSpace, evaluator_factory, calib_x: np.ndarray, train_x: np.ndarray,
                 train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *, epochs: int, seed: int, cache,
                 settings: dict, constraint: tuple[float, float] | None = None) -> None:
        from quantloop.passes.search.accuracy_cache import AccuracyStats, array_digest, space_digest

        self.space, self.make_evaluator, self.evaluator = space, evaluator_factory, None
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y
        self.epochs, self.seed, self.cache, self.constraint = epochs, seed, cache, constraint
        self.runs = CONFIRMING_RUNS if constraint is not None else 1
        self.trainings = 0
        self.stats = AccuracyStats()
        self.base = {
            "qat_version": QAT_VERSION, "torch": _torch().__version__, "model": space_digest(space),
            "calibration": array_digest(calib_x), "train_x": array_digest(train_x), "train_y": array_digest(train_y),
            "x": array_digest(val_x), "y": array_digest(val_y), "epochs": epochs, "seed": seed, "lr": LEARNING_RATE,
            "batch": BATCH_SIZE, **settings,
            "confirming_runs": self.runs, "max_drop_pp": None if constraint is None else float(constraint[1]),
        } if cache is not None else {}

    def train(self, config: Config, seed: int | None = None) -> QatNetwork:
        """The fine-tuned network of `config` (deterministic); by default the first seed's, the one deployed."""
        if self.evaluator is None:
            self.evaluator = self.make_evaluator()
        self.trainings += 1
        return train_qat(self.space, config, self.evaluator, self.train_x, self.train_y, epochs=self.epochs,
                         seed=self.seed if seed is None else seed)

    def fine_tune(self, config: Config) -> tuple[float, QatNetwork]:
        """The (confirmed) validation top-1 of `config` and its first seed's network."""
        from quantloop.passes.search.engine import within_drop

        network = self.train(config)
        accuracy = network.top1(self.val_x, self.val_y)
        for extra in range(1, self.runs):  # runs > 1 only with a constraint
            if not within_drop(self.constraint[0], accuracy, self.constraint[1]):
                break
            accuracy = min(accuracy, self.train(config, self.seed + extra).top1(self.val_x, self.val_y))
        return accuracy, network

    def compute(self, config: Config) -> float:
        return self.fine_tune(config)[0]
