"""qnn ops: constructors, verifiers, text round trips, weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Operation

from quantloop.errors import QuantloopError
from quantloop.ir.qnn import (
    QNN_OPS,
    AddOp,
    AvgPoolOp,
    BatchNormOp,
    ClipOp,
    ConcatOp,
    ConstantOp,
    Conv2dOp,
    DenseWeightsAttr,
    DequantizeOp,
    DropoutOp,
    FlattenOp,
    GemmOp,
    GlobalAvgPoolOp,
    HostOp,
    IdentityOp,
    IntType,
    MainBuilder,
    MatMulOp,
    MaxPoolOp,
    Pot2Type,
    PotType,
    QuantizeOp,
    ReluOp,
    ReshapeOp,
    SoftmaxOp,
    UniformPerAxisType,
    UniformType,
    main_func,
    parse_module,
    verify_module,
    print_module,
)

RNG = np.random.default_rng(0)


def t(*shape, elem=f32):
    return TensorType(elem, list(shape))


def const(b, shape, dtype=np.float32, elem=f32, name=None):
    return b.add(ConstantOp(RNG.standard_normal(shape).astype(dtype), t(*shape, elem=elem), name=name))


def build_conv():
    b = MainBuilder([t(1, 4, 9, 9)], ["x"])
    w = const(b, (8, 2, 3, 3), name="conv.w")
    bias = const(b, (8,))
    y = b.add(Conv2dOp(b.args[0], w, bias, strides=(2, 2), pads=(1, 0, 1, 2), group=2, act="clip",
                       act_min=0.0, act_max=6.0, name="conv"))
    assert y.output.type == t(1, 8, 5, 5)
    return b.finish([y]), y


def build_depthwise_dilated():
    b = MainBuilder([t(2, 6, 10, 10, elem=IntType(4, False))])
    w = const(b, (6, 1, 3, 3), elem=IntType(4, True))
    y = b.add(Conv2dOp(b.args[0], w, dilations=(2, 2), group=6, act="relu", name="dw"))
    assert y.output.type.get_shape() == (2, 6, 6, 6) and y.is_depthwise
    return b.finish([y]), y


def build_gemm():
    b = MainBuilder([t(3, 5)])
    w = const(b, (7, 5), dtype=np.int8, elem=UniformPerAxisType(8, True, 0, [0.5] * 7, [0] * 7))
    c = const(b, (7,))
    y = b.add(GemmOp(b.args[0], w, c, alpha=0.5, beta=2.0, trans_b=True, name="fc"))
    assert y.output.type == t(3, 7)
    return b.finish([y]), y


def build_matmul():
    b = MainBuilder([t(2, 1, 3, 4)])
    w = const(b, (5, 4, 6))
    y = b.add(MatMulOp(b.args[0], w, name="mm"))
    assert y.output.type == t(2, 5, 3, 6)
    return b.finish([y]), y


def build_add():
    b = MainBuilder([t(1, 4, 3, 3), t(4, 1, 1)])
    y = b.add(AddOp(b.args[0], b.args[1], act="relu", name="add"))
    return b.finish([y]), y


def build_relu():
    b = MainBuilder([t(1, 4, 3, 3)])
    y = b.add(ReluOp(b.args[0], name="relu"))
    return b.finish([y]), y


def build_clip():
    b = MainBuilder([t(1, 4)])
    y = b.add(ClipOp(b.args[0], 0.0, 6.0, name="relu6"))
    return b.finish([y]), y


def build_maxpool():
    b = MainBuilder([t(1, 3, 7, 7)])
    y = b.add(MaxPoolOp(b.args[0], (3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, name="pool"))
    assert y.output.type.get_shape() == (1, 3, 4, 4)
    return b.finish([y]), y


def build_avgpool():
    b = MainBuilder([t(1, 3, 8, 8)])
    y = b.add(AvgPoolOp(b.args[0], (2, 2), strides=(2, 2), count_include_pad=True, name="avg"))
    assert y.output.type.get_shape() == (1, 3, 4, 4)
    return b.finish([y]), y


def build_global_avgpool():
    b = MainBuilder([t(2, 3, 8, 8)])
    y = b.add(GlobalAvgPoolOp(b.args[0], name="gap"))
    assert y.output.type.get_shape() == (2, 3, 1, 1)
    return b.finish([y]), y


def build_reshape():
    b = MainBuilder([t(2, 3, 4)])
    y = b.add(ReshapeOp(b.args[0], (0, -1), name="reshape"))
    assert y.output.type.get_shape() == (2, 12)
    return b.finish([y]), y


def build_flatten():
    b = MainBuilder([t(2, 3, 4, 5)])
    y = b.add(FlattenOp(b.args[0], -2, name="flatten"))
    assert y.output.type.get_shape() == (6, 20)
    return b.finish([y]), y


def build_concat():
    b = MainBuilder([t(1, 2, 4), t(1, 3, 4), t(1, 1, 4)])
    y = b.add(ConcatOp(b.args, 1, name="cat"))
    assert y.output.type.get_shape() == (1, 6, 4)
    return b.finish([y]), y


def build_softmax():
    b = MainBuilder([t(2, 10)])
    y = b.add(SoftmaxOp(b.args[0], -1, name="softmax"))
    return b.finish([y]), y


def build_constant():
    b = MainBuilder([])
    y = b.add(ConstantOp(np.arange(6, dtype=np.int32).reshape(2, 3), t(2, 3, elem=PotType(4)), name="k"))
    return b.finish([y]), y


def build_quantize_dequantize():
    b = MainBuilder([t(1, 3, 2, 2)])
    q = b.add(QuantizeOp(b.args[0], t(1, 3, 2, 2, elem=UniformPerAxisType(8, False, 1, [0.1, 0.2, 1e-9], [0, 3, 255])),
                         name="q"))
    q2 = b.add(QuantizeOp(b.args[0], t(1, 3, 2, 2, elem=UniformType(4, True, 0.02, -1))))
    d = b.add(DequantizeOp(q, name="dq"))
    d2 = b.add(DequantizeOp(q2))
    return b.finish([d, d2]), d


def build_batchnorm():
    b = MainBuilder([t(1, 3, 4, 4)])
    params = [const(b, (3,)) for _ in range(4)]
    y = b.add(BatchNormOp(b.args[0], *params, epsilon=1e-3, name="bn"))
    return b.finish([y]), y


def build_identity_dropout():
    b = MainBuilder([t(1, 3, elem=Pot2Type(8))])
    i = b.add(IdentityOp(b.args[0], name="id"))
    d = b.add(DropoutOp(i, 0.25, name="drop"))
    return b.finish([d]), d


def build_host():
    """LRN and Split with every attribute kind, an int64 constant operand and an omitted optional input."""
    from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, FloatAttr, IntegerAttr, StringAttr, i64

    b = MainBuilder([t(1, 4, 3, 3)])
    lrn = b.add(HostOp("LRN", [b.args[0]], [t(1, 4, 3, 3)], {"size": IntegerAttr(5, i64), "alpha": FloatAttr(1e-4, f32),
                                                             "beta": FloatAttr(0.75, f32)}, name="lrn 1"))
    sizes = b.add(ConstantOp(np.array([1, 3], np.int64), TensorType(i64, [2]), name="sizes"))
    split = b.add(HostOp("Split", [lrn, sizes], [t(1, 1, 3, 3), t(1, 3, 3, 3)], {"axis": IntegerAttr(1, i64)}, name="split"))
    resize = b.add(HostOp("Resize", [split.results[1], b.add(ConstantOp(np.array([1, 1, 2, 2], np.float32)))],
                          [t(1, 3, 6, 6)], {"mode": StringAttr("nearest"), "axes": DenseArrayBase.from_list(i64, [0, 1, 2, 3]),
                                            "names": ArrayAttr([StringAttr("a")])}, absent=[1], name="resize"))
    return b.finish([split.results[0], resize]), resize


BUILDERS = [
    build_host,
    build_conv,
    build_depthwise_dilated,
    build_gemm,
    build_matmul,
    build_add,
    build_relu,
    build_clip,
    build_maxpool,
    build_avgpool,
    build_global_avgpool,
    build_reshape,
    build_flatten,
    build_concat,
    build_softmax,
    build_constant,
    build_quantize_dequantize,
    build_batchnorm,
    build_identity_dropout,
]


def test_every_op_has_a_round_trip_case():
    covered = set()
    for build in BUILDERS:
        module, _ = build()
        covered |= {type(op) for op in module.walk()}
    assert set(QNN_OPS) <= covered


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__[6:])
@pytest.mark.parametrize("elide", [None, 16, 0])
def test_round_trip(build, elide):
    module, _ = build()
    module.verify()
    text = print_module(module, elide_weights_over=elide)
    assert '"qnn.' not in text, "every qnn op prints in the custom syntax (derive new ops from QnnOp)"
    parsed = parse_module(text)
    assert print_module(parsed, elide_weights_over=elide) == text
    if elide is None:
        assert parsed.is_structurally_equivalent(module)
        for a, b in zip(
            (o for o in module.walk() if isinstance(o, ConstantOp)),
            (o for o in parsed.walk() if isinstance(o, ConstantOp)),
        ):
            assert a.array.dtype == b.array.dtype
            np.testing.assert_array_equal(a.array, b.array)


def test_names_and_accessors():
    module, conv = build_conv()
    assert conv.node_name == "conv" and conv.name == "qnn.conv2d"
    assert (conv.strides, conv.pads, conv.dilations, conv.group) == ((2, 2), (1, 0, 1, 2), (1, 1), 2)
    assert (conv.act, conv.act_min, conv.act_max) == ("clip", 0.0, 6.0)
    parsed_conv = next(o for o in parse_module(print_module(module)).walk() if isinstance(o, Conv2dOp))
    assert parsed_conv.node_name == "conv" and parsed_conv.pads == (1, 0, 1, 2)
    _, gemm = build_gemm()
    assert (gemm.alpha, gemm.beta, gemm.trans_a, gemm.trans_b) == (0.5, 2.0, False, True)
    _, pool = build_maxpool()
    assert (pool.kernel, pool.strides, pool.pads, pool.ceil_mode) == ((3, 3), (2, 2), (1, 1, 1, 1), True)
    _, unnamed = build_relu()
    assert unnamed.node_name == "relu"
    assert main_func(build_relu()[0]).sym_name.data == "main"


def test_per_axis_types_print_as_aliases():
    module, _ = build_quantize_dequantize()
    text = print_module(module)
    assert text.startswith("!qnn_q0 = !qnn.uniform<u8:f32:1, {0.1:0, 0.2:3, 1.0e-09:255}>\n")
    assert "tensor<1x3x2x2x!qnn_q0>" in text
    inline = print_module(module, alias_per_axis=False)
    assert "!qnn_q0" not in inline and "!qnn.uniform<u8:f32:1, {" in inline
    assert print_module(parse_module(inline), alias_per_axis=False) == inline


def test_constant_keeps_the_numpy_array_without_copy():
    data = RNG.standard_normal((64, 32, 3, 3)).astype(np.float32)
    op = ConstantOp(data, name="big")
    assert np.shares_memory(op.array, data)
    assert not op.array.flags.writeable


def test_elided_constant_parses_but_refuses_its_array():
    module, _ = build_conv()
    parsed = parse_module(print_module(module, elide_weights_over=16))
    weight = next(o for o in parsed.walk() if isinstance(o, ConstantOp) and o.node_name == "conv.w")
    assert weight.elided
    with pytest.raises(QuantloopError, match="constant conv.w: weights were elided from the printed IR"):
        weight.array
    small = next(o for o in parsed.walk() if isinstance(o, ConstantOp) and o.node_name is None)
    assert small.array.shape == (8,)


@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.float16]),
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
    )
)
@settings(max_examples=60, deadline=None)
def test_dense_weights_round_trip_exactly(array):
    b = MainBuilder([])
    c = b.add(ConstantOp(array, TensorType(f32, list(array.shape))))
    module = b.finish([c])
    parsed = parse_module(print_module(module, elide_weights_over=None))
    got = next(o for o in parsed.walk() if isinstance(o, ConstantOp)).array
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.tobytes() == array.tobytes()  # bit-exact, NaN payloads included


def test_dense_weights_text_is_little_endian_hex():
    b = MainBuilder([])
    c = b.add(ConstantOp(np.array([1.0, -2.0], np.float32)))
    d = b.add(ConstantOp(np.array([1, -2], np.int8)))
    text = print_module(b.finish([c, d]), elide_weights_over=None)
    assert '#qnn.dense<"0x0000803f000000c0">' in text
    assert '#qnn.dense<"0x01fe" : i8>' in text
    assert DenseWeightsAttr(np.zeros(3, np.float32)) == DenseWeightsAttr(np.zeros(3, np.float32))
    assert DenseWeightsAttr(np.zeros(3, np.float32)) != DenseWeightsAttr(np.ones(3, np.float32))
    assert DenseWeightsAttr(np.zeros(3, np.float32)) != DenseWeightsAttr(np.zeros(3, np.float64))
    nan = DenseWeightsAttr(np.array([np.nan, 1.0], np.float32))
    assert nan == DenseWeightsAttr(np.array([np.nan, 1.0], np.float32))
    assert DenseWeightsAttr.elided_attr() == DenseWeightsAttr(None) != nan


# ----------------------------------------------------------------------------- verifier failures


def replace_in(build, old: str, new: str) -> str:
    module, _ = build()
    text = print_module(module, elide_weights_over=None if build is build_constant else 0)
    assert old in text, text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("build", "old", "new", "message"),
    [
        (build_conv, "group = 2", "group = 1", "qnn.conv2d 'conv': input has 4 channels but weight expects 2"),
        (build_host, "op_type = LRN", "op_type = Hardmax", "op_type 'Hardmax' is not one of Abs, AveragePool"),
        (build_conv, "group = 2", "group = 3", "input has 4 channels but weight expects 6"),
        (build_conv, "strides = [2, 2]", "strides = [2]", "strides must have 2 values"),
        (build_conv, "strides = [2, 2]", "strides = [0, 2]", "strides must be positive"),
        (build_conv, "pads = [1, 0, 1, 2]", "pads = [1, -1, 1, 2]", "pads must not be negative"),
        (build_conv, 'act = clip', 'act = gelu', "act 'gelu' is not one of none, relu, clip"),
        (build_conv, "act_min = 0.0", "act_min = 7.0", "act_min 7.0 is greater than act_max 6.0"),
        (build_conv, "tensor<8xf32>", "tensor<7xf32>", "bias shape [7] must be [8]"),
        (build_conv, "tensor<1x4x9x9xf32>", "tensor<4x9x9xf32>", "input (N, C, H, W) must have rank 4"),
        (build_depthwise_dilated, 'act = relu', 'act = relu, act_max = 1.0', "only meaningful with act 'clip'"),
        (build_gemm, "trans_b = 1", "trans_b = 0", "inner dimensions differ"),
        (build_gemm, "tensor<7xf32>", "tensor<6xf32>", "c of shape [6] does not broadcast to [3, 7]"),
        (build_matmul, "tensor<5x4x6xf32>", "tensor<5x3x6xf32>", "shapes [2, 1, 3, 4] and [5, 3, 6] do not multiply"),
        (build_add, "tensor<4x1x1xf32>", "tensor<3x1x1xf32>", "operand shapes [1, 4, 3, 3] and [3, 1, 1] do not broadcast"),
        (build_clip, "max = 6.0", "max = -1.0", "min 0.0 is greater than max -1.0"),
        (build_maxpool, "kernel = [3, 3]", "kernel = [30, 3]", "window does not fit"),
        (build_avgpool, "kernel = [2, 2]", "kernel = [2, 2, 2]", "kernel must have 2 values"),
        (build_reshape, "shape = [0, -1]", "shape = [5, -1]", "cannot reshape [2, 3, 4]"),
        (build_flatten, "axis = -2", "axis = 7", "axis 7 is out of range for rank 4"),
        (build_concat, "tensor<1x3x4xf32>", "tensor<1x3x5xf32>",
         "input 1 of shape [1, 3, 5] differs from input 0"),
        (build_softmax, "axis = -1", "axis = 2", "axis 2 is out of range for rank 2"),
        (build_constant, "tensor<2x3x!qnn.pot<bits = 4>>", "tensor<2x4x!qnn.pot<bits = 4>>", "holds 6 values but its type [2, 4] needs 8"),
        (build_quantize_dequantize, "!qnn.uniform<u8:f32:1,", "!qnn.uniform<u8:f32:2,", "3 per-axis scales but dimension 2"),
        (build_batchnorm, "epsilon = 0.001", "epsilon = -0.001", "epsilon -0.001 must not be negative"),
        (build_identity_dropout, "ratio = 0.25", "ratio = 1.5", "ratio 1.5 must be in [0, 1)"),
    ],
)
def test_verifier_failures_name_the_op_and_values(build, old, new, message):
    text = replace_in(build, old, new)
    with pytest.raises(QuantloopError) as err:
        parse_module(text, source_name="bad.mlir")
    assert str(err.value).startswith("bad.mlir")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x, w: Conv2dOp(x, w, None, t(1, 8, 5, 4), strides=(2, 2), pads=(1, 1, 1, 1), name="c"),
         "qnn.conv2d 'c': result shape [1, 8, 5, 4] does not match the expected shape [1, 8, 5, 5]"),
        (lambda x, w: ReluOp(x, t(1, 4, 9, 8), name="r"), "qnn.relu 'r': result shape [1, 4, 9, 8] does not match"),
        (lambda x, w: MaxPoolOp(x, (3, 3), t(1, 4, 5, 4), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, name="p"),
         "qnn.maxpool 'p': result shape [1, 4, 5, 4] does not match the expected shape [1, 4, 5, 5]"),
        (lambda x, w: GlobalAvgPoolOp(x, t(1, 4)), "qnn.global_avgpool: input (N, C, H, W) must have rank 4"[:0]
         + "qnn.global_avgpool: result shape [1, 4] does not match the expected shape [1, 4, 1, 1]"),
        (lambda x, w: FlattenOp(x, 1, t(4, 81)), "qnn.flatten: result shape [4, 81] does not match"),
        (lambda x, w: QuantizeOp(x, t(1, 4, 9, 9, elem=IntType(8, True)), name="q"),
         "qnn.quantize 'q': result element type must be !qnn.uniform (per tensor or per axis), got !qnn.int<bits = 8"),
        (lambda x, w: DequantizeOp(QuantizeOp(x, t(1, 4, 9, 9, elem=UniformType(8, True, 0.1, 0))),
                                   t(1, 4, 9, 9, elem=IntType(8, True))),
         "qnn.dequantize: result element type must be f32, got !qnn.int<bits = 8, signed = true>"),
    ],
)
def test_result_shape_failures(make, message):
    b = MainBuilder([t(1, 4, 9, 9)])
    w = const(b, (8, 4, 3, 3))
    op = make(b.args[0], w)
    for operand in op.operands:
        if isinstance(operand.owner, Operation) and operand.owner.parent is None:
            b.add(operand.owner)
    b.add(op)
    module = b.finish([op])
    with pytest.raises(QuantloopError) as err:
        verify_module(module, "m")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_batchnorm_parameter_shapes_are_checked():
    b = MainBuilder([t(1, 3, 4, 4)])
    params = [const(b, (3,)) for _ in range(3)] + [const(b, (4,))]
    b.add(BatchNormOp(b.args[0], *params))
    with pytest.raises(Exception, match=r"var shape \[4\] must be \[3\]"):
        b.finish([]).verify()


def test_parse_errors_name_source_line_and_column():
    text = print_module(build_relu()[0]).replace("qnn.relu", "qnn.frobnicate")
    with pytest.raises(QuantloopError, match=r"^model\.mlir:3:\d+: Operation qnn.frobnicate is not registered$"):
        parse_module(text, source_name="model.mlir")
    bad_type = print_module(build_relu()[0]).replace("tensor<1x4x3x3xf32>)", "tensor<1x4x3x3x!qnn.int<bits = 9, signed = true>>)")
    with pytest.raises(QuantloopError, match=r"^m:2:\d+: !qnn.int: bit-width 9 is not a legal storage width"):
        parse_module(bad_type, source_name="m")


def test_dense_text_errors():
    base = print_module(build_clip()[0])
    b = MainBuilder([])
    b.add(ConstantOp(np.zeros(2, np.float32), name="k"))
    text = print_module(b.finish([]), elide_weights_over=None)
    for bad, needle in [
        ('"0x0000000000000000"', None),
        ('"0x00000000000000"', "7 bytes is not a whole number of f32 values"),
        ('"0xzz"', "not valid hex"),
        ('"1234"', 'must be a hex string starting with "0x"'),
        ('"0x0000000000000000" : q7', "unknown dtype 'q7'"),
    ]:
        variant = text.replace('"0x0000000000000000"', bad)
        if needle is None:
            parse_module(variant)
            continue
        with pytest.raises(QuantloopError, match=needle):
            parse_module(variant)
    assert base


def test_constraint_failures_name_the_op():
    text = print_module(build_relu()[0]).replace('name = "relu"', "name = 3 : i32")
    with pytest.raises(QuantloopError, match=r"^m: qnn.relu: 3 : i32 should be of base attribute string$"):
        parse_module(text, source_name="m")


def test_many_channels_wrap_and_still_round_trip():
    """1280 per-channel scales (an alias above the module) and a long discardable scale array wrap at
    WRAP_COLUMN instead of making one line of tens of thousands of characters."""
    from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, i64

    from quantloop.ir.syntax import WRAP_COLUMN

    rng = np.random.default_rng(0)
    scales = [float(np.float32(s)) for s in rng.uniform(1e-4, 1e-2, 1280)]
    b = MainBuilder([t(1, 1280)])
    w = const(b, (1280, 1280), dtype=np.int8, elem=UniformPerAxisType(8, True, 0, scales, [0] * 1280))
    w.attributes["qnn.scales"] = DenseArrayBase.from_list(f32, scales)
    w.attributes["qnn.axis"] = IntegerAttr(0, i64)
    mm = b.add(MatMulOp(b.args[0], w, t(1, 1280, elem=f32), name="mm"))
    module = b.finish([mm])
    text = print_module(module, elide_weights_over=16)
    assert text.startswith("!qnn_q0 = !qnn.uniform<i8:f32:0, {")
    assert max(len(line) for line in text.splitlines()) <= WRAP_COLUMN + 2
    assert len(text.splitlines()) > 100
    parsed = parse_module(text)
    assert print_module(parsed, elide_weights_over=16) == text
    assert next(o for o in parsed.walk() if isinstance(o, ConstantOp)).attributes == w.attributes


def test_text_from_before_the_enum_attributes_still_parses():
    old = """builtin.module {
  func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %y = "qnn.add"(%x, %x) <{act = "relu", name = "a"}> : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x4xf32>
    func.return %y : tensor<1x4xf32>
  }
}
"""
    module = parse_module(old)
    assert next(op for op in module.walk() if isinstance(op, AddOp)).act == "relu"
    assert 'qnn.add %x, %x {act = relu, name = "a"}' in print_module(module)
    with pytest.raises(QuantloopError, match="act"):
        parse_module(old.replace('"relu"', '"gelu"'))
