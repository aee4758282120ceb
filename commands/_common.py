"""Argument helpers shared by several sub-commands."""

from __future__ import annotations

import argparse

from quantloop.bits import FLOAT_SCHEME, legal_text, legal_widths
from quantloop.errors import QuantloopError



def add_target_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--target",
        required=required,
        help="target name (see `quantloop targets`), a target YAML file, or a Timeloop design folder / arch.yaml",
    )


def add_bits_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bits", help="uniform bit-widths such as w8a8 or w4a8 (weights, activations)")
    parser.add_argument("--bits-weights", type=int, help="weight bit-width (overrides --bits)")
    parser.add_argument("--bits-inputs", type=int, help="input activation bit-width (overrides --bits)")
    parser.add_argument("--bits-outputs", type=int, help="output bit-width (overrides --bits)")
    add_psum_argument(parser)


def add_psum_argument(parser: argparse.ArgumentParser) -> None:
    """`--psum-bits`, spelt once: as `CompileOptions.psum_bits` (`quantloop compile`'s flag)."""
    import dataclasses

    from quantloop.options import CompileOptions

    psum = next(f for f in dataclasses.fields(CompileOptions) if f.name == "psum_bits")
    psum.metadata["cli"].add(parser, psum)


def add_scheme_argument(parser: argparse.ArgumentParser) -> None:
    from quantloop.bits import SCHEMES

    parser.add_argument("--scheme", choices=list(SCHEMES),
                        help="weight quantization scheme (default: the target's, int; float on fp32 PEs)")


def layer_bits(args: argparse.Namespace, arch, file_bits=None):
    """The bits `quantloop map` / `cost` cost a layer at: --bits and its overrides over the problem file's
    bits, in --scheme, else as --bits spells it, else in the target's native scheme
    (`ComputeLevel.native_scheme`: float on fp32 PEs); no widths given: one value per word."""
    import dataclasses

    from quantloop.problem import Bits

    # --bits spells its own scheme (w32a32 is float); without it the target's native one applies
    scheme = args.scheme or ("int" if getattr(args, "bits", None) else arch.compute.native_scheme)
    if file_bits is not None:
        file_bits = dataclasses.replace(file_bits, scheme=scheme)
    return bits_from_args(args, default=file_bits, scheme=scheme) or Bits(scheme=scheme)


def bits_from_args(args: argparse.Namespace, default=None, scheme: str = "int"):
    """Bits from --bits and the per-data-space overrides; `default` (a Bits or None) fills the rest.

    Returns None when nothing was given and there is no default (stock one-value-per-word)."""
    from quantloop.problem import Bits

    base = Bits.parse(args.bits, scheme=scheme) if getattr(args, "bits", None) else default
    overrides = {
        "weights": getattr(args, "bits_weights", None),
        "inputs": getattr(args, "bits_inputs", None),
        "outputs": getattr(args, "bits_outputs", None),
    }
    if base is None and all(v is None for v in overrides.values()):
        return None
    base = base or Bits(scheme=scheme)
    psum = getattr(args, "psum_bits", None) or base.psum
    values = {k: (v if v is not None else getattr(base, k)) for k, v in overrides.items()}
    for key, value in values.items():
        # weights are stored in the scheme; activations uniformly (or in float, with float weights)
        scheme = base.scheme if key == "weights" or base.scheme == FLOAT_SCHEME else "int"
        legal = legal_widths(scheme)
        if value is not None and value not in legal:
            raise QuantloopError(
                f"bits of {key}: {value} is not a supported {'' if scheme == 'int' else scheme + ' '}bit-width "
                f"(use {legal_text(legal)})"
            )
    return Bits(**values, scheme=base.scheme, psum=psum)


def print_cost_tables(target: str, problem, bits, result) -> None:
    """The cost summary line and the per-level, per-data-space table of `quantloop cost` and `quantloop map`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 132))
    console.print(
        f"[bold]{problem.name or 'layer'}[/] on [bold]{target}[/], "
        f"bits {bits if any(b is not None for b in bits.as_tuple()) else 'stock (one value per word)'}: "
        f"energy {result.total_energy_pj:,.2f} pJ, cycles {result.cycles:,}, "
        f"utilization {result.utilization:.3f}, MACs {result.macs:,}, MAC energy {result.mac_energy_pj:,.2f} pJ"
    )
    table = Table(title="per level and data space (counts are words per instance)")
    for col in ("level", "data space", "values/word", "instances", "tile words", "reads", "fills", "updates", "energy pJ"):
        table.add_column(col, justify="left" if col in ("level", "data space") else "right")
    for s in result.per_level:
        table.add_row(
            s.level, s.dataspace, str(s.values_per_word), str(s.utilized_instances), f"{s.utilized_capacity_words:,}",
            f"{s.reads_per_instance:,}", f"{s.fills_per_instance:,}", f"{s.updates_per_instance:,}", f"{s.energy_pj:,.2f}",
        )
    console.print(table)
    leak = sum(result.leakage_pj.values())
    console.print(f"leakage {leak:,.2f} pJ")
