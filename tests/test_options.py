"""`CompileOptions`: one object from the CLI flags and the keyword API to the passes and the search."""

import argparse
import dataclasses

import pytest

from quantloop.driver import accel_passes, qnn_passes
from quantloop.options import CompileOptions, SearchSettings, add_arguments
from quantloop.passes.assign_bits import AssignBitsPass, AssignBitsTablePass
from quantloop.passes.search_bits import search_options


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_defaults_are_the_option_defaults():
    """No flag given: the options equal the dataclass defaults (one home for every default)."""
    assert CompileOptions.from_args(_parse([])) == CompileOptions()


def test_every_flag_lands_in_its_field():
    options = CompileOptions.from_args(_parse([
        "--target", "simba", "-o", "out", "--force", "--bits", "w4a8", "--objective", "edp", "--input-shape", "x=1x3x8x8",
        "--data", "d.npz", "--weight-clip", "mse", "--act-range", "percentile", "--percentile", "99.9", "--scheme", "pot",
        "--workers", "2", "--cache-dir", "c", "--no-cache", "--print-ir-after", "accel-map", "--dump-ir", "dump",
        "--elide-weights", "0", "--search", "--seed", "3", "--max-calib-samples", "64",
    ]))
    assert (options.target, options.output_dir, options.force, options.bits, options.objective) == ("simba", "out", True, "w4a8", "edp")
    assert options.input_shapes == {"x": (1, 3, 8, 8)} and options.data == "d.npz"
    assert (options.weight_clip, options.act_range, options.percentile, options.weight_scheme) == ("mse", "percentile", 99.9, "pot")
    assert (options.workers, options.cache_dir, options.use_cache) == (2, "c", False)
    assert options.print_ir_after == ("accel-map",) and options.dump_ir == "dump" and options.elide_weights_over is None
    assert options.search == SearchSettings(seed=3)
    assert options.max_calib_samples == 64


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--elide-weights", "-1"), ("--max-calib-samples", "0")])
def test_bad_flag_values_are_user_errors(flag, value):
    from quantloop.errors import QuantloopError

    with pytest.raises(QuantloopError, match=f"{flag} {value}"):
        CompileOptions.from_args(_parse([flag, value]))


@pytest.mark.parametrize("value", ["0", "-2"])
def test_qat_epochs_below_one_are_refused_as_quantloop_qat_refuses_them(value):
    from quantloop.errors import QuantloopError

    with pytest.raises(QuantloopError, match=f"--qat-epochs {value}: must be at least 1"):
        CompileOptions.from_args(_parse(["--search", "--qat-epochs", value]))
    with pytest.raises(QuantloopError, match=f"--qat-epochs {value}"):
        SearchSettings(qat_epochs=int(value))


def test_search_defaults_have_one_home():
    from quantloop.options import DEFAULT_QAT_EPOCHS
    from quantloop.passes.search.engine import SearchOptions

    assert SearchSettings().qat_epochs == SearchOptions(target="eyeriss").qat_epochs == DEFAULT_QAT_EPOCHS


def test_keyword_api_builds_options_and_rejects_unknown_names():
    assert CompileOptions.build(target="eyeriss", bits="w4a8") == CompileOptions(target="eyeriss", bits="w4a8")
    base = CompileOptions(target="simba")
    assert CompileOptions.build(base, workers=3) == CompileOptions(target="simba", workers=3)
    with pytest.raises(TypeError, match="no_such_option"):
        CompileOptions.build(no_such_option=1)


def test_options_reach_the_passes():
    options = CompileOptions(target="simba", bits="w4a8", bits_file="b.json", data="d.npz", weight_clip="mse",
                             weight_scheme="pot", act_range="percentile", percentile=99.0, objective="latency",
                             workers=2, cache_dir="c", use_cache=False, max_calib_samples=100)
    by_name = {p.name: p for p in qnn_passes(options, calibrate=True)}
    assign, calibrate = by_name["qnn-assign-bits"], by_name["qnn-calibrate"]
    assert type(assign) is AssignBitsPass and (assign.bits, assign.file) == ("w4a8", "b.json")
    assert (calibrate.data, calibrate.weight_clip, calibrate.scheme, calibrate.act_range, calibrate.percentile) == (
        "d.npz", "mse", "pot", "percentile", 99.0)
    assert calibrate.max_samples == 100
    lower, map_ = accel_passes(options)
    assert lower.target == "simba"
    assert (map_.objective, map_.workers, map_.cache_dir, map_.no_cache) == ("latency", 2, "c", True)
    passes = qnn_passes(options.replace(bits_file=None, bits_table={"conv1": {"weights": 4}}), calibrate=False)
    in_memory = next(p for p in passes if p.name == "qnn-assign-bits")
    assert type(in_memory) is AssignBitsTablePass and in_memory.name == "qnn-assign-bits"


def test_options_reach_the_search():
    settings = SearchSettings(max_accuracy_drop=1.0, population=6, generations=2, seed=5, bits_range="4,8")
    options = CompileOptions(target="eyeriss", objective="edp", workers=2, cache_dir="c", use_cache=False,
                             weight_clip="mse", act_range="percentile", percentile=99.0, search=settings,
                             max_calib_samples=100)
    engine = search_options(options)
    assert (engine.target, engine.objective, engine.workers, engine.cache_dir, engine.use_cache) == ("eyeriss", "edp", 2, "c", False)
    assert (engine.weight_clip, engine.act_range, engine.percentile) == ("mse", "percentile", 99.0)
    assert engine.max_calib_samples == 100
    assert (engine.max_accuracy_drop, engine.population, engine.generations, engine.seed, tuple(engine.widths)) == (
        1.0, 6, 2, 5, (4, 8))


def test_every_field_is_documented_in_one_place():
    """Each option is one field; the CLI flags come from the same fields (none re-listed elsewhere)."""
    names = {f.name for f in dataclasses.fields(CompileOptions)}
    parsed = vars(_parse([]))
    assert {f.name for f in dataclasses.fields(CompileOptions) if "cli" in f.metadata} - {"search"} <= set(parsed)
    assert "bits_table" in names and "bits_table" not in parsed
