"""torchvision's CNN architectures, built with onnx.helper and seeded random weights.

At the ImageNet defaults (width 1.0, resolution 224, 1000 classes) the parameter counts equal
torchvision's: MobileNetV2 3,504,872; MobileNetV1 4,231,976; ResNet-18 11,689,512;
VGG-16 138,357,544 (conv/linear weights and biases, BN gamma/beta; not BN running statistics).
"""

from __future__ import annotations

import onnx

from quantloop.errors import QuantloopError
from quantloop.frontend.zoo.builder import GraphBuilder


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of `divisor`, never below 90 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn(b: GraphBuilder, x: str, out: int, kernel: int, stride: int = 1, group: int = 1) -> str:
    return b.batchnorm(b.conv(x, out, kernel, stride, group))


def _check_resolution(name: str, resolution: int, multiple: int) -> None:
    if resolution < multiple or resolution % multiple:
        raise QuantloopError(f"zoo:{name}: resolution {resolution} must be a positive multiple of {multiple}")


def build_mobilenet_v2(b: GraphBuilder, width: float, resolution: int, num_classes: int) -> str:
    _check_resolution("mobilenet_v2", resolution, 32)
    x = b.input("input", (1, 3, resolution, resolution))
    channels = make_divisible(32 * width)
    last = make_divisible(1280 * max(1.0, width))
    x = b.relu6(_conv_bn(b, x, channels, 3, 2))
    for expand, c, repeats, first_stride in [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    ]:
        out = make_divisible(c * width)
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = int(round(channels * expand))
            y = x
            if expand != 1:
                y = b.relu6(_conv_bn(b, y, hidden, 1))
            y = b.relu6(_conv_bn(b, y, hidden, 3, stride, group=hidden))
            y = _conv_bn(b, y, out, 1)
            x = b.add(x, y) if stride == 1 and channels == out else y
            channels = out
    x = b.relu6(_conv_bn(b, x, last, 1))
    x = b.flatten(b.global_avgpool(x))
    return b.gemm(b.dropout(x, 0.2), num_classes)


def build_mobilenet_v1(b: GraphBuilder, width: float, resolution: int, num_classes: int) -> str:
    _check_resolution("mobilenet_v1", resolution, 32)
    x = b.input("input", (1, 3, resolution, resolution))

    def ch(c: int) -> int:
        return max(8, int(c * width))

    x = b.relu(_conv_bn(b, x, ch(32), 3, 2))
    for out, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]:
        channels = b.shapes[x][1]
        x = b.relu(_conv_bn(b, x, channels, 3, stride, group=channels))
        x = b.relu(_conv_bn(b, x, ch(out), 1))
    x = b.flatten(b.global_avgpool(x))
    return b.gemm(x, num_classes)


def build_resnet18(b: GraphBuilder, width: float, resolution: int, num_classes: int) -> str:
    _check_resolution("resnet18", resolution, 32)
    x = b.input("input", (1, 3, resolution, resolution))
    x = b.relu(_conv_bn(b, x, max(8, int(64 * width)), 7, 2))
    x = b.maxpool(x, 3, 2, 1)
    for stage, planes in enumerate([64, 128, 256, 512]):
        planes = max(8, int(planes * width))
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            identity = x
            y = b.relu(_conv_bn(b, x, planes, 3, stride))
            y = b.batchnorm(b.conv(y, planes, 3), gamma_scale=0.3)
            if stride != 1 or b.shapes[x][1] != planes:
                identity = _conv_bn(b, x, planes, 1, stride)
            x = b.relu(b.add(y, identity))
    x = b.flatten(b.global_avgpool(x))
    return b.gemm(x, num_classes)


def build_vgg16(b: GraphBuilder, width: float, resolution: int, num_classes: int) -> str:
    """VGG-16 (configuration D, no BN). AdaptiveAvgPool2d(7x7) is an AveragePool of kernel
    resolution/224, as torch exports it; so the resolution must be a multiple of 224."""
    _check_resolution("vgg16", resolution, 224)
    x = b.input("input", (1, 3, resolution, resolution))
    for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if item == "M":
            x = b.maxpool(x, 2, 2, 0)
        else:
            x = b.relu(b.conv(x, max(8, int(item * width)), 3, bias=True))
    pool = b.shapes[x][2] // 7
    x = b.flatten(b.avgpool(x, pool, pool))
    hidden = max(8, int(4096 * width))
    x = b.dropout(b.relu(b.gemm(x, hidden)), 0.5)
    x = b.dropout(b.relu(b.gemm(x, hidden)), 0.5)
    return b.gemm(x, num_classes)


BUILDERS = {
    "mobilenet_v1": build_mobilenet_v1,
    "mobilenet_v2": build_mobilenet_v2,
    "resnet18": build_resnet18,
    "vgg16": build_vgg16,
}


def build(name: str, *, width: float = 1.0, resolution: int = 224, num_classes: int = 1000,
          seed: int = 0, opset: int = 17, materialize: bool = True) -> GraphBuilder:
    """Run one architecture through a `GraphBuilder`; the builder holds the model and its counts."""
    if not 11 <= opset <= 21:
        raise QuantloopError(f"zoo:{name}: opset {opset} is not supported (use 11..21)")
    if width <= 0 or num_classes < 1:
        raise QuantloopError(f"zoo:{name}: width must be > 0 and num_classes >= 1")
    b = GraphBuilder(name, seed=seed, materialize=materialize, opset=opset)
    b.output = BUILDERS[name](b, width, resolution, num_classes)
    return b


def mobilenet_v1(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, **kw) -> onnx.ModelProto:
    b = build("mobilenet_v1", width=width, resolution=resolution, num_classes=num_classes, **kw)
    return b.build(b.output)


def mobilenet_v2(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, **kw) -> onnx.ModelProto:
    b = build("mobilenet_v2", width=width, resolution=resolution, num_classes=num_classes, **kw)
    return b.build(b.output)


def resnet18(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, **kw) -> onnx.ModelProto:
    b = build("resnet18", width=width, resolution=resolution, num_classes=num_classes, **kw)
    return b.build(b.output)


def vgg16(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, **kw) -> onnx.ModelProto:
    b = build("vgg16", width=width, resolution=resolution, num_classes=num_classes, **kw)
    return b.build(b.output)
