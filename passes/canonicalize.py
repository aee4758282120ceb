"""`qnn-canonicalize`: the graph the rest of the flow expects.

- BatchNorm folds into the conv / gemm that produces its input, when that op's only user is the
  BatchNorm and weights, bias and BN parameters are float constants; otherwise the
  `qnn.batchnorm` stays (it is still a valid, exportable op).
- Mul / Div / Add / Sub of a conv / gemm result by a per-output-channel float constant fold the
  same way (BatchNorm written as Mul/Add); otherwise they stay host ops.
- Relu / Clip fuse into the producing conv / gemm / add as its `act` (only user, no act yet).
- Identity and Dropout disappear; trivial float constant expressions (reshape, flatten, relu,
  clip, add of constants) are folded; dead ops are erased.
Folding is done in float64 and rounded once to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import Float32Type, ModuleOp, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.transforms.dead_code_elimination import region_dce

from quantloop.ir.ops import Activation, ActivationAttr
from quantloop.ir import (
    AddOp,
    BatchNormOp,
    ClipOp,
    ConstantOp,
    Conv2dOp,
    DropoutOp,
    FlattenOp,
    GemmOp,
    HostOp,
    IdentityOp,
    ReluOp,
    ReshapeOp,
)


def _float_constant(value: SSAValue | None) -> np.ndarray | None:
    """The data of a float32 `qnn.constant` (None for anything else, elided weights included)."""
    if value is None or not isinstance(value.owner, ConstantOp):
        return None
    if not isinstance(value.type.element_type, Float32Type) or value.owner.elided:
        return None
    return value.owner.array


def _single_user(value: SSAValue) -> bool:
    return value.has_one_use()


def _named(ops: list[Operation], like: list[SSAValue | None], base: str | None) -> list[Operation]:
    """Give the folded weight, bias and op the SSA names of what they replace."""
    for op, old in zip(ops, like):
        hint = old.name_hint if old is not None else (f"{base}.bias" if base else None)
        if hint:
            op.results[0].name_hint = hint.replace("/", "_")
    return ops


class DropIdentity(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if isinstance(op, (IdentityOp, DropoutOp)) and op.input.type == op.output.type:
            rewriter.replace(op, [], [op.input])


class FoldBatchNorm(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: BatchNormOp, rewriter: PatternRewriter) -> None:
        producer = bn.input.owner
        if not isinstance(producer, (Conv2dOp, GemmOp)) or producer.act != "none" or not _single_user(bn.input):
            return
        params = [_float_constant(v) for v in (bn.scale, bn.bias, bn.mean, bn.var)]
        if any(p is None for p in params):
            return
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + bn.epsilon)
        fold = self._fold_conv if isinstance(producer, Conv2dOp) else self._fold_gemm
        new_ops = fold(producer, bn.output.type, scale, beta, mean, channel_type=bn.mean.type)
        if new_ops is not None:
            rewriter.replace(bn, new_ops)

    @staticmethod
    def _fold_conv(conv: Conv2dOp, result_type, scale, beta, mean, channel_type) -> list[Operation] | None:
        """The conv computing `(conv - mean) * scale + beta` per output channel (float64, rounded once)."""
        weight = _float_constant(conv.weight)
        bias = np.zeros(scale.shape) if conv.bias is None else _float_constant(conv.bias)
        if weight is None or bias is None:
            return None
        new_w = (weight.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
        new_b = ((bias.astype(np.float64) - mean) * scale + beta).astype(np.float32)
        w_op = ConstantOp(new_w, conv.weight.type, name=conv.weight.owner.node_name)
        b_op = ConstantOp(new_b, channel_type or TensorType(f32, [len(new_b)]), name=f"{conv.node_name or 'conv'}.bias")
        new = Conv2dOp(conv.input, w_op, b_op, result_type, strides=conv.strides, pads=conv.pads,
                       dilations=conv.dilations, group=conv.group, name=conv.node_name)
        return _named([w_op, b_op, new], [conv.weight, None, conv.output], conv.node_name)

    @staticmethod
    def _fold_gemm(gemm: GemmOp, result_type, scale, beta, mean, channel_type) -> list[Operation] | None:
        weight = _float_constant(gemm.b)
        outputs = scale.shape[0]
        c = np.zeros(()) if gemm.c is None else _float_constant(gemm.c)
        if weight is None or c is None or c.size not in (1, outputs) or (c.ndim == 2 and c.shape[0] != 1):
            return None
        new_w = weight.astype(np.float64) * (scale[:, None] if gemm.trans_b else scale[None, :]) * 1.0
        c_eff = np.broadcast_to(c.astype(np.float64).reshape(-1) if c.size > 1 else c.astype(np.float64).reshape(()),
                                (outputs,)) * gemm.beta
        new_c = ((c_eff - mean) * scale + beta).astype(np.float32)
        w_op = ConstantOp(new_w.astype(np.float32), gemm.b.type, name=gemm.b.owner.node_name)
        c_op = ConstantOp(new_c, channel_type or TensorType(f32, [len(new_c)]), name=f"{gemm.node_name or 'gemm'}.bias")
        new = GemmOp(gemm.a, w_op, c_op, result_type, alpha=gemm.alpha, beta=1.0, trans_a=gemm.trans_a,
                     trans_b=gemm.trans_b, name=gemm.node_name)
        return _named([w_op, c_op, new], [gemm.b, None, gemm.output], gemm.node_name)


class FoldAffineIntoLayer(RewritePattern):
    """`layer(x) * c`, `/ c`, `+ c`, `- c` with a float constant `c` that is one value per output channel
    (or one value) fold into the conv / gemm's weights and bias, as a BatchNorm does. Anything else
    (a constant varying along other axes, a layer with other users or a fused activation) stays on the host."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        kind = op.op_type if isinstance(op, HostOp) else "Add" if isinstance(op, AddOp) and op.act == "none" else None
        if kind not in ("Mul", "Div", "Add", "Sub") or len(op.operands) != 2:
            return
        operands = list(op.operands)
        order = (0, 1) if kind in ("Div", "Sub") else (0, 1, 1, 0)
        for i in range(0, len(order), 2):
            layer_value, c = operands[order[i]], _float_constant(operands[order[i + 1]])
            if c is not None and self._fold(op, kind, layer_value, c, rewriter):
                return

    @staticmethod
    def _fold(op: Operation, kind: str, value: SSAValue, c: np.ndarray, rewriter: PatternRewriter) -> bool:
        layer = value.owner
        if not isinstance(layer, (Conv2dOp, GemmOp)) or layer.act != "none" or not _single_user(value):
            return False
        out_shape = tuple(value.type.get_shape())
        if tuple(op.results[0].type.get_shape()) != out_shape or c.ndim > len(out_shape):
            return False
        channels = out_shape[1]
        full = (1,) * (len(out_shape) - c.ndim) + c.shape
        if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, channels):
            return False
        per_channel = np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,))
        if kind == "Div" and not np.all(per_channel):
            return False
        scale = {"Mul": per_channel, "Div": 1.0 / per_channel}.get(kind, np.ones(channels))
        shift = {"Add": per_channel, "Sub": -per_channel}.get(kind, np.zeros(channels))
        new_ops = (FoldBatchNorm._fold_conv if isinstance(layer, Conv2dOp) else FoldBatchNorm._fold_gemm)(
            layer, op.results[0].type, scale, shift, np.zeros(channels), channel_type=None)
        if new_ops is None:
            return False
        rewriter.replace(op, new_ops)
        return True


