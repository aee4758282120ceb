"""`quantloop zoo`: list the model zoo."""

from __future__ import annotations

import argparse

HELP = "list the models of the zoo (use them as zoo:NAME or zoo:NAME?width=0.5&resolution=96)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args: argparse.Namespace) -> int:
    from quantloop.frontend.zoo import ZOO, list_models
    from quantloop.frontend.zoo.registry import known_names

    infos = list_models()
    if args.json:
        import dataclasses
        import json

        print(json.dumps([dataclasses.asdict(i) for i in infos], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quantloop model zoo (generated models at width 1.0, resolution 224)")
    table.add_column("spec")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("description")
    for info in infos:
        table.add_row(f"zoo:{info.name}", f"{info.params:,}", f"{info.macs / 1e6:,.1f} M", info.description)
    console = Console()
    console.print(table)
    data = [ZOO[name] for name in known_names("data")]
    if data:
        data_table = Table(title="data sets (use with --data)")
        data_table.add_column("spec")
        data_table.add_column("description")
        for entry in data:
            data_table.add_row(f"zoo:{entry.name}", entry.description)
        console.print(data_table)
    return 0
