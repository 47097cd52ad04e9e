"""Rules of ops that keep channels in place: elementwise, reductions, softmax, pooling, padding."""

from __future__ import annotations

import operator

import torch

from widthc import shapes
from widthc.ir import Layout, TensorMeta
from widthc.ops.common import first_input, nones, set_field, shape_args


def unary(ctx) -> None:
    """Same shape, channel i of the output is channel i of the input."""
    ctx.set(ctx.lay(0, "input"))


def elementwise_rule(ctx) -> None:
    """Broadcasting op: every non-broadcast dim of every tensor operand is one channel set."""
    out = ctx.out
    ops = ctx.tensor_args()  # [(meta, lays)]
    result = []
    for d in range(out.ndim):
        entries = []
        for meta, lays in ops:
            j = d - (out.ndim - meta.ndim)
            if j >= 0 and meta.shape[j] == out.shape[d]:
                entries.append(lays[j])
        result.append(ctx.unify(*entries, why="elementwise op") if entries else None)
    ctx.set(tuple(result))


def reduced(ctx, dims, keepdim, ordered: bool = False) -> tuple:
    """The layouts left by a reduction over `dims` (None: all); reduced channels are mixed
    (`ordered`: the result names positions, so it depends on the channels' order too)."""
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    out = []
    for d in range(x.ndim):
        if d in dims:
            ctx.mix(lays[d], ordered)
            if keepdim:
                out.append(None)
        else:
            out.append(lays[d])
    return tuple(out)


def reduce_dims(ctx, dims, keepdim, ordered: bool = False) -> None:
    ctx.set(reduced(ctx, dims, keepdim, ordered))


def norm_rule(ctx) -> None:
    """norm(x, p, dim, keepdim): a reduction over `dim` (all dims when None)."""
    reduce_dims(ctx, ctx.arg(2, "dim", None), ctx.arg(3, "keepdim", False))


def spread_rule(ctx) -> None:
    """var / std (x, dim, unbiased, keepdim) or (x, dim, *, correction, keepdim): a reduction
    over `dim` (all dims when None)."""
    reduce_dims(ctx, ctx.arg(1, "dim", None), ctx.arg(3, "keepdim", False))


def extreme_rule(ctx) -> None:
    """torch.max / min / median: with a tensor operand, elementwise; with a dim, a reduction
    that returns (values, indices), both laid out alike; with neither, a full reduction to one
    value."""
    if isinstance(ctx.arg(1, "other", None), TensorMeta):
        return elementwise_rule(ctx)
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        return reduce_dims(ctx, None, False)
    lays = reduced(ctx, dim, ctx.arg(2, "keepdim", False), ordered=True)  # the indices
    ctx.set((lays, lays))


def pair_reduction(dim_at: int):
    """mode(x, dim=-1, keepdim), kthvalue(x, k, dim=-1, keepdim): a reduction over `dim` that
    returns (values, indices)."""

    def rule(ctx) -> None:
        dim, keepdim = ctx.arg(dim_at, "dim", -1), ctx.arg(dim_at + 1, "keepdim", False)
        lays = reduced(ctx, dim, keepdim, ordered=True)  # the indices name positions
        ctx.set((lays, lays))

    return rule


def ranked_rule(dim_at: int):
    """sort / topk: (values, indices) whose positions along `dim` are ranks, not channels (a
    channel dim there keeps its width); every other dim passes through."""

    def rule(ctx) -> None:
        x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
        d = shapes.norm_dim(ctx.arg(dim_at, "dim", -1), x.ndim)
        ctx.sink(lays[d], why="sorting along the channel dim ranks the channels")
        lays[d] = None
        ctx.set((tuple(lays), tuple(lays)))

    return rule


def reduce_rule(ctx) -> None:
    reduce_dims(ctx, ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False))


def position_rule(ctx) -> None:
    """argmax / argmin: a reduction whose result is a position along the reduced dims."""
    reduce_dims(ctx, ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False), ordered=True)


def reduce_shape(ctx) -> TensorMeta:
    x = ctx.arg(0, "input")
    dims, keepdim = ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False)
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    shape = tuple(1 if d in dims else s for d, s in enumerate(x.shape) if keepdim or d not in dims)
    return TensorMeta(shape, x.dtype)


