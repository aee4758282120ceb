"""Train the digits zoo models and export them to ONNX: `python -m quantloop.frontend.zoo.train_digits`.

Deterministic: one torch thread, `torch.use_deterministic_algorithms(True)`, seeded torch and
numpy, a fixed shuffling generator. Both models train on the `train` split only, with AdamW
(weight decay keeps weights small for 4-bit quantization), a cosine learning-rate schedule and
random shifts of up to 2 pixels (at 32×32) as augmentation. BatchNorm is folded into the convs
by the exporter (eval mode, constant folding), ReLU6 becomes Clip. The ONNX graphs (opset 17)
have a fixed input `input` 1×1×32×32 and output `logits` 1×10.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from quantloop.frontend.zoo import digits
from quantloop.runtime import digits as digits_data

OPSET = 17
ALLOWED_OPS = frozenset(
    "Conv Gemm MatMul Add Relu Clip MaxPool AveragePool GlobalAveragePool Reshape Flatten Concat "
    "Softmax BatchNormalization Identity Dropout Constant".split()
)
EPOCHS = {"mobilenet_v2_digits": 30, "cnn_digits": 20, "mobilenet_v1_digits": 30}
BATCH_SIZE = 32
MAX_SHIFT = 2


def _torch():
    import torch

    return torch


def build_model(name: str):
    """A fresh, untrained torch module for zoo model `name`."""
    torch = _torch()
    nn = torch.nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6())
        return layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else conv_bn(cin, hidden, 1)
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            out = self.body(x)
            return x + out if self.residual else out

    if name == "mobilenet_v2_digits":
        # (expansion, out channels, repeats, first stride), MobileNetV2's table scaled down
        settings = [(1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2), (4, 32, 1, 1)]
        layers: list = conv_bn(1, 16, 3, 2)
        cin = 16
        for expand, cout, repeats, stride in settings:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += conv_bn(cin, 128, 1)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, digits_data.NUM_CLASSES)]
        return nn.Sequential(*layers)
    if name == "mobilenet_v1_digits":
        # MobileNetV1's depthwise-separable stack, widths and depth scaled down: (out channels, stride)
        layers = conv_bn(1, 16, 3, 2)
        cin = 16
        for cout, stride in [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)]:
            layers += conv_bn(cin, cin, 3, stride, groups=cin) + conv_bn(cin, cout, 1)
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, digits_data.NUM_CLASSES)]
        return nn.Sequential(*layers)
    if name == "cnn_digits":
        layers = []
        cin = 1
        for cout in (16, 32, 64):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        layers += [nn.Flatten(), nn.Linear(64 * 4 * 4, digits_data.NUM_CLASSES)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown digits model {name!r}; known: {', '.join(digits.DIGITS_MODELS)}")


def _seed_everything(seed: int) -> None:
    torch = _torch()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    np.random.seed(seed)


def _shift(batch, rng: np.random.Generator):
    """Shift every image by up to MAX_SHIFT pixels, filling with background (0)."""
    torch = _torch()
    out = torch.zeros_like(batch)
    size = batch.shape[-1]
    for i, (dy, dx) in enumerate(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(len(batch), 2))):
        ys, yd = (slice(0, size - dy), slice(dy, size)) if dy >= 0 else (slice(-dy, size), slice(0, size + dy))
        xs, xd = (slice(0, size - dx), slice(dx, size)) if dx >= 0 else (slice(-dx, size), slice(0, size + dx))
        out[i, :, yd, xd] = batch[i, :, ys, xs]
    return out


def train(name: str, epochs: int | None = None, limit: int | None = None, seed: int = 0, log=None):
    """Train model `name` on the train split (its first `limit` images if given); returns the eval-mode module."""
    torch = _torch()
    _seed_everything(seed)
    x, y = digits_data.load_digits_split("train")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    model = build_model(name)
    epochs = EPOCHS[name] if epochs is None else epochs
    steps_per_epoch = -(-len(x) // BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            batch = _shift(x_t[idx], rng)
            loss = loss_fn(model(batch), y_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if log is not None:
            log(f"{name} epoch {epoch + 1}/{epochs} loss {total / len(x):.4f}")
    return model.eval()


def export(model, path: Path) -> None:
    """Export an eval-mode module to ONNX (opset 17, input 1×1×32×32, BN folded)."""
    import onnx

    torch = _torch()
    example = torch.zeros(1, 1, digits_data.RESOLUTION, digits_data.RESOLUTION)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's own notices
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    if not ops <= ALLOWED_OPS:
        raise RuntimeError(f"{path}: exporter produced ops outside the supported list: {sorted(ops - ALLOWED_OPS)}")
    onnx.checker.check_model(proto, full_check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(digits.__file__).parent)
    parser.add_argument("--models", nargs="+", default=list(digits.DIGITS_MODELS), choices=list(digits.DIGITS_MODELS))
    parser.add_argument("--epochs", type=int, help="override the per-model epoch count")
    parser.add_argument("--limit", type=int, help="train on the first LIMIT training images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-splits", action="store_true", help="(re)write the packaged digits_splits.npz first")
    parser.add_argument("--splits-only", action="store_true", help="write digits_splits.npz and stop")
    args = parser.parse_args(argv)
    if args.write_splits or args.splits_only or not digits_data.SPLITS_FILE.is_file():
        digits_data.write_splits()
        digits_data._packaged_splits.cache_clear()
        print(f"wrote {digits_data.SPLITS_FILE}")
    if args.splits_only:
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        start = time.perf_counter()
        model = train(name, args.epochs, args.limit, args.seed, log=print)
        seconds = time.perf_counter() - start
        path = args.out_dir / f"{name}.onnx"
        export(model, path)
        print(f"{name}: trained in {seconds:.1f} s (1 torch thread), wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
