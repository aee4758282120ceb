"""`quantloop targets`: every target found (built-in, QUANTLOOP_TARGET_PATH, entry points), with
its area; `quantloop targets import DESIGN [-o my.yaml]`: a Timeloop design as quantloop target YAML."""

from __future__ import annotations

import argparse

HELP = "list targets (PEs, levels, capacities, word widths, area) or import a Timeloop design"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="action", metavar="{import}")
    imp = sub.add_parser(
        "import", help="write a Timeloop design (folder with arch.yaml, ERT.yaml, ART.yaml) as quantloop target YAML",
        description="Read a Timeloop v0.4 design folder (arch.yaml, components/, ERT.yaml, ART.yaml) or a v0.3 / "
                    "flattened architecture file and write the equivalent quantloop target YAML.",
    )
    imp.add_argument("design", help="Timeloop design folder or architecture YAML")
    imp.add_argument("-o", "--output", help="YAML file to write (default: print it)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing output file")


def _capacity(words: int | None, word_bits: int) -> str:
    if words is None:
        return "∞"
    bits = words * word_bits
    return f"{bits / 8 / 1024:g} KiB" if bits >= 8 * 1024 else f"{bits // 8} B" if bits % 8 == 0 else f"{bits} b"


def _import(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    import yaml

    from quantloop.errors import QuantloopError
    from quantloop.targets.timeloop_design import design_spec

    spec = design_spec(args.design)
    data = spec.model_dump(mode="json", exclude_defaults=True)
    text = (f"# quantloop target imported from the Timeloop design {Path(args.design).name} "
            "(energies: ERT, pJ per vector access; area_um2: ART, per instance)\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    if not args.output:
        print(text, end="")
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise QuantloopError(f"{out}: exists (add --force to overwrite)")
    if not out.parent.is_dir():
        raise QuantloopError(f"{out}: folder {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    import json

    from quantloop.targets.area import format_mm2, target_area
    from quantloop.targets.registry import discover, load_target

    if getattr(args, "action", None) == "import":
        return _import(args)
    import sys

    from quantloop.errors import QuantloopError

    rows = []
    for entry in discover():
        try:
            arch = load_target(entry.spec)
        except QuantloopError as err:  # one broken file must not hide every other target
            print(f"quantloop: warning: {err} (target {entry.name} skipped)", file=sys.stderr)
            continue
        rows.append((entry, arch, target_area(arch)))
    if args.json:
        print(json.dumps([
            {
                "name": e.name, "source": e.source, "path": str(e.path), "pes": a.pe_count,
                "content_hash": a.content_hash, "area": area.to_json(), "pe_type": a.compute.pe_type,
                "clock_mhz": a.compute.clock_mhz,
                "levels": [
                    {"name": l.name, "instances": l.instances, "capacity_words": l.capacity_words, "word_bits": l.word_bits,
                     "area_mm2": area.levels[l.name]}
                    for l in a.levels
                ],
            }
            for e, a, area in rows
        ], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quantloop targets")
    for col in ("name", "source", "PEs", "PE type, clock", "levels (outer → inner): instances × capacity, word bits, area", "area"):
        table.add_column(col)
    for entry, arch, area in rows:
        levels = ", ".join(
            f"{l.name} {l.instances}×{_capacity(l.capacity_words, l.word_bits)} {l.word_bits}b {format_mm2(area.levels[l.name])}"
            for l in arch.levels
        )
        clock = "n/a" if arch.compute.clock_mhz is None else f"{arch.compute.clock_mhz:g} MHz"
        table.add_row(entry.name, entry.source, str(arch.pe_count), f"{arch.compute.pe_type or arch.compute.name}, {clock}", levels + f", {arch.compute.name} {format_mm2(area.compute)}",
                      format_mm2(area.total_mm2))
    Console(width=200).print(table)
    return 0
