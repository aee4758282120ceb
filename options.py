"""One options object for a compile: `CompileOptions`, and the defaults every layer shares.

The same object flows from the CLI (`quantloop compile`'s flags are generated from the fields
below) and from the Python API (`quantloop.compile(model, target="eyeriss", bits="w4a8")` builds
one from its keywords) through `driver.compile`, the passes it builds and the mixed-precision
search (`cosearch.run_search`). Nothing re-lists the options or re-states their defaults.

Adding an option is one edit here: a field with its default, and `metadata=flag("--name",
help=...)` when `quantloop compile` should have a flag for it (the flag's value lands in the field
of the same name; `convert=` maps the flag's value to the option's, e.g. a count to a bool). The
Python keyword exists as soon as the field does. Then read `options.name` where it takes effect:
the driver hands the whole object to the search and builds the passes from it (`driver.qnn_passes`,
`driver.accel_passes`), so it reaches both without further threading.

This module is light on purpose (standard library only): the CLI imports it to build its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantloop.bits import PSUM_MODES
from quantloop.errors import QuantloopError
from quantloop.parallel import CLUSTER_MIN_CANDIDATES, POOL_MAX_WORKERS, POOL_MIN_LAYERS

OBJECTIVES = ("energy", "latency", "edp")
"""What the mapper minimises per layer (and the search over the network)."""

DEFAULT_BITS = "w8a8"
DEFAULT_PERCENTILE = 99.9
"""Two-sided activation percentile of `act_range="percentile"` calibration."""
DEFAULT_WEIGHT_CLIP = "mse"
DEFAULT_ACT_RANGE = "percentile"
"""Calibration defaults: MSE-searched per-channel weight clipping and 99.9th-percentile activation ranges.
At 2–4 bits they keep far more accuracy than min-max (the digits MobileNetV2 search on eyeriss saves
39.8 % energy at ≤ 0.5 pp drop with them, 18.8 % with min-max); at 8 bits they cost about nothing."""
DEFAULT_MAX_CALIB_SAMPLES = 2048
"""Calibration data beyond this many samples is not run (qnn-calibrate and the search's range
observation): ranges settle long before, and calibration time stays bounded."""


@dataclass(frozen=True)
class Cli:
    """How `quantloop compile` spells one option: `add` puts its flag(s) on the parser with
    `dest` = the field name, `read` takes the option's value back from the parsed arguments."""

    add: Callable[[argparse.ArgumentParser, dataclasses.Field], None]
    read: Callable[[argparse.Namespace, str], Any]


