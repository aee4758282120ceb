"""Operations of the `qnn` dialect: one op per ONNX concept the flow supports.

Every op carries an optional `name` property (the ONNX node name), read with `op.node_name`
(`op.name` is xDSL's op name, e.g. "qnn.conv2d"). Verifiers say in a sentence what is wrong,
naming the op and the values. Constructors infer the result type when none is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f32,
    f64,
    i64,
)
from xdsl.dialects.utils import EnumAttribute
from xdsl.ir import Attribute, Operation, SpacedOpaqueSyntaxAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from quantloop.errors import QuantloopError
from quantloop.ir.syntax import CustomSyntaxOp
from quantloop.ir.types import UniformPerAxisType, UniformType
from quantloop.ir.weights import DenseWeightsAttr



# ----------------------------------------------------------------------------- helpers


def op_label(op: Operation) -> str:
    """`qnn.conv2d 'conv1'` (or just the op name when it has no ONNX name), for messages."""
    node = op.properties.get("name")
    return f"{op.name} '{node.data}'" if isinstance(node, StringAttr) else op.name


def _shape(value: SSAValue | Attribute) -> tuple[int, ...]:
    t = value.type if isinstance(value, SSAValue) else value
    if not isinstance(t, TensorType):
        raise VerifyException(f"expected a tensor type, got {t}")
    return tuple(t.get_shape())


def _tensor(value: SSAValue) -> TensorType:
    if not isinstance(value.type, TensorType):
        raise VerifyException(f"expected a tensor value, got {value.type}")
    return value.type


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _int(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def _float(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)


def _common_props(name: str | None) -> dict[str, Attribute]:
    return {} if name is None else {"name": StringAttr(name)}


def _act_props(act: str, act_min: float | None, act_max: float | None) -> dict[str, Attribute]:
    if act not in ACTIVATIONS:
        raise VerifyException(f"act '{act}' is not one of {', '.join(ACTIVATIONS)}")
    props: dict[str, Attribute] = {"act": ActivationAttr(Activation(act))}
    if act_min is not None:
        props["act_min"] = _float(act_min)
    if act_max is not None:
        props["act_max"] = _float(act_max)
    return props


def _like(value: SSAValue, shape: Sequence[int]) -> TensorType:
    return TensorType(_tensor(value).element_type, list(shape))


def _fail(op: Operation, message: str) -> None:
    raise VerifyException(f"{op_label(op)}: {message}")


def _check_rank(op: Operation, what: str, shape: Sequence[int], rank: int) -> None:
    if len(shape) != rank:
        _fail(op, f"{what} must have rank {rank}, got shape {list(shape)}")


def _check_len(op: Operation, what: str, values: Sequence[int], length: int) -> None:
    if len(values) != length:
        _fail(op, f"{what} must have {length} values, got {list(values)}")


def _check_result_shape(op: Operation, expected: Sequence[int]) -> None:
    got = _shape(op.results[0])
    if tuple(got) != tuple(expected):
        _fail(op, f"result shape {list(got)} does not match the expected shape {list(expected)}")


def _check_same_shape(op: Operation, value: SSAValue) -> None:
    _check_result_shape(op, _shape(value))


def _check_positive(op: Operation, what: str, values: Sequence[int]) -> None:
    if any(v < 1 for v in values):
        _fail(op, f"{what} must be positive, got {list(values)}")


def _check_pads(op: Operation, pads: Sequence[int]) -> None:
    _check_len(op, "pads (top, left, bottom, right)", pads, 4)
    if any(p < 0 for p in pads):
        _fail(op, f"pads must not be negative, got {list(pads)}")


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """numpy broadcasting of static shapes; None when they do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        return None


class Activation(StrEnum):
    """A fused activation: none, relu, or clip to [act_min, act_max]."""

    NONE = "none"
    RELU = "relu"
    CLIP = "clip"


ACTIVATIONS: tuple[str, ...] = tuple(a.value for a in Activation)


@irdl_attr_definition
class ActivationAttr(EnumAttribute[Activation], SpacedOpaqueSyntaxAttribute):
    """`#qnn<activation relu>`; `act = relu` in an op's custom syntax."""

    name = "qnn.activation"


class QnnOp(CustomSyntaxOp):
    """Base of every qnn op: the optional `name` property (the ONNX node name) and the dialect's
    custom syntax (`quantloop.ir.syntax`). A new op derives from it (or from a subclass)."""

    node_name_attr = opt_prop_def(StringAttr, prop_name="name")

    @property
    def node_name(self) -> str | None:
        node = self.properties.get("name")
        return node.data if isinstance(node, StringAttr) else None


