"""`quantloop targets`: every target found (built-in, QUANTLOOP_TARGET_PATH, entry points)."""

from __future__ import annotations

import argparse

HELP = "list built-in and plugged-in targets with their PEs, levels, capacities and word widths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _capacity(words: int | None, word_bits: int) -> str:
    if words is None:
        return "∞"
    bits = words * word_bits
    return f"{bits / 8 / 1024:g} KiB" if bits >= 8 * 1024 else f"{bits // 8} B" if bits % 8 == 0 else f"{bits} b"


def run(args: argparse.Namespace) -> int:
    import json

    from quantloop.targets.registry import discover, load_target

    rows = []
    for entry in discover():
        arch = load_target(entry.path)
        rows.append((entry, arch))
    if args.json:
        print(json.dumps([
            {
                "name": e.name, "source": e.source, "path": str(e.path), "pes": a.pe_count,
                "content_hash": a.content_hash,
                "levels": [
                    {"name": l.name, "instances": l.instances, "capacity_words": l.capacity_words, "word_bits": l.word_bits}
                    for l in a.levels
                ],
            }
            for e, a in rows
        ], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quantloop targets")
    for col in ("name", "source", "PEs", "levels (outer → inner): instances × capacity, word bits"):
        table.add_column(col)
    for entry, arch in rows:
        levels = ", ".join(
            f"{l.name} {l.instances}×{_capacity(l.capacity_words, l.word_bits)} {l.word_bits}b" for l in arch.levels
        )
        table.add_row(entry.name, entry.source, str(arch.pe_count), levels)
    Console(width=200).print(table)
    return 0
