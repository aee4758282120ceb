"""The `quantloop compile --search` flags (a light module: the CLI builds its parsers without xDSL)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

PROXY_SAMPLES = 64
DEFAULT_POPULATION = 24
DEFAULT_GENERATIONS = 14


@dataclass(frozen=True)
class SearchSettings:
    """The search flags of `quantloop compile --search`."""

    max_accuracy_drop: float = 0.5
    val_data: str | None = None
    test_data: str | None = None
    generations: int = DEFAULT_GENERATIONS
    population: int = DEFAULT_POPULATION
    seed: int = 0
    bits_range: str = "2..8"
    progress: bool = True
    proxy_samples: int = PROXY_SAMPLES


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mixed-precision search (--search)")
    group.add_argument("--search", action="store_true",
                       help="choose per-layer bit-widths by NSGA-II, re-mapping every layer at every candidate's bits")
    group.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="PP",
                       help="largest top-1 drop against the float model, in percentage points (default 0.5)")
    group.add_argument("--val-data", metavar="NPZ",
                       help="labelled selection data (.npz x, y); default zoo:digits-val for the digits models")
    group.add_argument("--test-data", metavar="NPZ",
                       help="held-out data the chosen point is reported on; default zoo:digits-test for digits models")
    group.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS, help=f"NSGA-II generations (default {DEFAULT_GENERATIONS})")
    group.add_argument("--population", type=int, default=DEFAULT_POPULATION, help=f"NSGA-II population (default {DEFAULT_POPULATION})")
    group.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    group.add_argument("--bits-range", default="2..8", metavar="LOW..HIGH", help="bit-widths searched (default 2..8)")


def search_settings(args: argparse.Namespace) -> SearchSettings | None:
    """The settings when `--search` was given, else None."""
    if not getattr(args, "search", False):
        return None
    return SearchSettings(
        max_accuracy_drop=args.max_accuracy_drop, val_data=args.val_data, test_data=args.test_data,
        generations=args.generations, population=args.population, seed=args.seed, bits_range=args.bits_range,
    )
