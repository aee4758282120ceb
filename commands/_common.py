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