class _FusedActivation:
    """Ops that may carry a fused activation: `act` is "none", "relu" or "clip" (act_min..act_max)."""

    act_attr = prop_def(ActivationAttr, ActivationAttr(Activation.NONE), prop_name="act")
    act_min_attr = opt_prop_def(FloatAttr, prop_name="act_min")
    act_max_attr = opt_prop_def(FloatAttr, prop_name="act_max")

    @property
    def act(self) -> str:
        act = self.properties.get("act")  # type: ignore[attr-defined]
        return act.data.value if isinstance(act, ActivationAttr) else "none"

    @property
    def act_min(self) -> float | None:
        value = self.properties.get("act_min")  # type: ignore[attr-defined]
        return value.value.data if isinstance(value, FloatAttr) else None

    @property
    def act_max(self) -> float | None:
        value = self.properties.get("act_max")  # type: ignore[attr-defined]
        return value.value.data if isinstance(value, FloatAttr) else None

    def _verify_act(self) -> None:
        op: Operation = self  # type: ignore[assignment]
        if self.act not in ACTIVATIONS:
            _fail(op, f"act '{self.act}' is not one of {', '.join(ACTIVATIONS)}")
        if self.act == "clip":
            if self.act_min is None or self.act_max is None:
                _fail(op, "act 'clip' needs both act_min and act_max")
            elif self.act_min > self.act_max:
                _fail(op, f"act_min {self.act_min} is greater than act_max {self.act_max}")
        elif self.act_min is not None or self.act_max is not None:
            _fail(op, f"act_min/act_max are only meaningful with act 'clip', not '{self.act}'")


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int = 1) -> int:
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_sizes(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, ceil_mode: bool) -> set[int]:
    """Output sizes ONNX runtimes produce; with ceil_mode a window starting in the end padding may be dropped."""
    span = size + pad_begin + pad_end - kernel
    if not ceil_mode:
        return {span // stride + 1}
    out = -(-span // stride) + 1
    sizes = {out}
    if (out - 1) * stride >= size + pad_begin:
        sizes.add(out - 1)
    return sizes


# ----------------------------------------------------------------------------- compute ops


@irdl_op_definition
class Conv2dOp(QnnOp, _FusedActivation):
    """2-D convolution, NCHW input, MCRS weight (C per group), optional bias of length M."""

    name = "qnn.conv2d"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    strides_attr = prop_def(DenseArrayBase, _ints((1, 1)), prop_name="strides")
    pads_attr = prop_def(DenseArrayBase, _ints((0, 0, 0, 0)), prop_name="pads")
    dilations_attr = prop_def(DenseArrayBase, _ints((1, 1)), prop_name="dilations")
    group_attr = prop_def(IntegerAttr, _int(1), prop_name="group")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        weight: SSAValue | Operation,
        bias: SSAValue | Operation | None = None,
        result_type: Attribute | None = None,
        *,
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        dilations: Sequence[int] = (1, 1),
        group: int = 1,
        act: str = "none",
        act_min: float | None = None,
        act_max: float | None = None,
        name: str | None = None,
    ) -> None:
        input_v, weight_v = SSAValue.get(input), SSAValue.get(weight)
        if result_type is None:
            n, _, h, w = _shape(input_v)
            m, _, r, s = _shape(weight_v)
            result_type = _like(
                input_v,
                [
                    n,
                    m,
                    conv_output_size(h, r, strides[0], pads[0], pads[2], dilations[0]),
                    conv_output_size(w, s, strides[1], pads[1], pads[3], dilations[1]),
                ],
            )
        super().__init__(
            operands=[input_v, weight_v, [] if bias is None else [SSAValue.get(bias)]],
            result_types=[result_type],
            properties={
                "strides": _ints(strides),
                "pads": _ints(pads),
                "dilations": _ints(dilations),
                "group": _int(group),
                **_act_props(act, act_min, act_max),
                **_common_props(name),
            },
        )

    @property
    def strides(self) -> tuple[int, ...]:
        return self.strides_attr.get_values()

    @property
    def pads(self) -> tuple[int, ...]:
        return self.pads_attr.get_values()

    @property
    def dilations(self) -> tuple[int, ...]:
        return self.dilations_attr.get_values()

    @property
    def group(self) -> int:
        return self.group_attr.value.data

    @property
    def is_depthwise(self) -> bool:
        return self.group > 1 and self.group == _shape(self.input)[1] == _shape(self.output)[1]

    def verify_(self) -> None:
        self._verify_act()
        in_shape, w_shape, out_shape = _shape(self.input), _shape(self.weight), _shape(self.output)
        _check_rank(self, "input (N, C, H, W)", in_shape, 4)
        _check_rank(self, "weight (M, C/group, R, S)", w_shape, 4)
        _check_rank(self, "result (N, M, P, Q)", out_shape, 4)
        strides, pads, dilations, group = self.strides, self.pads, self.dilations, self.group
        _check_len(self, "strides", strides, 2)
        _check_positive(self, "strides", strides)
        _check_len(self, "dilations", dilations, 2)
        _check_positive(self, "dilations", dilations)
        _check_pads(self, pads)
        if group < 1:
            _fail(self, f"group must be at least 1, got {group}")
        n, c, h, w = in_shape
        m, cg, r, s = w_shape
        if c != cg * group:
            _fail(self, f"input has {c} channels but weight expects {cg * group} ({cg} per group x group {group})")
        if m % group:
            _fail(self, f"{m} output channels are not divisible by group {group}")
        if self.bias is not None:
            b_shape = _shape(self.bias)
            if tuple(b_shape) != (m,):
                _fail(self, f"bias shape {list(b_shape)} must be [{m}], one value per output channel")
        p = conv_output_size(h, r, strides[0], pads[0], pads[2], dilations[0])
        q = conv_output_size(w, s, strides[1], pads[1], pads[3], dilations[1])
        if p < 1 or q < 1:
            span = f" (dilated to {(r - 1) * dilations[0] + 1}x{(s - 1) * dilations[1] + 1})" if dilations != (1, 1) else ""
            _fail(
                self,
                f"the {r}x{s} kernel{span} does not fit the {h + pads[0] + pads[2]}x{w + pads[1] + pads[3]} "
                f"padded input",
            )
        _check_result_shape(self, [n, m, p, q])


@irdl_op_definition
class GemmOp(QnnOp, _FusedActivation):
    """ONNX Gemm: alpha * op(a) @ op(b) + beta * c, with op = transpose when trans_a / trans_b."""

    name = "qnn.gemm"

    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    output = result_def(TensorType)

    alpha_attr = prop_def(FloatAttr, _float(1.0), prop_name="alpha")
    beta_attr = prop_def(FloatAttr, _float(1.0), prop_name="beta")
    trans_a_attr = prop_def(IntegerAttr, _int(0), prop_name="trans_a")
    trans_b_attr = prop_def(IntegerAttr, _int(0), prop_name="trans_b")

    traits = traits_def(Pure())

    def __init__(
        self,
        a: SSAValue | Operation,
        b: SSAValue | Operation,
        c: SSAValue | Operation | None = None,
        result_type: Attribute | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        trans_a: bool = False,
        trans_b: bool = False,
        act: str = "none",
        act_min: float | None = None,
        act_max: float | None = None,
        name: str | None = None,
    ) -> None:
        a_v, b_v = SSAValue.get(a), SSAValue.get(b)
        if result_type is None:
            a_shape, b_shape = _shape(a_v), _shape(b_v)
            rows = a_shape[1] if trans_a else a_shape[0]
            cols = b_shape[0] if trans_b else b_shape[1]
            result_type = _like(a_v, [rows, cols])
        super().__init__(
            operands=[a_v, b_v, [] if c is None else [SSAValue.get(c)]],
            result_types=[result_type],
            properties={
                "alpha": _float(alpha),
                "beta": _float(beta),
                "trans_a": _int(trans_a),
                "trans_b": _int(trans_b),
                **_act_props(act, act_min, act_max),
                **_common_props(name),
            },
        )

    @property
    def alpha(self) -> float:
        return self.alpha_attr.value.data

    @property
    def beta(self) -> float:
        return self.beta_attr.value.data

    @property
    def trans_a(self) -> bool:
        return bool(self.trans_a_attr.value.data)

    @property
    def trans_b(self) -> bool:
        return bool(self.trans_b_attr.value.data)

    def verify_(self) -> None:
        self._verify_act()
        a_shape, b_shape = _shape(self.a), _shape(self.b)
        _check_rank(self, "a", a_shape, 2)
        _check_rank(self, "b", b_shape, 2)
        rows, k_a = (a_shape[1], a_shape[0]) if self.trans_a else a_shape
        k_b, cols = (b_shape[1], b_shape[0]) if self.trans_b else b_shape
        if k_a != k_b:
            _fail(
                self,
                f"inner dimensions differ: a {list(a_shape)} (trans_a={int(self.trans_a)}) gives {k_a}, "
                f"b {list(b_shape)} (trans_b={int(self.trans_b)}) gives {k_b}",
            )
        if self.c is not None and broadcast_shapes(_shape(self.c), (rows, cols)) != (rows, cols):
            _fail(self, f"c of shape {list(_shape(self.c))} does not broadcast to [{rows}, {cols}]")
        _check_result_shape(self, [rows, cols])


def matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """numpy.matmul's result shape; None when the shapes do not multiply."""
    if not a or not b:
        return None
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        return None
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    if batch is None:
        return None
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@irdl_op_definition
class MatMulOp(QnnOp):
    """numpy-style matrix product (ONNX MatMul)."""

    name = "qnn.matmul"

    a = operand_def(TensorType)
    b = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(
        self,
        a: SSAValue | Operation,
        b: SSAValue | Operation,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        a_v, b_v = SSAValue.get(a), SSAValue.get(b)
        if result_type is None:
            shape = matmul_shape(_shape(a_v), _shape(b_v))
            if shape is None:
                raise VerifyException(f"qnn.matmul: shapes {list(_shape(a_v))} and {list(_shape(b_v))} do not multiply")
            result_type = _like(a_v, shape)
        super().__init__(operands=[a_v, b_v], result_types=[result_type], properties=_common_props(name))

    def verify_(self) -> None:
        a_shape, b_shape = _shape(self.a), _shape(self.b)
        shape = matmul_shape(a_shape, b_shape)
        if shape is None:
            _fail(self, f"shapes {list(a_shape)} and {list(b_shape)} do not multiply")
        _check_result_shape(self, shape)


@irdl_op_definition
class AddOp(QnnOp, _FusedActivation):
    """Element-wise sum with numpy broadcasting, optionally followed by a fused activation."""

    name = "qnn.add"

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(
        self,
        lhs: SSAValue | Operation,
        rhs: SSAValue | Operation,
        result_type: Attribute | None = None,
        *,
        act: str = "none",
        act_min: float | None = None,
        act_max: float | None = None,
        name: str | None = None,
    ) -> None:
        lhs_v, rhs_v = SSAValue.get(lhs), SSAValue.get(rhs)
        if result_type is None:
            shape = broadcast_shapes(_shape(lhs_v), _shape(rhs_v))
            if shape is None:
                raise VerifyException(
                    f"qnn.add: shapes {list(_shape(lhs_v))} and {list(_shape(rhs_v))} do not broadcast"
                )
            result_type = _like(lhs_v, shape)
        super().__init__(
            operands=[lhs_v, rhs_v],
            result_types=[result_type],
            properties={**_act_props(act, act_min, act_max), **_common_props(name)},
        )

    def verify_(self) -> None:
        self._verify_act()
        l_shape, r_shape = _shape(self.lhs), _shape(self.rhs)
        shape = broadcast_shapes(l_shape, r_shape)
        if shape is None:
            _fail(self, f"operand shapes {list(l_shape)} and {list(r_shape)} do not broadcast")
        _check_result_shape(self, shape)


# ----------------------------------------------------------------------------- element-wise ops


class _UnaryOp(QnnOp):
    """Shared constructor and shape check of ops whose result has the input's shape."""

    def __init__(
        self,
        input: SSAValue | Operation,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
        **props: Attribute,
    ) -> None:
        input_v = SSAValue.get(input)
        super().__init__(
            operands=[input_v],
            result_types=[result_type or input_v.type],
            properties={**props, **_common_props(name)},
        )

    def verify_(self) -> None:
        _check_same_shape(self, self.operands[0])


@irdl_op_definition
class ReluOp(_UnaryOp):
    name = "qnn.relu"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())


@irdl_op_definition
class ClipOp(_UnaryOp):
    """Clamp to [min, max] (ReLU6 is min 0, max 6)."""

    name = "qnn.clip"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    min_attr = prop_def(FloatAttr, prop_name="min")
    max_attr = prop_def(FloatAttr, prop_name="max")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        min: float,
        max: float,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(input, result_type, name=name, min=_float(min), max=_float(max))

    @property
    def min(self) -> float:
        return self.min_attr.value.data

    @property
    def max(self) -> float:
        return self.max_attr.value.data

    def verify_(self) -> None:
        if self.min > self.max:
            _fail(self, f"min {self.min} is greater than max {self.max}")
        super().verify_()


@irdl_op_definition
class IdentityOp(_UnaryOp):
    name = "qnn.identity"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())


