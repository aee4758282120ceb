"""The accel dialect: every attribute and accel.layer print and parse back to identical text."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import Builtin, ModuleOp, TensorType, f32
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from quantloop.mapping import LevelMapping, Mapping
from quantloop.problem import Bits, Problem
from quantloop.errors import QuantloopError
from quantloop.bits import LEGAL_BITS, PSUM_MODES, legal_widths
from quantloop.ir.accel import (
    ACCEL,
    DATASPACES,
    DIMS,
    BitsAttr,
    CostAttr,
    LayerBits,
    LayerCost,
    LayerOp,
    LevelCost,
    MappingAttr,
    OperandBits,
    ProblemAttr,
    ProblemShape,
    SCHEMES,
    TargetAttr,
    TargetRef,
)


def _context() -> Context:
    ctx = Context()
    for dialect in (Builtin, func.Func, ACCEL):
        ctx.load_dialect(dialect)
    return ctx


def _text(obj) -> str:
    stream = io.StringIO()
    printer = Printer(stream=stream)
    if isinstance(obj, ModuleOp):
        printer.print_op(obj)
    else:
        printer.print_attribute(obj)
    return stream.getvalue()


def _round_trip(attr):
    text = _text(attr)
    parsed = Parser(_context(), text).parse_attribute()
    assert _text(parsed) == text
    assert parsed == attr
    return parsed


def _level(name: str, temporal=(), spatial_x=(), spatial_y=(), keep=()) -> LevelMapping:
    return LevelMapping(temporal, spatial_x, spatial_y, frozenset(keep), name)


# ------------------------------------------------------------------------------------------ strategies

positive = st.integers(min_value=1, max_value=4096)
problems = st.builds(ProblemShape, **{k: positive for k in DIMS}, Hstride=st.integers(1, 4), Wstride=st.integers(1, 4),
                     Hdilation=st.integers(1, 3), Wdilation=st.integers(1, 3))
# legal combinations only (the verifier refuses the rest): weights any scheme at its widths, activations int/uint
# float weights come with float inputs and outputs only (tests/test_fp32_pe.py round-trips that layer)
weight_bits = st.sampled_from([s for s in SCHEMES if s != "float"]).flatmap(
    lambda scheme: st.builds(OperandBits, st.sampled_from(legal_widths("int" if scheme == "uint" else scheme)), st.just(scheme)))
operand_bits = st.builds(OperandBits, st.sampled_from(LEGAL_BITS), st.sampled_from(["int", "uint"]))
loops = st.lists(st.tuples(st.sampled_from(DIMS), st.integers(2, 64)), max_size=4, unique_by=lambda x: x[0]).map(tuple)
level_names = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=10),
)
keeps = st.sets(st.sampled_from(DATASPACES)).map(lambda s: tuple(ds for ds in DATASPACES if ds in s))
levels = st.builds(LevelMapping, loops, loops, loops, keeps, level_names)
mappings = st.lists(levels, min_size=1, max_size=6, unique_by=lambda lvl: lvl.level).map(lambda lvls: Mapping(tuple(lvls)))
finite = st.floats(min_value=0.0, max_value=1e18, allow_nan=False, allow_infinity=False)
costs = st.builds(
    LayerCost, finite, st.integers(0, 10**12), st.floats(0, 1), st.integers(0, 10**12), finite, finite, st.booleans(),
    st.integers(0, 10**9),
    st.lists(st.builds(LevelCost, level_names, st.sampled_from(DATASPACES), finite, st.integers(0, 10**9)), max_size=8).map(tuple),
)


# ------------------------------------------------------------------------------------------- problem


def test_problem_text_is_the_documented_spelling():
    attr = ProblemAttr(ProblemShape(C=32, M=64, P=56, Q=56))
    assert _text(attr) == (
        "#accel.problem<N = 1, G = 1, C = 32, M = 64, P = 56, Q = 56, R = 1, S = 1, "
        "Hstride = 1, Wstride = 1, Hdilation = 1, Wdilation = 1>"
    )
    _round_trip(attr)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_problem_round_trips_text_and_costmodel(shape):
    attr = _round_trip(ProblemAttr(shape))
    if shape.macs > 2**40:  # the text holds any size; the cost model bounds tensors to 2^50 values
        return
    problem = attr.to_costmodel(name="layer")
    assert isinstance(problem, Problem) and problem.name == "layer"
    assert problem.dims == shape.dims and (problem.Hstride, problem.Wdilation) == (shape.Hstride, shape.Wdilation)
    assert ProblemAttr.from_costmodel(problem) == attr


def test_problem_parse_errors_name_the_field():
    with pytest.raises(ParseError, match="missing field"):
        Parser(_context(), "#accel.problem<N = 1>").parse_attribute()
    with pytest.raises(ParseError, match="unknown field 'K'"):
        Parser(_context(), "#accel.problem<K = 1>").parse_attribute()
    with pytest.raises(VerifyException, match="C must be a positive integer"):
        ProblemAttr(ProblemShape(C=0))


# ---------------------------------------------------------------------------------------------- bits


def test_bits_spelling_and_costmodel():
    attr = BitsAttr(LayerBits(OperandBits(4, "pot"), OperandBits(8, "uint"), OperandBits(8, "int")))
    assert _text(attr) == "#accel.bits<W = 4 : pot, I = 8 : uint, O = 8 : int>"
    assert attr.to_costmodel() == Bits(weights=4, inputs=8, outputs=8, scheme="pot")
    back = BitsAttr.from_costmodel(Bits(4, 8, 8, "pot"), inputs_signed=False, outputs_signed=True)
    assert back == attr


@settings(max_examples=60, deadline=None)
@given(weight_bits, operand_bits, operand_bits, st.sampled_from(PSUM_MODES))
def test_bits_round_trip(w, i, o, psum):
    _round_trip(BitsAttr(LayerBits(w, i, o, psum)))


def test_bits_psum_mode_is_spelt_and_reaches_the_costmodel():
    attr = BitsAttr(LayerBits(OperandBits(8, "int"), OperandBits(8, "uint"), OperandBits(8, "int"), "outputs"))
    assert _text(attr) == "#accel.bits<W = 8 : int, I = 8 : uint, O = 8 : int, psum = outputs>"
    assert attr.to_costmodel().psum == "outputs"
    assert BitsAttr.from_costmodel(attr.to_costmodel(), inputs_signed=False) == attr
    with pytest.raises(ParseError, match="partial sums"):
        Parser(_context(), "#accel.bits<W = 8 : int, I = 8 : int, O = 8 : int, psum = wide>").parse_attribute()


@pytest.mark.parametrize("text", ["W = 1 : pot, I = 8 : int, O = 8 : int", "W = 2 : pot2, I = 8 : int, O = 8 : int",
                                  "W = 9 : int, I = 8 : int, O = 8 : int", "W = 4 : int, I = 4 : pot, O = 8 : int"])
def test_bits_rejects_illegal_widths_and_schemes(text):
    with pytest.raises(VerifyException, match="#accel.bits"):
        BitsAttr(Parser(_context(), f"#accel.bits<{text}>").parse_attribute().data)


def test_bits_rejects_unknown_scheme():
    with pytest.raises(ParseError, match="scheme"):
        Parser(_context(), "#accel.bits<W = 4 : bf16, I = 8 : int, O = 8 : int>").parse_attribute()


# ------------------------------------------------------------------------------------------- mapping


def test_mapping_spelling():
    attr = MappingAttr(
        Mapping((
            _level("DRAM", (("M", 4), ("C", 2), ("P", 14)), (), (), DATASPACES),
            _level("shared_glb", (("Q", 8), ("P", 4)), (("Q", 7), ("M", 2)), (("M", 8),), ("Inputs", "Outputs")),
            _level("psum_spad", (), (), (), ("Outputs",)),
        ))
    )
    assert _text(attr) == (
        "#accel.mapping<DRAM: t[M4 C2 P14] keep[W I O], shared_glb: t[Q8 P4] x[Q7 M2] y[M8] keep[I O], "
        "psum_spad: keep[O]>"
    )
    _round_trip(attr)


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(mappings)
def test_mapping_round_trips_text_and_costmodel(levels):
    attr = _round_trip(MappingAttr(levels))
    mapping = attr.to_costmodel()
    assert isinstance(mapping, Mapping)
    names = [lvl.level for lvl in levels.levels]
    assert MappingAttr.from_costmodel(mapping, names) == attr
    assert MappingAttr.from_costmodel(mapping, names).to_costmodel() == mapping


def test_mapping_from_costmodel_drops_unit_loops_and_keeps_order():
    mapping = Mapping((LevelMapping((("P", 2), ("C", 1), ("M", 3)), (("M", 1),), (), frozenset({"Outputs", "Weights"})),))
    attr = MappingAttr.from_costmodel(mapping, ["L0"])
    assert _text(attr) == "#accel.mapping<L0: t[P2 M3] keep[W O]>"
    assert attr.to_costmodel() == mapping


@settings(max_examples=40, deadline=None)
@given(mappings)
def test_mapping_json_is_a_view_of_the_costmodel_mapping(levels):
    """The cache's and schedule.json's level form is `LevelMapping.to_json`; it round-trips, keep in DATASPACES order."""
    mapping = MappingAttr(levels).to_costmodel()
    data = json.loads(json.dumps(mapping.to_json()))
    assert Mapping.from_json(data) == mapping
    assert [lvl["keep"] for lvl in data] == [list(lvl.kept) for lvl in levels.levels]


def test_mapping_levels_follow_the_one_mapping_rules():
    """The IR holds `quantloop.mapping.LevelMapping` itself: its rules (known dims, factors ≥ 1, a dim once per
    level) hold when a level is built, in Python or from text."""
    with pytest.raises(QuantloopError, match="mapping: a dim appears twice"):
        _level("DRAM", (("M", 2), ("M", 3)), (), (), ("Weights",))
    with pytest.raises(ParseError, match="level DRAM: mapping: a dim appears twice"):
        Parser(_context(), "#accel.mapping<DRAM: t[M2 M3] keep[W]>").parse_attribute()


@pytest.mark.parametrize(
    "text, message",
    [
        ("#accel.mapping<DRAM: t[K4] keep[W]>", "expected a loop"),
        ("#accel.mapping<DRAM: t[M4]>", "keep"),
        ("#accel.mapping<DRAM: keep[W W]>", "kept twice"),
        ("#accel.mapping<DRAM: keep[X]>", "data space"),
    ],
)
def test_mapping_parse_errors(text, message):
    with pytest.raises(ParseError, match=message):
        Parser(_context(), text).parse_attribute()


def test_mapping_rejects_repeated_levels():
    with pytest.raises(VerifyException, match="repeat"):
        MappingAttr(Mapping((_level("A"), _level("A"))))


# ---------------------------------------------------------------------------------------------- cost


def test_cost_spelling():
    attr = CostAttr(LayerCost(1e7, 3000, 0.5, 1000, 12.5, 0.25, True, 12, (LevelCost("DRAM", "Weights", 1e-5, 64),)))
    assert " ".join(_text(attr).split()) == (  # wrapped at WRAP_COLUMN
        "#accel.cost<energy_pj = 10000000.0, cycles = 3000, utilization = 0.5, macs = 1000, mac_energy_pj = 12.5, "
        "leakage_pj = 0.25, optimal = true, mappings_considered = 12, per_level = [DRAM: W = 1.0e-05 pJ 64 b]>"
    )
    _round_trip(attr)


@settings(max_examples=60, deadline=None)
@given(costs)
def test_cost_round_trip(cost):
    _round_trip(CostAttr(cost))


def test_target_round_trip():
    _round_trip(TargetAttr(TargetRef("eyeriss", "ab" * 32)))
    _round_trip(TargetAttr(TargetRef('odd "name"', "")))


# ------------------------------------------------------------------------------------------------ op


def _layer_module(kind="conv", with_bias=True, mapping=None, cost=None) -> ModuleOp:
    shape = ProblemShape(N=1, G=1, C=3, M=8, P=4, Q=6, R=3, S=3)
    if kind == "depthwise":
        shape = ProblemShape(N=1, G=8, C=1, M=1, P=4, Q=6, R=3, S=3)
    block_types = [TensorType(f32, [1, shape.G * shape.C, 8, 6]), TensorType(f32, [shape.G * shape.M, shape.C, 3, 3]),
                   TensorType(f32, [shape.G * shape.M])]
    fn = func.FuncOp("main", (block_types, [TensorType(f32, [1, shape.G * shape.M, 6, 4])]))
    x, w, b = fn.body.block.args
    extra = {}
    if mapping is not None:
        extra = {"mapping": mapping, "cost": cost}
    layer = LayerOp(
        x, w, b if with_bias else None, TensorType(f32, [1, shape.G * shape.M, 6, 4]),
        name="conv1", kind=kind, problem=ProblemAttr(shape),
        bits=BitsAttr(LayerBits(OperandBits(8), OperandBits(8, "uint"), OperandBits(8, "uint"))), act="relu",
        extra=extra,
    )
    fn.body.block.add_ops([layer, func.ReturnOp(layer.output)])
    module = ModuleOp([fn])
    module.attributes["accel.target"] = TargetAttr(TargetRef("eyeriss", "0" * 64))
    return module


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_op_round_trip(kind, with_bias):
    mapping = MappingAttr(Mapping((_level("DRAM", (("M", 8),), (), (), DATASPACES),)))
    cost = CostAttr(LayerCost(1.5, 10, 0.25, 100, 1.0, 0.0, False, 3, ()))
    for module in (_layer_module(kind, with_bias), _layer_module(kind, with_bias, mapping, cost)):
        module.verify()
        text = _text(module)
        parsed = Parser(_context(), text).parse_module()
        parsed.verify()
        assert _text(parsed) == text
        assert "= accel.layer %" in text and "#accel.target<" in text  # the custom syntax


def test_layer_verifier_explains_shape_mismatch():
    module = _layer_module()
    layer = next(op for op in module.walk() if isinstance(op, LayerOp))
    layer.properties["problem"] = ProblemAttr(ProblemShape(N=1, G=1, C=4, M=8, P=4, Q=6, R=3, S=3))
    with pytest.raises(VerifyException, match="conv1.*G·C"):
        module.verify()


def test_layer_parser_rejects_unknown_kind():
    text = _text(_layer_module())
    assert "kind = conv," in text
    with pytest.raises(ParseError, match="kind 'pool' is not one of conv, depthwise, gemm"):
        Parser(_context(), text.replace("kind = conv,", "kind = pool,")).parse_module()


# ------------------------------------------------------------------------ reference Timeloop mappings

REFERENCE = __import__("pathlib").Path(__import__("os").environ["QUANTLOOP_REFERENCE_DIR"])
REFERENCE_CASES = [
    (arch, case)
    for arch in ("eyeriss_like", "simba_like")
    for case in ("conv3x3_C64_M64_P56", "dw3x3_G64_P56", "pw1x1_C32_M64_P56", "default_problem")
]


@pytest.mark.parametrize("arch_name, case", REFERENCE_CASES)
def test_reference_mapping_round_trips_through_text_and_evaluates_the_same(arch_name, case):
    from quantloop.costmodel.model import evaluate
    from quantloop.costmodel.timeloop_yaml import read_mapping, read_problem
    from quantloop.targets.registry import load_target

    arch = load_target({"eyeriss_like": "eyeriss", "simba_like": "simba"}[arch_name])
    problem, _ = read_problem(REFERENCE / arch_name / case / "problem.yaml")
    mapping = read_mapping(REFERENCE / arch_name / case / "map.yaml", arch)
    attr = _round_trip(MappingAttr.from_costmodel(mapping, [lvl.name for lvl in arch.levels]))
    assert attr.to_costmodel() == mapping
    problem_attr = _round_trip(ProblemAttr.from_costmodel(problem))
    bits = Bits(8, 8, 8)
    direct = evaluate(arch, problem, mapping, bits)
    via_text = evaluate(arch, problem_attr.to_costmodel(), attr.to_costmodel(), bits)
    assert via_text.total_energy_pj == direct.total_energy_pj and via_text.cycles == direct.cycles


def test_problem_has_one_data_model():
    """The IR payload is the cost model's shape: one field list, one positivity rule, one conversion each way."""
    import quantloop.problem as cm

    assert ProblemShape is cm.ProblemShape and issubclass(Problem, ProblemShape)
    problem = Problem(C=3, M=8, P=5, Q=7, R=3, S=3, Wstride=2, Hdilation=2, name="conv")
    attr = ProblemAttr.from_costmodel(problem)
    assert type(attr.data) is ProblemShape and attr.data.shape_fields == problem.shape_fields
    assert attr.to_costmodel("conv") == problem
    with pytest.raises(QuantloopError, match="problem x: C must be a positive integer"):
        Problem(C=0, name="x")
