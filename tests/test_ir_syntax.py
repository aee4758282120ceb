"""The shared custom syntax (`quantloop.ir.syntax`) on op shapes the qnn ops do not have yet:
several optional operand groups, variadic results, a property without a compact spelling."""

from __future__ import annotations

from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, TensorType, f32, i64
from xdsl.ir import Dialect
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_result_def,
)

from quantloop.ir.qnn import MainBuilder, make_context, parse_module, print_module
from quantloop.ir.syntax import CustomSyntaxOp


@irdl_op_definition
class ResizeLikeOp(CustomSyntaxOp):
    name = "test.resize_like"

    x = operand_def(TensorType)
    scales = opt_operand_def(TensorType)
    sizes = opt_operand_def(TensorType)
    out = result_def(TensorType)
    mode = prop_def(IntegerAttr, IntegerAttr(0, i64))
    extra = opt_prop_def()

    irdl_options = (AttrSizedOperandSegments(as_property=True),)


@irdl_op_definition
class SplitLikeOp(CustomSyntaxOp):
    name = "test.split_like"

    x = operand_def(TensorType)
    outs = var_result_def(TensorType)


TEST = Dialect("test", [ResizeLikeOp, SplitLikeOp], [])


def t(*shape):
    return TensorType(f32, list(shape))


def test_keyword_groups_variadic_results_and_generic_values_round_trip():
    b = MainBuilder([t(1, 4), t(2), t(2)])
    x, scales, sizes = b.args
    only_sizes = b.add(ResizeLikeOp.build(operands=[x, [], [sizes]], result_types=[t(2, 8)],
                                          properties={"extra": ArrayAttr([IntegerAttr(1, i64)])}))
    both = b.add(ResizeLikeOp.build(operands=[x, [scales], [sizes]], result_types=[t(2, 8)],
                                    properties={"mode": IntegerAttr(2, i64)}))
    split = b.add(SplitLikeOp.build(operands=[x], result_types=[[t(1, 2), t(1, 2)]]))
    module = b.finish([only_sizes, both, split.results[1]])
    text = print_module(module)
    assert "test.resize_like %0, sizes(%2) {extra = [1 : i64]}" in text  # an ArrayAttr keeps its generic spelling
    assert "test.resize_like %0, scales(%1), sizes(%2) {mode = 2}" in text
    assert "test.split_like %0 : (tensor<1x4xf32>) -> (tensor<1x2xf32>, tensor<1x2xf32>)" in text
    parsed = parse_module(text, ctx=make_context(TEST))
    assert print_module(parsed) == text
    assert parsed.is_structurally_equivalent(module)