@irdl_op_definition
class DropoutOp(_UnaryOp):
    """Inference-time dropout: the identity; kept only until canonicalize removes it."""

    name = "qnn.dropout"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    ratio_attr = prop_def(FloatAttr, prop_name="ratio")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        ratio: float = 0.5,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(input, result_type, name=name, ratio=_float(ratio))

    @property
    def ratio(self) -> float:
        return self.ratio_attr.value.data

    def verify_(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            _fail(self, f"ratio {self.ratio} must be in [0, 1)")
        super().verify_()


@irdl_op_definition
class SoftmaxOp(_UnaryOp):
    name = "qnn.softmax"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    axis_attr = prop_def(IntegerAttr, prop_name="axis")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        axis: int = -1,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(input, result_type, name=name, axis=_int(axis))

    @property
    def axis(self) -> int:
        return self.axis_attr.value.data

    def verify_(self) -> None:
        rank = len(_shape(self.input))
        if not -rank <= self.axis < rank:
            _fail(self, f"axis {self.axis} is out of range for rank {rank}")
        super().verify_()


@irdl_op_definition
class QuantizeOp(_UnaryOp):
    """Float to quantized: the result's element type (`!qnn.uniform`) carries scale and zero point."""

    name = "qnn.quantize"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(self, input: SSAValue | Operation, result_type: Attribute, *, name: str | None = None) -> None:
        super().__init__(input, result_type, name=name)

    def verify_(self) -> None:
        elem = _tensor(self.output).element_type
        if not isinstance(elem, (UniformType, UniformPerAxisType)):
            _fail(self, f"result element type must be !qnn.uniform (per tensor or per axis), got {elem}")
        if isinstance(elem, UniformPerAxisType):
            shape = _shape(self.output)
            if elem.axis >= len(shape):
                _fail(self, f"quantization axis {elem.axis} is out of range for shape {list(shape)}")
            if len(elem.scales) != shape[elem.axis]:
                _fail(
                    self,
                    f"{len(elem.scales)} per-axis scales but dimension {elem.axis} of {list(shape)} "
                    f"has {shape[elem.axis]} entries",
                )
        super().verify_()


@irdl_op_definition
class DequantizeOp(_UnaryOp):
    """Quantized to f32."""

    name = "qnn.dequantize"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(
        self, input: SSAValue | Operation, result_type: Attribute | None = None, *, name: str | None = None
    ) -> None:
        input_v = SSAValue.get(input)
        super().__init__(input_v, result_type or TensorType(f32, _shape(input_v)), name=name)

    def verify_(self) -> None:
        elem = _tensor(self.output).element_type
        if not isinstance(elem, Float32Type):
            _fail(self, f"result element type must be f32, got {elem}")
        super().verify_()


# ----------------------------------------------------------------------------- pooling


def _pool_shape(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    ceil_mode: bool,
) -> list[int]:
    n, c, h, w = in_shape
    return [
        n,
        c,
        min(pool_output_sizes(h, kernel[0], strides[0], pads[0], pads[2], ceil_mode)),
        min(pool_output_sizes(w, kernel[1], strides[1], pads[1], pads[3], ceil_mode)),
    ]


class _PoolOp(QnnOp):
    """Fields, constructor and checks shared by max and average pooling."""

    input = operand_def(TensorType)
    output = result_def(TensorType)
    kernel_attr = prop_def(DenseArrayBase, prop_name="kernel")
    strides_attr = prop_def(DenseArrayBase, _ints((1, 1)), prop_name="strides")
    pads_attr = prop_def(DenseArrayBase, _ints((0, 0, 0, 0)), prop_name="pads")
    ceil_mode_attr = prop_def(IntegerAttr, _int(0), prop_name="ceil_mode")

    def __init__(
        self,
        input: SSAValue | Operation,
        kernel: Sequence[int],
        result_type: Attribute | None = None,
        *,
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        ceil_mode: bool = False,
        name: str | None = None,
        **props: Attribute,
    ) -> None:
        input_v = SSAValue.get(input)
        if result_type is None:
            result_type = _like(input_v, _pool_shape(_shape(input_v), kernel, strides, pads, ceil_mode))
        super().__init__(
            operands=[input_v],
            result_types=[result_type],
            properties={
                "kernel": _ints(kernel),
                "strides": _ints(strides),
                "pads": _ints(pads),
                "ceil_mode": _int(ceil_mode),
                **props,
                **_common_props(name),
            },
        )

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.kernel_attr.get_values()

    @property
    def strides(self) -> tuple[int, ...]:
        return self.strides_attr.get_values()

    @property
    def pads(self) -> tuple[int, ...]:
        return self.pads_attr.get_values()

    @property
    def ceil_mode(self) -> bool:
        return bool(self.ceil_mode_attr.value.data)

    def verify_(self) -> None:
        in_shape, out_shape = _shape(self.operands[0]), _shape(self.results[0])
        _check_rank(self, "input (N, C, H, W)", in_shape, 4)
        _check_rank(self, "result", out_shape, 4)
        kernel, strides, pads = self.kernel, self.strides, self.pads
        _check_len(self, "kernel", kernel, 2)
        _check_positive(self, "kernel", kernel)
        _check_len(self, "strides", strides, 2)
        _check_positive(self, "strides", strides)
        _check_pads(self, pads)
        n, c, h, w = in_shape
        if h + pads[0] + pads[2] < kernel[0] or w + pads[1] + pads[3] < kernel[1]:
            _fail(self, f"the {kernel[0]}x{kernel[1]} window does not fit the padded {h}x{w} input")
        heights = pool_output_sizes(h, kernel[0], strides[0], pads[0], pads[2], self.ceil_mode)
        widths = pool_output_sizes(w, kernel[1], strides[1], pads[1], pads[3], self.ceil_mode)
        if out_shape[:2] != (n, c) or out_shape[2] not in heights or out_shape[3] not in widths:
            _fail(
                self,
                f"result shape {list(out_shape)} does not match the expected shape "
                f"{_pool_shape(in_shape, kernel, strides, pads, self.ceil_mode)}",
            )


@irdl_op_definition
class MaxPoolOp(_PoolOp):
    name = "qnn.maxpool"


    traits = traits_def(Pure())


@irdl_op_definition
class AvgPoolOp(_PoolOp):
    name = "qnn.avgpool"

    count_include_pad_attr = prop_def(IntegerAttr, _int(0), prop_name="count_include_pad")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        kernel: Sequence[int],
        result_type: Attribute | None = None,
        *,
        strides: Sequence[int] = (1, 1),
        pads: Sequence[int] = (0, 0, 0, 0),
        ceil_mode: bool = False,
        count_include_pad: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(
            input,
            kernel,
            result_type,
            strides=strides,
            pads=pads,
            ceil_mode=ceil_mode,
            name=name,
            count_include_pad=_int(count_include_pad),
        )

    @property
    def count_include_pad(self) -> bool:
        return bool(self.count_include_pad_attr.value.data)


@irdl_op_definition
class GlobalAvgPoolOp(QnnOp):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1)."""

    name = "qnn.global_avgpool"

    input = operand_def(TensorType)
    output = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(
        self, input: SSAValue | Operation, result_type: Attribute | None = None, *, name: str | None = None
    ) -> None:
        input_v = SSAValue.get(input)
        if result_type is None:
            result_type = _like(input_v, [*_shape(input_v)[:2], 1, 1])
        super().__init__(operands=[input_v], result_types=[result_type], properties=_common_props(name))

    def verify_(self) -> None:
        in_shape = _shape(self.input)
        _check_rank(self, "input (N, C, H, W)", in_shape, 4)
        _check_result_shape(self, [in_shape[0], in_shape[1], 1, 1])


# ----------------------------------------------------------------------------- shape ops


def resolve_reshape(in_shape: Sequence[int], shape: Sequence[int]) -> tuple[int, ...] | None:
    """ONNX Reshape semantics (0 copies the input dimension, one -1 is inferred); None if impossible."""
    out = [in_shape[i] if d == 0 and i < len(in_shape) else d for i, d in enumerate(shape)]
    if any(d < -1 for d in out) or out.count(-1) > 1:
        return None
    total = math.prod(in_shape)
    known = math.prod(d for d in out if d != -1)
    if -1 in out:
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return tuple(out) if math.prod(out) == total else None


@irdl_op_definition
class ReshapeOp(QnnOp):
    """Static reshape; `shape` follows ONNX (0 = copy the input dimension, -1 = inferred)."""

    name = "qnn.reshape"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    shape_attr = prop_def(DenseArrayBase, prop_name="shape")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        shape: Sequence[int],
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        input_v = SSAValue.get(input)
        if result_type is None:
            resolved = resolve_reshape(_shape(input_v), shape)
            if resolved is None:
                raise VerifyException(f"qnn.reshape: cannot reshape {list(_shape(input_v))} to {list(shape)}")
            result_type = _like(input_v, resolved)
        super().__init__(
            operands=[input_v],
            result_types=[result_type],
            properties={"shape": _ints(shape), **_common_props(name)},
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.shape_attr.get_values()

    def verify_(self) -> None:
        in_shape = _shape(self.input)
        resolved = resolve_reshape(in_shape, self.shape)
        if resolved is None:
            _fail(self, f"cannot reshape {list(in_shape)} ({math.prod(in_shape)} elements) to {list(self.shape)}")
        _check_result_shape(self, resolved)


@irdl_op_definition
class FlattenOp(QnnOp):
    """ONNX Flatten: dimensions before `axis` and from `axis` on become the two result dimensions."""

    name = "qnn.flatten"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    axis_attr = prop_def(IntegerAttr, prop_name="axis")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        axis: int = 1,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        input_v = SSAValue.get(input)
        if result_type is None:
            in_shape = _shape(input_v)
            cut = axis + len(in_shape) if axis < 0 else axis
            result_type = _like(input_v, [math.prod(in_shape[:cut]), math.prod(in_shape[cut:])])
        super().__init__(
            operands=[input_v], result_types=[result_type], properties={"axis": _int(axis), **_common_props(name)}
        )

    @property
    def axis(self) -> int:
        return self.axis_attr.value.data

    def verify_(self) -> None:
        in_shape = _shape(self.input)
        rank = len(in_shape)
        if not -rank <= self.axis <= rank:
            _fail(self, f"axis {self.axis} is out of range for rank {rank}")
        cut = self.axis + rank if self.axis < 0 else self.axis
        _check_result_shape(self, [math.prod(in_shape[:cut]), math.prod(in_shape[cut:])])


@irdl_op_definition
class ConcatOp(QnnOp):
    name = "qnn.concat"

    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)
    axis_attr = prop_def(IntegerAttr, prop_name="axis")

    traits = traits_def(Pure())

    def __init__(
        self,
        inputs: Sequence[SSAValue | Operation],
        axis: int,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        values = [SSAValue.get(v) for v in inputs]
        if result_type is None:
            shape = list(_shape(values[0]))
            ax = axis + len(shape) if axis < 0 else axis
            shape[ax] = sum(_shape(v)[ax] for v in values)
            result_type = _like(values[0], shape)
        super().__init__(
            operands=[values], result_types=[result_type], properties={"axis": _int(axis), **_common_props(name)}
        )

    @property
    def axis(self) -> int:
        return self.axis_attr.value.data

    def verify_(self) -> None:
        if not self.inputs:
            _fail(self, "needs at least one input")
        shapes = [_shape(v) for v in self.inputs]
        rank = len(shapes[0])
        if not -rank <= self.axis < rank:
            _fail(self, f"axis {self.axis} is out of range for rank {rank}")
        ax = self.axis + rank if self.axis < 0 else self.axis
        for i, shape in enumerate(shapes):
            if len(shape) != rank or any(a != b for d, (a, b) in enumerate(zip(shape, shapes[0])) if d != ax):
                _fail(
                    self,
                    f"input {i} of shape {list(shape)} differs from input 0 of shape {list(shapes[0])} "
                    f"outside the concatenation axis {self.axis}",
                )
        expected = list(shapes[0])
        expected[ax] = sum(s[ax] for s in shapes)
        _check_result_shape(self, expected)


# ----------------------------------------------------------------------------- constants and batchnorm


@irdl_op_definition
class ConstantOp(QnnOp):
    """Weights and other constant tensors; `op.array` is the data shaped like the result."""

    name = "qnn.constant"

    output = result_def(TensorType)
    value = prop_def(DenseWeightsAttr)

    traits = traits_def(Pure())

    def __init__(
        self,
        array: np.ndarray | DenseWeightsAttr,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        attr = array if isinstance(array, DenseWeightsAttr) else DenseWeightsAttr(np.asarray(array))
        if result_type is None:
            if attr.array is None:
                raise VerifyException("qnn.constant: an elided constant needs an explicit result type")
            result_type = TensorType(f32, list(attr.array.shape))
        super().__init__(result_types=[result_type], properties={"value": attr, **_common_props(name)})

    @property
    def array(self) -> np.ndarray:
        data = self.value.array
        if data is None:
            label = self.node_name or self.name
            raise QuantloopError(
                f"constant {label}: weights were elided from the printed IR; "
                "print it with full weights (print_module(..., elide_weights_over=None), "
                "or quantloop opt without --elide-weights)"
            )
        return data.reshape(_shape(self.output))

    @property
    def elided(self) -> bool:
        return self.value.elided

    def verify_(self) -> None:
        shape = _shape(self.output)
        size = self.value.size
        if size is not None and size != math.prod(shape):
            _fail(self, f"holds {size} values but its type {list(shape)} needs {math.prod(shape)}")


@irdl_op_definition
class BatchNormOp(QnnOp):
    """Inference batch normalisation over axis 1; canonicalize folds it into the preceding conv."""

    name = "qnn.batchnorm"

    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    output = result_def(TensorType)
    epsilon_attr = prop_def(FloatAttr, prop_name="epsilon")

    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue | Operation,
        scale: SSAValue | Operation,
        bias: SSAValue | Operation,
        mean: SSAValue | Operation,
        var: SSAValue | Operation,
        epsilon: float = 1e-5,
        result_type: Attribute | None = None,
        *,
        name: str | None = None,
    ) -> None:
        input_v = SSAValue.get(input)
        super().__init__(
            operands=[input_v, *(SSAValue.get(v) for v in (scale, bias, mean, var))],
            result_types=[result_type or input_v.type],
            properties={"epsilon": _float(epsilon), **_common_props(name)},
        )

    @property
    def epsilon(self) -> float:
        return self.epsilon_attr.value.data

    def verify_(self) -> None:
        in_shape = _shape(self.input)
        if len(in_shape) < 2:
            _fail(self, f"input must have rank 2 or more (N, C, ...), got shape {list(in_shape)}")
        channels = in_shape[1]
        for what, value in (("scale", self.scale), ("bias", self.bias), ("mean", self.mean), ("var", self.var)):
            if tuple(_shape(value)) != (channels,):
                _fail(self, f"{what} shape {list(_shape(value))} must be [{channels}], one value per channel")
        if self.epsilon < 0:
            _fail(self, f"epsilon {self.epsilon} must not be negative")
        _check_same_shape(self, self.input)


# ----------------------------------------------------------------------------- host ops kept in ONNX terms


#: ONNX operators kept as `qnn.host`: they run on the host with ONNX's own semantics (never mapped
#: onto the accelerator); the importer maps everything else to a dedicated op or refuses it.
HOST_OP_TYPES = frozenset({
    "Mul", "Sub", "Div", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Max", "Min", "Mean",
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Gelu",
    "Transpose", "Pad", "Slice", "Split", "Gather", "Tile", "Expand", "DepthToSpace", "SpaceToDepth",
    "LRN", "AveragePool", "MaxPool", "ReduceMean", "ReduceMax", "ReduceSum", "GlobalMaxPool", "Resize",
    "InstanceNormalization", "LpNormalization",
})


#: `HOST_OP_TYPES` as an enum, so `op_type` is an enum attribute (`op_type = Sigmoid` in the custom syntax).
HostOpType = StrEnum("HostOpType", [(name, name) for name in sorted(HOST_OP_TYPES)])


@irdl_attr_definition
class HostOpTypeAttr(EnumAttribute[HostOpType], SpacedOpaqueSyntaxAttribute):  # type: ignore[valid-type]
    """`#qnn<host_op_type Sigmoid>`; `op_type = Sigmoid` in `qnn.host`'s syntax."""

    name = "qnn.host_op_type"


