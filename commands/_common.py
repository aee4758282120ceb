"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse


def add_target_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--target",
        required=required,
        help="target name (see `quantloop targets`) or path to a target YAML file",
    )


def add_bits_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bits", help="uniform bit-widths such as w8a8 or w4a8 (weights, activations)")
    parser.add_argument("--bits-weights", type=int, help="weight bit-width (overrides --bits)")
    parser.add_argument("--bits-inputs", type=int, help="input activation bit-width (overrides --bits)")
    parser.add_argument("--bits-outputs", type=int, help="output / partial-sum bit-width (overrides --bits)")


def bits_from_args(args: argparse.Namespace, default=None, scheme: str = "int"):
    """Bits from --bits and the per-data-space overrides; `default` (a Bits or None) fills the rest.

    Returns None when nothing was given and there is no default (stock one-value-per-word)."""
    from quantloop.costmodel.problem import Bits

    base = Bits.parse(args.bits, scheme=scheme) if getattr(args, "bits", None) else default
    overrides = {
        "weights": getattr(args, "bits_weights", None),
        "inputs": getattr(args, "bits_inputs", None),
        "outputs": getattr(args, "bits_outputs", None),
    }
    if base is None and all(v is None for v in overrides.values()):
        return None
    base = base or Bits(scheme=scheme)
    values = {k: (v if v is not None else getattr(base, k)) for k, v in overrides.items()}
    return Bits(**values, scheme=base.scheme)
