"""Build the `func.func @main` module shape every quantloop model has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, BlockArgument, Operation, Region, SSAValue

from quantloop.errors import QuantloopError

OpT = TypeVar("OpT", bound=Operation)


class MainBuilder:
    """`b = MainBuilder([input types]); y = b.add(SomeOp(b.args[0], ...)); module = b.finish([y])`."""

    def __init__(self, input_types: Sequence[Attribute], input_names: Sequence[str] | None = None) -> None:
        self.block = Block(arg_types=list(input_types))
        for arg, name in zip(self.block.args, input_names or ()):
            arg.name_hint = name

    @property
    def args(self) -> tuple[BlockArgument, ...]:
        return tuple(self.block.args)

    def add(self, op: OpT) -> OpT:
        self.block.add_op(op)
        return op

    def finish(self, outputs: Sequence[SSAValue | Operation], name: str = "main") -> ModuleOp:
        values = [SSAValue.get(v) for v in outputs]
        self.block.add_op(ReturnOp(*values))
        func = FuncOp(name, ([a.type for a in self.block.args], [v.type for v in values]), Region(self.block))
        return ModuleOp([func])


def main_func(module: ModuleOp) -> FuncOp:
    """The module's `func.func @main`."""
    for op in module.ops:
        if isinstance(op, FuncOp) and op.sym_name.data == "main":
            return op
    raise QuantloopError("module: has no func.func @main (quantloop models are one function named main)")
