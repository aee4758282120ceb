"""`quantloop eval`: top-1 accuracy of an ONNX classifier on labelled data, in onnxruntime."""

from __future__ import annotations

import argparse

HELP = "top-1 accuracy of an ONNX model (file or zoo:NAME) on labelled data (.npz with x, y, or zoo:digits-test)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX file or zoo:NAME (e.g. zoo:mobilenet_v2_digits)")
    parser.add_argument(
        "--data", required=True, help=".npz file with arrays x and y, or zoo:digits-calib|val|test"
    )
    parser.add_argument(
        "--input-shape",
        help="shape of the model input as [NAME=]1x1x32x32, fixing its dynamic dims for the data check",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="samples per run for dynamic-batch models")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")


def parse_shape(text: str, input_name: str) -> tuple[int, ...]:
    """`[NAME=]AxBxC` -> (A, B, C); NAME, if given, must be the model's input."""
    from quantloop.errors import QuantloopError

    name, sep, dims = text.rpartition("=")
    if sep and name != input_name:
        raise QuantloopError(f"--input-shape {text}: the model has no input {name!r} (its input is {input_name!r})")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise QuantloopError(f"--input-shape {text}: expected dims like 1x1x32x32") from None
    if any(d <= 0 for d in shape):
        raise QuantloopError(f"--input-shape {text}: dims must be positive")
    return shape


def merge_shape(declared: tuple, given: tuple[int, ...], text: str) -> tuple[int, ...]:
    from quantloop.errors import QuantloopError

    if len(declared) != len(given) or any(isinstance(d, int) and d != g for d, g in zip(declared, given)):
        shown = "x".join(str(d) if isinstance(d, int) else "?" for d in declared)
        raise QuantloopError(f"--input-shape {text}: does not fit the model input {shown}")
    return given


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from quantloop.runtime.accuracy import input_signature, make_session, top1_session
    from quantloop.errors import QuantloopError
    from quantloop.runtime.dataset import check_dataset, load_dataset

    if args.batch_size < 1 or args.threads < 1:
        raise QuantloopError("--batch-size and --threads must be at least 1")
    model = args.model
    if model.startswith("zoo:"):
        from quantloop.frontend.zoo import load_zoo_model

        model = load_zoo_model(model)
    session = make_session(model, args.threads)
    name, shape, dtype = input_signature(session)
    batch_size = args.batch_size
    if args.input_shape:
        shape = merge_shape(shape, parse_shape(args.input_shape, name), args.input_shape)
        batch_size = shape[0]
    out_shape = session.get_outputs()[0].shape
    num_classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
    x, y = load_dataset(args.data)
    if y is None:
        raise QuantloopError(f"{args.data}: no array named 'y' (labels are needed for accuracy)")
    x, y = check_dataset(x, y, shape, dtype, num_classes, str(args.data))
    accuracy = top1_session(session, x, y, batch_size, what=str(args.model))
    correct = round(accuracy * len(y))
    line = Text.assemble(
        (args.model, "bold"), f" on {args.data}: top-1 ", (f"{100 * accuracy:.2f} %", "bold green"), f" ({correct}/{len(y)})"
    )
    Console(soft_wrap=True).print(line)
    return 0
