"""Helpers shared by the op rules: argument access, broadcast shapes, FLOPs factors."""

from __future__ import annotations

import math
import operator

import torch

from widthc.ir import TensorMeta
from widthc.ops.registry import OpSpec


def first_input(ctx) -> TensorMeta:
    return ctx.arg(0, "input")


def same_shape(ctx) -> TensorMeta:
    return first_input(ctx)


def broadcast_shape(ctx) -> TensorMeta:
    metas = [v for v in ctx.values() if isinstance(v, TensorMeta)]
    shape = torch.broadcast_shapes(*[m.shape for m in metas]) if metas else ()
    return TensorMeta(tuple(shape), metas[0].dtype if metas else torch.float32)


def compare_shape(ctx) -> TensorMeta:
    return TensorMeta(broadcast_shape(ctx).shape, torch.bool)


def numel_split(meta: TensorMeta, lays) -> tuple[int, list]:
    """Product of a tensor's dims, as (fixed part, [layouts of its channel dims])."""
    const, factors = 1, []
    for d, size in enumerate(meta.shape):
        if lays is not None and lays[d] is not None:
            factors.append(lays[d])
        else:
            const *= size
    return const, factors


def nones(n: int) -> tuple:
    return (None,) * n


def barrier(why: str):
    def rule(ctx) -> None:
        ctx.barrier(why)

    return rule


def expect(got: int, want: int, what: str) -> None:
    """A shape formula refuses an input the real op would refuse (the fallback then runs the
    op for real and reports PyTorch's own error)."""
    if got != want:
        raise ValueError(f"{what}: expected {want}, got {got}")


def run_on_meta(ctx):
    return ctx.run_meta()


def spec(
    family, shape, couple, flops=None, resize=None, zeros=None, scale=None, private=()
) -> OpSpec:
    return OpSpec(family, shape, couple, flops, resize, zeros, scale, private)


def shape_args(ctx, first: int):
    """(path, raw arg) for each entry of a shape given as varargs or as one sequence."""
    raw = ctx.node.args[first:]
    if len(raw) == 1 and isinstance(raw[0], (tuple, list)):
        return [(("args", first, i), a) for i, a in enumerate(raw[0])]
    if not raw:
        key = "shape" if "shape" in ctx.node.kwargs else "size"
        seq = ctx.node.kwargs.get(key, ())
        return [(("kwargs", key, i), a) for i, a in enumerate(seq)]
    return [(("args", first + i), a) for i, a in enumerate(raw)]


def set_field(ctx, value, lays, key) -> None:
    """The node is item `key` (an index, a key or an attribute name) of a structured value
    whose layouts are `lays`. Where that item cannot be found, the value's channels freeze."""
    try:
        if isinstance(key, str) and isinstance(lays, (tuple, list)):  # namedtuple field
            item = getattr(value, key)
            key = next(i for i, v in enumerate(value) if v is item)
        elif isinstance(key, int) and isinstance(lays, dict):  # ModelOutput[i]: i-th set field
            key = list(lays)[key]
        ctx.set(lays[key])
    except (AttributeError, IndexError, KeyError, StopIteration, TypeError):
        ctx.barrier(f"cannot follow the channels of item {key!r} of a structured value")


_SIZE_ARITHMETIC = {getattr, operator.getitem, operator.add, operator.sub, operator.mul,
                    operator.floordiv, operator.truediv, math.ceil, math.floor}  # fmt: skip


def from_shapes(ctx, node: torch.fx.Node) -> bool:
    """A Python value computed only from tensors' shapes and literals (`C // heads` with C read
    from a shape), not by a function torch.fx did not enter (a head count looked up in a
    config when the model runs) nor from a tensor's values."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        size = n.op == "call_method" and n.target == "size"
        if not (size or (n.op == "call_function" and n.target in _SIZE_ARITHMETIC)):
            return False
        todo += [a for a in n.all_input_nodes if not isinstance(ctx.value(a), TensorMeta)]
    return True
