"""The model zoo: torchvision architectures generated with seeded weights, plus packaged ONNX files.

See `quantloop.frontend.zoo.registry` for the `zoo:NAME?key=value` spec syntax.
"""

from quantloop.frontend.zoo.models import mobilenet_v1, mobilenet_v2, resnet18, vgg16
from quantloop.frontend.zoo.registry import (
    ZOO,
    ModelInfo,
    ZooEntry,
    count_params_macs,
    list_models,
    load_zoo_model,
    parse_spec,
    register_file,
    zoo_file_path,
)

__all__ = [
    "ZOO", "ModelInfo", "ZooEntry", "count_params_macs", "list_models", "load_zoo_model", "parse_spec",
    "register_file", "zoo_file_path", "mobilenet_v1", "mobilenet_v2", "resnet18", "vgg16",
]