def softmax(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        dim = ctx.module.dim if ctx.module is not None else -1
    ctx.mix(lays[shapes.norm_dim(dim, x.ndim)])
    ctx.set(lays)


def spatial(ctx, n_spatial: int | None = None) -> None:
    """Pooling, padding, resizing: the last `n_spatial` dims change, channels pass through."""
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    out = ctx.out
    nsp = n_spatial if n_spatial is not None else max(out.ndim - 2, 1)
    keep = x.ndim - nsp
    for d in range(keep, x.ndim):
        ctx.sink(lays[d], why="pooling/resizing mixes this dim")
    ctx.set(tuple(lays[:keep]) + nones(nsp))


def tensor_attr(ctx) -> None:
    """x.size(), x.shape, x.size(d): sizes that follow the channels they measure; `out.values`
    of a structured value (a namedtuple, a ModelOutput) is that field's layouts."""
    lays = ctx.lay(0)
    target = ctx.node.target
    if target is getattr and not isinstance(ctx.arg(0), TensorMeta):
        return set_field(ctx, ctx.arg(0), lays, ctx.node.args[1])
    if target == "size" or (target is getattr and ctx.node.args[1] == "shape"):
        d = ctx.arg(1, "dim", None) if target == "size" else None
        if d is None:
            return ctx.set(tuple(lays))
        return ctx.set(lays[shapes.norm_dim(d, len(lays))])
    if target in ("numel", "nelement", torch.numel):
        for e in lays:
            ctx.sink(e, why="element count used as a number")
    ctx.set(None)


def creation(ctx) -> None:
    """torch.zeros(n, c), x.new_zeros(...): dims sized by values read from tensors follow them."""
    first = 1 if ctx.node.op == "call_method" else 0
    args = shape_args(ctx, first)
    result = [None] * ctx.out.ndim
    for d, (_, raw) in enumerate(args[: len(result)]):
        if isinstance(raw, torch.fx.Node):
            e = ctx.entry(raw)
            result[d] = e if not isinstance(e, tuple) else None
    ctx.set(tuple(result))


def pad_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    pad = ctx.arg(1, "pad")
    for i in range(len(pad) // 2):
        if pad[2 * i] or pad[2 * i + 1]:
            d = x.ndim - 1 - i
            ctx.sink(lays[d], why="padding along the channel dim")
            lays[d] = None
    ctx.set(tuple(lays))


def pad_module_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    pad = ctx.module.padding
    for i in range(len(pad) // 2):
        if pad[2 * i] or pad[2 * i + 1]:
            ctx.sink(lays[x.ndim - 1 - i], why="padding along the channel dim")
            lays[x.ndim - 1 - i] = None
    ctx.set(tuple(lays))


def pool_shape(n: int, kind: str):
    def shape(ctx) -> TensorMeta:
        x = first_input(ctx)
        m = ctx.module
        if kind == "adaptive":
            size = m.output_size if m is not None else ctx.arg(1, "output_size")
            sp = shapes.adaptive_out(x.shape[-n:], size)
        elif m is not None:
            sp = shapes.pool_out(
                x.shape[-n:], m.kernel_size, m.stride, m.padding,
                getattr(m, "dilation", 1), m.ceil_mode,
            )  # fmt: skip
        else:
            dil = ctx.arg(4, "dilation", 1) if kind == "max" else 1
            ceil = ctx.arg(5 if kind == "max" else 4, "ceil_mode", False)
            sp = shapes.pool_out(
                x.shape[-n:], ctx.arg(1, "kernel_size"), ctx.arg(2, "stride", None),
                ctx.arg(3, "padding", 0), dil, ceil,
            )  # fmt: skip
        return TensorMeta(x.shape[:-n] + sp, x.dtype)

    return shape


def interpolate_shape(ctx) -> TensorMeta:
    x = first_input(ctx)
    m = ctx.module
    n = x.ndim - 2
    if m is not None:
        sp = shapes.interpolate_out(x.shape[-n:], m.size, m.scale_factor)
    else:
        sp = shapes.interpolate_out(
            x.shape[-n:], ctx.arg(1, "size", None), ctx.arg(2, "scale_factor", None)
        )
    return TensorMeta(x.shape[:-n] + sp, x.dtype)


def pad_module_shape(ctx) -> TensorMeta:
    x, pad = first_input(ctx), ctx.module.padding
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[x.ndim - 1 - i] += pad[2 * i] + pad[2 * i + 1]
    return TensorMeta(tuple(shape), x.dtype)


def softmax_at(ctx, dim) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    ctx.mix(lays[shapes.norm_dim(dim, x.ndim)])
    ctx.set(lays)


def count_compare(ctx) -> None:
    """A comparison: elementwise on tensors. Of channel counts (`_assert(x.shape[-1] == C)`):
    two counts compared for equality count the same channels at every width; a count and the
    literal of its full width, the literal follows the width. Any other comparison of a channel
    count cannot follow it."""
    if any(isinstance(v, TensorMeta) for v in (ctx.arg(0), ctx.arg(1))):
        return elementwise_rule(ctx)
    raws = ctx.node.args[:2]
    entries = [ctx.resolve(ctx.entry(raw)) for raw in raws]
    laid = [i for i, e in enumerate(entries) if isinstance(e, Layout)]
    equality = ctx.node.target in (operator.eq, operator.ne)
    if equality and len(laid) == 2:
        ctx.same_count(entries[0], entries[1], why="compared channel counts")
    elif equality and len(laid) == 1 and raws[1 - laid[0]] == entries[laid[0]].size:
        ctx.rewrite(("args", 1 - laid[0]), entries[laid[0]])
    else:
        for e in entries:
            ctx.sink(e, why="channel count used in arithmetic")
    ctx.set(None)