class FuseActivation(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, (ReluOp, ClipOp)):
            return
        producer = op.input.owner
        if not isinstance(producer, (Conv2dOp, GemmOp, AddOp)) or producer.act != "none":
            return
        if not _single_user(op.input) or op.output.type != op.input.type:
            return
        if isinstance(op, ReluOp):
            producer.properties["act"] = ActivationAttr(Activation.RELU)
        else:
            producer.properties["act"] = ActivationAttr(Activation.CLIP)
            producer.properties["act_min"] = op.properties["min"]
            producer.properties["act_max"] = op.properties["max"]
        rewriter.notify_op_modified(producer)
        name = op.output.name_hint
        rewriter.replace(op, [], [producer.results[0]])
        if name:
            producer.results[0].name_hint = name


class FoldConstantExpressions(RewritePattern):
    """Reshape / flatten / relu / clip / add whose operands are all float constants."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, (ReshapeOp, FlattenOp, ReluOp, ClipOp, AddOp)):
            return
        arrays = [_float_constant(v) for v in op.operands]
        if any(a is None for a in arrays) or not isinstance(op.results[0].type.element_type, Float32Type):
            return
        if isinstance(op, AddOp) and op.act != "none":
            return
        shape = tuple(op.results[0].type.get_shape())
        if isinstance(op, (ReshapeOp, FlattenOp)):
            result = arrays[0].reshape(shape)
        elif isinstance(op, ReluOp):
            result = np.maximum(arrays[0], np.float32(0))
        elif isinstance(op, ClipOp):
            result = np.clip(arrays[0], np.float32(op.min), np.float32(op.max))
        else:
            result = arrays[0] + arrays[1]
        rewriter.replace(op, ConstantOp(np.ascontiguousarray(result, np.float32), op.results[0].type, name=op.node_name))


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Fold BatchNormalization into conv/gemm, fuse relu/clip, fold constants, drop Identity/Dropout."""

    name = "qnn-canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = GreedyRewritePatternApplier(
            [DropIdentity(), FoldConstantExpressions(), FoldBatchNorm(), FoldAffineIntoLayer(), FuseActivation()]
        )
        PatternRewriteWalker(patterns, apply_recursively=True).rewrite_module(op)
        for func_op in op.ops:
            for region in func_op.regions:
                region_dce(region)
