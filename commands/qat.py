"""`quantloop qat`: quantization-aware fine-tuning of one bit-width configuration, exported as QONNX."""

from __future__ import annotations

import argparse

from quantloop.options import DEFAULT_QAT_EPOCHS

HELP = "fine-tune a model at per-layer bits (QAT: LSQ step sizes) and write it as a quantized QONNX model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="float ONNX file or zoo:NAME (e.g. zoo:cnn_digits)")
    parser.add_argument("--bits-file", required=True, metavar="JSON",
                        help='per-layer bits, as `compile --search` writes them: {"conv1": {"weights": 4, "activations": 8}}')
    parser.add_argument("--data", required=True, metavar="NPZ", help="labelled training data (.npz x, y, or zoo:digits-train)")
    parser.add_argument("--calib-data", metavar="NPZ",
                        help="calibration data the step sizes start from (default: zoo:digits-calib for digits models, else --data)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_QAT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_QAT_EPOCHS}, as the search's --qat-epochs)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("-o", "--output", required=True, metavar="ONNX", help="the quantized model to write (QONNX Quant nodes)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import onnx

    from quantloop.errors import QuantloopError
    from quantloop.options import check_epochs
    from quantloop.frontend import import_onnx
    from quantloop.runtime.dataset import load_dataset
    from quantloop.frontend.zoo.digits import packaged_data
    from quantloop.ir import make_context
    from quantloop.passes.assign_bits import load_bits_file
    from quantloop.passes.canonicalize import CanonicalizePass
    from quantloop.passes.search.fakequant import FakeQuantEvaluator, check_inputs
    from quantloop.passes.search.qat import export_qonnx, train_qat
    from quantloop.passes.search.space import build_space, parse_bits_range

    output = Path(args.output)
    if output.exists() and not args.force:
        raise QuantloopError(f"{output}: exists (use --force to replace it)")
    epochs = args.epochs
    check_epochs(epochs, "--epochs")
    table = load_bits_file(args.bits_file)
    module = import_onnx(args.model)
    CanonicalizePass().apply(make_context(), module)
    space = build_space(module, parse_bits_range("2..8"))
    config = space.config_from_table(table, args.bits_file)
    train_x, train_y = load_dataset(args.data)
    if train_y is None:
        raise QuantloopError(f"{args.data}: training data needs labels (array y)")
    calib = args.calib_data or (packaged_data(args.model) or {}).get("calib", args.data)
    calib_x = check_inputs(space, load_dataset(calib)[0], None, calib, None)[0]
    train_x, train_y = check_inputs(space, train_x, train_y, args.data, None)
    evaluator = FakeQuantEvaluator(space, calib_x)
    net = train_qat(space, config, evaluator, train_x, train_y, epochs=epochs, seed=args.seed)
    model = export_qonnx(net)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(output)
    losses = ", ".join(f"{v:.4f}" for v in net.history)
    print(f"QAT {epochs} epoch(s) at {config.label()} on {args.data} (loss {losses}); wrote {output}")
    return 0