def flag(*names: str, convert: Callable[[Any], Any] | None = None, **argparse_kwargs: Any) -> dict[str, Cli]:
    """Field metadata for an option with one command-line flag (argparse keywords as usual; the
    default is the field's unless given)."""

    def add(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
        kwargs = dict(argparse_kwargs)
        if kwargs.get("action") not in ("store_true", "store_false", "append"):
            kwargs.setdefault("default", f.default)
        parser.add_argument(*names, dest=f.name, **kwargs)

    def read(args: argparse.Namespace, name: str) -> Any:
        value = getattr(args, name)
        return convert(value) if convert is not None else value

    return {"cli": Cli(add, read)}


def parse_input_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """`["x=1x3x224x224", "y=1x10"]` -> `{"x": (1, 3, 224, 224), "y": (1, 10)}`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise QuantloopError(f"--input-shape {item!r}: expected NAME=DxDx... with positive integers, e.g. x=1x3x224x224")
        shapes[name] = shape
    return shapes


def _input_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    return parse_input_shapes(items) if items else None


def _workers(value: int | None) -> int | None:
    from quantloop.parallel import check_workers

    return value if value is None else check_workers(value)


def _scheduler(value: str | None) -> str | None:
    from quantloop.parallel import check_scheduler

    return value if value is None else check_scheduler(value)


def _elide_weights(value: int) -> int | None:
    if value < 0:
        raise QuantloopError(f"--elide-weights {value}: must be 0 (print every weight) or more")
    return None if value == 0 else value


def _max_calib_samples(value: int) -> int:
    if value < 1:
        raise QuantloopError(f"--max-calib-samples {value}: must be at least 1")
    return value


def _emit(value: str | None) -> tuple[str, ...] | None:
    if value is None:  # the default stays None, as from the Python API
        return None
    from quantloop.backend.emit import parse_emit

    return parse_emit(value)


def _emit_help() -> str:
    from quantloop.backend.emit import emit_help

    return emit_help()


# ----------------------------------------------------------------------------- the search

PROXY_SAMPLES = 64
DEFAULT_QAT_EPOCHS = 6
"""QAT epochs per fine-tuned candidate: digits MobileNetV2 at w4a4, 2 epochs leave 0.5 pp of validation drop,
6 none (README)."""


def check_epochs(value: int, flag: str) -> int:
    """The one rule on a count of training epochs (`--qat-epochs`, `quantloop qat --epochs`)."""
    if value < 1:
        raise QuantloopError(f"{flag} {value}: must be at least 1")
    return value
ACCURACY_MODES = ("ptq", "qat", "qat-front")
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
    accuracy: str = "ptq"
    train_data: str | None = None
    qat_epochs: int = DEFAULT_QAT_EPOCHS

    def __post_init__(self) -> None:
        check_epochs(self.qat_epochs, "--qat-epochs")


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
    group.add_argument("--accuracy", choices=ACCURACY_MODES, default=SearchSettings.accuracy,
                       help="ptq: post-training quantization; qat: the PTQ search continued for --generations more "
                            "with QAT in the loop: a candidate PTQ puts outside the allowed drop that is cheaper than the "
                            "best feasible one is judged after a short LSQ fine-tune (a passing run is repeated at the "
                            "next seed and the lower accuracy counts; cached), and a fine-tuned choice compiles as its "
                            "QAT model; qat-front: PTQ search, then fine-tune the Pareto front's points cheaper than "
                            "w8a8, cheapest first, until one keeps the accuracy (default ptq)")
    group.add_argument("--train-data", metavar="NPZ", help="labelled QAT training data; default zoo:digits-train for digits models")
    group.add_argument("--qat-epochs", type=int, default=SearchSettings.qat_epochs,
                       help=f"QAT epochs per fine-tuning run (default {SearchSettings.qat_epochs})")


def search_settings(args: argparse.Namespace) -> SearchSettings | None:
    """The settings when `--search` was given, else None."""
    if not getattr(args, "search", False):
        return None
    return SearchSettings(
        max_accuracy_drop=args.max_accuracy_drop, val_data=args.val_data, test_data=args.test_data,
        generations=args.generations, population=args.population, seed=args.seed, bits_range=args.bits_range,
        accuracy=args.accuracy, train_data=args.train_data, qat_epochs=args.qat_epochs,
    )


def _add_search_flags(parser: argparse.ArgumentParser, _: dataclasses.Field) -> None:
    add_search_arguments(parser)


def _read_search_flags(args: argparse.Namespace, _: str) -> SearchSettings | None:
    return search_settings(args)


# ----------------------------------------------------------------------------- a compile


@dataclass(frozen=True)
class CompileOptions:
    """Everything a compile can be told. Defaults here are the only defaults."""

    target: str | None = field(
        default=None, metadata=flag(
            "--target", help="target name (see `quantloop targets`), a target YAML file, or a Timeloop design folder"
        ),
    )
    output_dir: str | Path | None = field(
        default=None, metadata=flag("-o", "--output", metavar="DIR", help="write schedules, packed weights and the report here")
    )
    force: bool = field(default=False, metadata=flag("--force", action="store_true", help="replace an existing output folder"))
    emit: str | Sequence[str] | None = field(
        default=None, metadata=flag("--emit", metavar="LIST", convert=_emit, help=_emit_help())
    )
    """Artefacts written to `output_dir` (`backend.emit.parse_emit`: "schedule,weights", a list, "all";
    None: `backend.emit.DEFAULT_EMIT`)."""
    bits: str = field(
        default=DEFAULT_BITS,
        metadata=flag("--bits", help=f"uniform bit-widths, e.g. w8a8, w4a8 (default: {DEFAULT_BITS})"),
    )
    bits_file: str | None = field(
        default=None,
        metadata=flag("--bits-file", metavar="JSON", help='per-layer bits: {"conv1": {"weights": 4, "activations": 8}}'),
    )
    bits_table: Mapping[str, Mapping[str, int]] | None = None
    """Per-layer bits in memory, the same shape as a bits file (the search hands its choice over here)."""
    objective: str = field(default="energy", metadata=flag("--objective", choices=list(OBJECTIVES)))
    psum_bits: str = field(
        default=PSUM_MODES[0],
        metadata=flag(
            "--psum-bits", choices=list(PSUM_MODES),
            help="width of stored partial sums: the accumulator's (a level's partial_sum_bits, else max(o, w + a); "
                 "default) or the Outputs width (the quantization fork's convention)",
        ),
    )
    """How every layer stores partial sums (`quantloop.problem.Bits.psum`): mapping, cost, emitted files, cache key."""
    input_shapes: Mapping[str, Sequence[int]] | None = field(
        default=None,
        metadata=flag(
            "--input-shape", action="append", metavar="NAME=DxD..", convert=_input_shapes,
            help="fix a symbolic input shape, e.g. x=1x3x224x224",
        ),
    )
    data: str | None = field(
        default=None, metadata=flag("--data", metavar="NPZ", help="calibration data: .npz with array x (or zoo:digits-calib)")
    )
    weight_clip: str = field(
        default=DEFAULT_WEIGHT_CLIP,
        metadata=flag("--weight-clip", choices=["minmax", "mse"],
                      help=f"per-channel weight scales: max |w|, or the clip of least squared error (default {DEFAULT_WEIGHT_CLIP})"),
    )
    act_range: str = field(
        default=DEFAULT_ACT_RANGE,
        metadata=flag(
            "--act-range", choices=["minmax", "percentile"],
            help=f"activation ranges from calibration: extremes or percentiles (default {DEFAULT_ACT_RANGE})",
        ),
    )
    percentile: float = field(
        default=DEFAULT_PERCENTILE,
        metadata=flag("--percentile", type=float, help=f"with --act-range percentile (default {DEFAULT_PERCENTILE})"),
    )
    max_calib_samples: int = field(
        default=DEFAULT_MAX_CALIB_SAMPLES,
        metadata=flag(
            "--max-calib-samples", type=int, metavar="N", convert=_max_calib_samples,
            help=f"calibrate on at most the first N samples of --data, whole batches (default {DEFAULT_MAX_CALIB_SAMPLES})",
        ),
    )
    weight_scheme: str = field(
        default="int", metadata=flag("--scheme", choices=["int", "pot", "pot2"], help="weight quantization scheme")
    )
    workers: int | None = field(
        default=None, metadata=flag(
            "--workers", type=int, convert=_workers,
            help=f"map layers in this many processes (default: one per core, up to {POOL_MAX_WORKERS}, when "
                 f"{POOL_MIN_LAYERS} or more layers need searching; a cached run starts none); with --search, evaluate candidates on a Dask LocalCluster of "
                 f"this many workers (1: this process; default: one per core, up to {POOL_MAX_WORKERS}, when population × "
                 f"generations is {CLUSTER_MIN_CANDIDATES} or more, else this process)",
        ),
    )
    """None: `quantloop.mapper.api.default_workers` decides for the mapping, and `quantloop.parallel.auto_workers`
    whether --search runs on a LocalCluster."""
    scheduler: str | None = field(
        default=None, metadata=flag("--scheduler", metavar="tcp://HOST:PORT", convert=_scheduler,
                                    help="with --search, evaluate candidates on this existing Dask cluster"),
    )
    """Where `--search` runs its evaluations (`quantloop.parallel.open_pool`, as `quantloop explore`)."""
    cache_dir: str | None = field(
        default=None, metadata=flag("--cache-dir", help="mapper cache folder (default: the user cache directory)")
    )
    use_cache: bool = field(
        default=True,
        metadata=flag("--no-cache", action="store_true", convert=lambda no: not no, help="do not read or write the mapper cache"),
    )
    print_ir_after_all: bool = field(
        default=False, metadata=flag("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    )
    print_ir_after: Sequence[str] = field(
        default=(),
        metadata=flag(
            "--print-ir-after", action="append", default=[], metavar="PASS", convert=tuple, help="print the IR after PASS"
        ),
    )
    dump_ir: str | Path | None = field(
        default=None, metadata=flag("--dump-ir", metavar="DIR", help="write one numbered .mlir file per pass into DIR")
    )
    elide_weights_over: int | None = field(
        default=16,
        metadata=flag(
            "--elide-weights", type=int, metavar="N", convert=_elide_weights,
            help="in printed IR, elide constants with more than N values (0: print all; default 16)",
        ),
    )
    verify_timeloop: bool = field(
        default=False,
        metadata=flag(
            "--verify-timeloop", action="store_true",
            help="re-evaluate every mapped layer (the emitted timeloop/<layer>/ files with -o) in real timeloop-model "
                 "(QUANTLOOP_TIMELOOP or PATH) and report the differences, flagging any over 1 %%",
        ),
    )
    synergy: bool = field(
        default=False,
        metadata=flag(
            "--synergy", action="store_true",
            help="report where the saving against uniform w8a8 comes from (MAC energy, packing, re-mapping, mapper "
                 "seed noise, DRAM traffic vs the compulsory minimum); costs extra mapper runs per layer",
        ),
    )
    """Add `passes.search.synergy.decompose_module` of the mapped layers to the result and report.json."""
    command_line: str = ""
    """Recorded in the artefacts (the CLI sets it to its own command line)."""
    search: SearchSettings | None = field(default=None, metadata={"cli": Cli(_add_search_flags, _read_search_flags)})
    """Run the mixed-precision co-search with these settings and compile its choice."""

    def replace(self, **changes: Any) -> CompileOptions:
        """A copy with `changes` (unknown names are an error, as for the constructor)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, options: CompileOptions | None = None, **keywords: Any) -> CompileOptions:
        """`options` (or the defaults) with keyword overrides: what the keyword API accepts."""
        base = options if options is not None else cls()
        unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown compile option(s) {', '.join(unknown)}; see quantloop.options.CompileOptions")
        return dataclasses.replace(base, **keywords) if keywords else base

    @classmethod
    def from_args(cls, args: argparse.Namespace, **keywords: Any) -> CompileOptions:
        """The options of a parsed `quantloop compile` command line (flags added by `add_arguments`)."""
        values = {f.name: f.metadata["cli"].read(args, f.name) for f in dataclasses.fields(cls) if "cli" in f.metadata}
        return cls(**values, **keywords)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `CompileOptions` flag, in field order."""
    for f in dataclasses.fields(CompileOptions):
        if "cli" in f.metadata:
            f.metadata["cli"].add(parser, f)
