"""Classic CNNs written in torch (torchvision's architectures; torchvision has no CPU build here).

Used to check that every classic CNN imports through both torch exporters, and usable to try a
model quickly: `build("resnet50", width=0.25)` gives a seeded model; `width` scales every channel
count (1.0 = the published network), the depth and the op set stay as published. Needs torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _ch(channels: float, width: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible` of `channels * width`: a multiple of `divisor`, never below 90 %."""
    value = channels * width
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Global average pool → 1×1 conv → act → 1×1 conv → gate → scale the input."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module], gate: type[nn.Module]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act = nn.Conv2d(channels, squeeze, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeeze, channels, 1), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


# ----------------------------------------------------------------------------- MobileNetV3

_V3_SMALL = [  # kernel, expanded, out, SE, activation, stride
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
]
_V3_LARGE = [
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
]


class _V3Block(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, act=activation))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=activation))
        if se:
            layers.append(SqueezeExcitation(expanded, _ch(expanded // 4, 1.0), nn.ReLU, nn.Hardsigmoid))
        layers.append(_conv_bn(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, config, last: int, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin = _ch(16, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, act=nn.Hardswish)]
        for kernel, expanded, out, se, act, stride in config:
            cout = _ch(out, width)
            layers.append(_V3Block(cin, kernel, _ch(expanded, width), cout, se, act, stride))
            cin = cout
        layers.append(_conv_bn(cin, 6 * cin, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, last), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ----------------------------------------------------------------------------- EfficientNet-B0


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        expanded = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, expanded, 1, act=nn.SiLU))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), nn.SiLU, nn.Sigmoid))
        layers.append(_conv_bn(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y  # stochastic depth is the identity at inference


class EfficientNetB0(nn.Module):
    STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # expand, kernel, stride, out, repeats

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin = _ch(32, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, act=nn.SiLU)]
        for expand, kernel, stride, out, repeats in self.STAGES:
            cout = _ch(out, width)
            for i in range(repeats):
                layers.append(_MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        last = _ch(1280, width)
        layers.append(_conv_bn(cin, last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ----------------------------------------------------------------------------- ResNet-50


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * 4
        self.body = nn.Sequential(_conv_bn(cin, planes, 1), _conv_bn(planes, planes, 3, stride),
                                  _conv_bn(planes, cout, 1, act=None))
        self.down = _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.down(x))


class ResNet50(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin = _ch(64, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 7, 2), nn.MaxPool2d(3, 2, 1)]
        for planes, repeats, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            for i in range(repeats):
                layers.append(_Bottleneck(cin, _ch(planes, width), stride if i == 0 else 1))
                cin = _ch(planes, width) * 4
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# ----------------------------------------------------------------------------- DenseNet-121


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                  nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet121(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        growth = _ch(32, width)
        cin = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, cin, 7, 2, 3, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)]
        for i, repeats in enumerate((6, 12, 24, 16)):
            for _ in range(repeats):
                layers.append(_DenseLayer(cin, growth))
                cin += growth
            if i < 3:  # transition: BN (after a concat, not a conv) → ReLU → 1×1 conv → 2×2 average pool
                layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                cin //= 2
        layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


# ----------------------------------------------------------------------------- SqueezeNet 1.1


class _Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        c = lambda v: _ch(v, width)  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c(64), 3, 2), nn.ReLU(), pool(),
            _Fire(c(64), c(16), c(64)), _Fire(2 * c(64), c(16), c(64)), pool(),
            _Fire(2 * c(64), c(32), c(128)), _Fire(2 * c(128), c(32), c(128)), pool(),
            _Fire(2 * c(128), c(48), c(192)), _Fire(2 * c(192), c(48), c(192)),
            _Fire(2 * c(192), c(64), c(256)), _Fire(2 * c(256), c(64), c(256)),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(2 * c(256), num_classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ----------------------------------------------------------------------------- ShuffleNetV2


def _channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin, act=None), _conv_bn(cin, half, 1))
        branch_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(_conv_bn(branch_in, half, 1), _conv_bn(half, half, 3, stride, groups=half, act=None),
                                     _conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return _channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stages = [_ch(116, width, 4), _ch(232, width, 4), _ch(464, width, 4)]
        cin = _ch(24, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2), nn.MaxPool2d(3, 2, 1)]
        for cout, repeats in zip(stages, (4, 8, 4)):
            for i in range(repeats):
                layers.append(_ShuffleBlock(cin, cout, 2 if i == 0 else 1))
                cin = cout
        last = _ch(1024, width)
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean([2, 3]))