@irdl_op_definition
class HostOp(QnnOp):
    """An ONNX operator (`op_type` in `HOST_OP_TYPES`) that runs on the host, with ONNX's semantics.

    `onnx_attrs` holds the node's attributes (ints, floats, strings and lists of them); `absent`
    lists the positions of omitted optional ONNX inputs, so the node exports back exactly.
    Result types are those ONNX shape inference gave the node's outputs.
    """

    name = "qnn.host"

    args = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    op_type_attr = prop_def(HostOpTypeAttr, prop_name="op_type")
    onnx_attrs = prop_def(DictionaryAttr, prop_name="onnx_attrs")
    absent_attr = opt_prop_def(DenseArrayBase, prop_name="absent")

    traits = traits_def(Pure())

    def __init__(
        self,
        op_type: str,
        operands: Sequence[SSAValue | Operation],
        result_types: Sequence[Attribute],
        attrs: dict[str, Attribute] | None = None,
        *,
        absent: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        if op_type not in HOST_OP_TYPES:
            raise VerifyException(f"qnn.host: op_type '{op_type}' is not a host op ({', '.join(sorted(HOST_OP_TYPES))})")
        props: dict[str, Attribute] = {
            "op_type": HostOpTypeAttr(HostOpType(op_type)),
            "onnx_attrs": DictionaryAttr(attrs or {}),
        }
        if absent:
            props["absent"] = _ints(absent)
        super().__init__(operands=[[SSAValue.get(v) for v in operands]], result_types=[list(result_types)],
                         properties={**props, **_common_props(name)})

    @property
    def op_type(self) -> str:
        return self.op_type_attr.data.value

    @property
    def absent(self) -> tuple[int, ...]:
        return self.absent_attr.get_values() if self.absent_attr is not None else ()

    def verify_(self) -> None:
        if not self.outputs:
            _fail(self, "needs at least one result")
        for key, value in self.onnx_attrs.data.items():
            if not isinstance(value, (IntegerAttr, FloatAttr, StringAttr, DenseArrayBase, ArrayAttr)):
                _fail(self, f"attribute '{key}' is a {value.name}; ONNX attributes are ints, floats, strings or lists")
        if any(i < 0 or i > len(self.args) + len(self.absent) for i in self.absent):
            _fail(self, f"absent input positions {list(self.absent)} are out of range")


def op_kind(op: Operation) -> str:
    """What an op does, for schedules and reports: `qnn.host` ops say their ONNX op type."""
    return f"{op.name}:{op.op_type}" if isinstance(op, HostOp) else op.name


QNN_OPS: tuple[type[IRDLOperation], ...] = (
    Conv2dOp,
    GemmOp,
    MatMulOp,
    AddOp,
    ReluOp,
    ClipOp,
    MaxPoolOp,
    AvgPoolOp,
    GlobalAvgPoolOp,
    ReshapeOp,
    FlattenOp,
    ConcatOp,
    SoftmaxOp,
    ConstantOp,
    QuantizeOp,
    DequantizeOp,
    BatchNormOp,
    IdentityOp,
    DropoutOp,
    HostOp,
)

#: Ops whose result holds values of their first operand, only moved (selected, reshaped or copied).
MOVES_VALUES: tuple[type[IRDLOperation], ...] = (MaxPoolOp, ReshapeOp, FlattenOp, IdentityOp, DropoutOp)

#: Ops that read weights, and the index of the weight operand.
WEIGHT_OPERAND: dict[type[IRDLOperation], int] = {Conv2dOp: 1, GemmOp: 1, MatMulOp: 1}