# ----------------------------------------------------------------------------- Inception blocks


class _InceptionBlock(nn.Module):
    """GoogLeNet's inception module: 1×1, 1×1→3×3, 1×1→5×5 (as 3×3) and pool→1×1 branches, concatenated."""

    def __init__(self, cin: int, b1: int, b3r: int, b3: int, b5r: int, b5: int, pool: int) -> None:
        super().__init__()
        self.b1 = _conv_bn(cin, b1, 1)
        self.b3 = nn.Sequential(_conv_bn(cin, b3r, 1), _conv_bn(b3r, b3, 3))
        self.b5 = nn.Sequential(_conv_bn(cin, b5r, 1), _conv_bn(b5r, b5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _conv_bn(cin, pool, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionNet(nn.Module):
    """GoogLeNet's stem and inception 3a/3b/4a, with its input transform (an affine on the input channels)."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        c = lambda v: _ch(v, width)  # noqa: E731
        self.stem = nn.Sequential(_conv_bn(3, c(64), 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  _conv_bn(c(64), c(64), 1), _conv_bn(c(64), c(192), 3),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        b3a = (c(64), c(96), c(128), c(16), c(32), c(32))
        b3b = (c(128), c(128), c(192), c(32), c(96), c(64))
        b4a = (c(192), c(96), c(208), c(16), c(48), c(64))
        out3a = b3a[0] + b3a[2] + b3a[4] + b3a[5]
        out3b = b3b[0] + b3b[2] + b3b[4] + b3b[5]
        self.blocks = nn.Sequential(_InceptionBlock(c(192), *b3a), _InceptionBlock(out3a, *b3b),
                                    nn.MaxPool2d(3, 2, ceil_mode=True), _InceptionBlock(out3b, *b4a))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(b4a[0] + b4a[2] + b4a[4] + b4a[5], num_classes)

    def forward(self, x):
        channels = [x[:, i : i + 1] * s + b for i, (s, b) in enumerate(((0.458, -0.030), (0.448, -0.088), (0.450, -0.188)))]
        x = torch.cat(channels, 1)
        return self.fc(self.dropout(torch.flatten(self.pool(self.blocks(self.stem(x))), 1)))


# ----------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """The original AlexNet with local response normalisation after the first two convs."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000, pool_size: int = 6) -> None:
        super().__init__()
        c = lambda v: _ch(v, width)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c(96), 11, 4, 2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
            nn.Conv2d(c(96), c(256), 5, 1, 2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c(256), c(384), 3, 1, 1), nn.ReLU(), nn.Conv2d(c(384), c(384), 3, 1, 1, groups=2), nn.ReLU(),
            nn.Conv2d(c(384), c(256), 3, 1, 1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(pool_size)  # 6 at 224×224; torch exports only whole-window pools
        hidden = c(4096)
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(c(256) * pool_size**2, hidden), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v3_small": lambda **kw: MobileNetV3(_V3_SMALL, 1024, **kw),
    "mobilenet_v3_large": lambda **kw: MobileNetV3(_V3_LARGE, 1280, **kw),
    "efficientnet_b0": EfficientNetB0,
    "resnet50": ResNet50,
    "densenet121": DenseNet121,
    "squeezenet1_1": SqueezeNet11,
    "shufflenet_v2": ShuffleNetV2,
    "inception": InceptionNet,
    "alexnet": AlexNet,
}


def build(name: str, width: float = 1.0, num_classes: int = 1000, seed: int = 0, **options) -> nn.Module:
    """The named model in eval mode, with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = MODELS[name](width=width, num_classes=num_classes, **options)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()
