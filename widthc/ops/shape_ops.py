"""Rules of ops that move channels: reshape/flatten, permute, expand, concat, split, indexing."""

from __future__ import annotations

import itertools
import math

import torch

from widthc import shapes
from widthc.ir import Layout, TensorMeta
from widthc.ops.common import first_input, from_shapes, shape_args
from widthc.ops.elementwise import elementwise_rule
from widthc.ops.heads import equal_pieces, heads_split, rows_split
from widthc.ops.spans import MAX_SEGMENTS, merged, split_layout, taken


def reshape_couple(ctx, shape_from: int | None = None) -> tuple:
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    blocks = shapes.reshape_blocks(x.shape, out.shape)
    if blocks is None:
        ctx.barrier("reshape with a different number of elements")
        return (None,) * out.ndim
    if x.dtype.is_floating_point:  # a weight reshaped for use (not an index table):
        lays = list(lays)  # the leading dim of each block may carry channels (channel-major)
        for src, _ in blocks:
            lead = next((d for d in src if x.shape[d] != 1), None)
            if lead is not None:
                lays[lead] = ctx.own(lays[lead], x.shape[lead])
    result = [None] * out.ndim
    for src, dst in blocks:
        for d in src:
            # a one-channel dim keeps its width: it cannot shrink, and a reshape may merge it
            # into any neighbour
            if not isinstance(ctx.resolve(lays[d]), Layout) or x.shape[d] == 1:
                ctx.sink(lays[d], why="reshape")
        # channels that are frozen already never shrink: a dim of them is as good as fixed
        laid = [d for d in src if not ctx.frozen(lays[d]) and x.shape[d] != 1]
        if not laid:
            continue
        big_src = [d for d in src if x.shape[d] != 1]
        big_dst = [d for d in dst if out.shape[d] != 1]
        lead = big_dst[0] if big_dst else (dst[0] if dst else None)
        if len(laid) == 1 and len(big_dst) <= 1 and lead is not None:
            # merge (flatten) or keep: each channel repeated over the dims after it, and all of
            # them repeated over the dims before it (a 2x2 patch merging's (2, 2, C) -> 4C)
            inner = math.prod(x.shape[d] for d in src if d > laid[0])
            outer = math.prod(x.shape[d] for d in src if d < laid[0])
            entry = ctx.resolve(lays[laid[0]])
            entry = entry.repeat(inner) if inner > 1 else entry
            if outer > 1 and len(entry.segments) * outer > MAX_SEGMENTS:
                ctx.sink(entry, why="reshape repeats the channels too many times")
                continue
            result[lead] = entry.tile(outer) if outer > 1 else entry
        elif len(laid) == 1 and len(big_src) == 1 and lead is not None:  # split: unflatten
            tail = math.prod(out.shape[d] for d in dst if d > lead)
            entry = ctx.resolve(lays[laid[0]])
            if all(s.inner % tail == 0 for s in entry.segments):
                result[lead] = ctx.unrepeat(entry, tail)
            elif len(big_dst) >= 3 or (
                laid[0] == x.ndim - 1 and big_dst[-1] == out.ndim - 1 and len(big_dst) == 2
            ):  # (n, heads, head_dim), or channels last (heads, head_dim)
                heads_split(ctx, entry, [out.shape[d] for d in big_dst], big_dst, result)
            elif len(big_dst) != 2 or not rows_split(
                ctx, entry, [out.shape[d] for d in big_dst], big_dst, result
            ):  # (n, m): n equal pieces of the channels, or n heads of m positions
                ctx.sink(entry, why="reshape splits the channel dim")
        elif len(laid) == 1 and (
            moved := merged(ctx.resolve(lays[laid[0]]), x.shape, src, out.shape, dst, laid[0])
            or taken(ctx.resolve(lays[laid[0]]), x.shape, src, out.shape, dst, laid[0])
        ):  # the channels inside a dim merged with others, or taken back out of one
            result[moved[0]] = moved[1]
        else:
            for d in laid:
                ctx.sink(lays[d], why="reshape mixes the channel dim with another dim")
    if shape_from is not None:
        size_args(ctx, shape_args(ctx, shape_from), result)
    ctx.set(tuple(result))
    return tuple(result)


def literal(ctx, raw):
    """`raw` where it is a literal or a size that is one: computed from shapes only and the same
    at another batch size (a head_dim read from a shape); else None (a batch size read from the
    input or a product with it differs at another batch; a config read at run time may change)."""
    if isinstance(raw, torch.fx.Node):
        return ctx.value(raw) if from_shapes(ctx, raw) and ctx.batch_free(raw) else None
    return raw


def size_quotient(ctx) -> None:
    """`c // n` of a channel count `c`: the size of one of n equal pieces of those channels
    (a split attention's `C // radix`); the pieces then keep the same channels."""
    if any(isinstance(v, TensorMeta) for v in (ctx.arg(0), ctx.arg(1))):
        return elementwise_rule(ctx)
    entry, n = ctx.resolve(ctx.entry(ctx.node.args[0])), literal(ctx, ctx.node.args[1])
    piece = None
    if isinstance(entry, Layout) and isinstance(n, int) and n > 0 and entry.size % n == 0:
        piece = equal_pieces(ctx, entry, n)
    if piece is None:
        ctx.sink(entry, why="channel count used in arithmetic")
    ctx.set(piece)


def size_product(ctx) -> None:
    """`c * n` of a channel count `c` (`num_key_value_heads * n_rep`): each channel counted n
    times; on tensors, an elementwise product."""
    if any(isinstance(ctx.arg(i), TensorMeta) for i in (0, 1)):
        return elementwise_rule(ctx)
    raws = ctx.node.args[:2]
    entries = [ctx.resolve(ctx.entry(raw)) for raw in raws]
    laid = [i for i, e in enumerate(entries) if e is not None]
    times = batch_times(ctx, raws[1 - laid[0]]) if len(laid) == 1 else None
    if isinstance(times, int) and not isinstance(times, bool) and times > 0:
        return ctx.set(ctx.repeat(entries[laid[0]], times, why="channel count multiplied"))
    for e in entries:
        ctx.sink(e, why="channel count used in arithmetic")
    ctx.set(None)


def batch_times(ctx, raw):
    """The other factor of a channel count's product: a literal, or a size from shapes only
    (MobileViT's `B * C` counts B copies of the channels; never rewritten, see `size_args`)."""
    if isinstance(raw, torch.fx.Node) and from_shapes(ctx, raw):
        return ctx.value(raw)
    return literal(ctx, raw)


def size_args(ctx, args, result) -> None:
    """Sizes given to reshape/expand: a literal channel count is rewritten when the channels
    shrink; a size read from a tensor (`x.size(1)`) follows that output dim's channels where it
    counts the same ones, and is rewritten like a literal where it counts others (a reshape to
    the residual's width `C` of the attention's heads: they need not keep the same channels).
    A whole shape computed at run time (one value holding the sizes) is followed size by size:
    a size that does not follow channels keeps the width of its dim."""
    if len(args) == 1 and isinstance(args[0][1], torch.fx.Node):
        value = ctx.value(args[0][1])
        if isinstance(value, (tuple, list)) and len(value) == len(result):
            return sizes_computed(ctx, args[0][1], value, result)
    for d, (path, raw) in enumerate(args):
        if d >= len(result):
            break
        if isinstance(raw, int):
            if raw != -1 and result[d] is not None:
                ctx.rewrite(path, result[d])
        elif isinstance(raw, torch.fx.Node):
            lay, size = ctx.resolve(result[d]), ctx.entry(raw)
            value = ctx.value(raw)
            # a size that reads no channels is rewritten only where it is a literal in effect
            # (`literal`): `B * C` differs at another batch size, a config read at run time may
            reads = isinstance(ctx.resolve(size), Layout)
            same = isinstance(lay, Layout) and reads and ctx.same_counts(size, lay)
            if reads and not same and ctx.batch_dependent(raw):
                # `B * C` counting other channels than the dim's: no constant fits every batch
                for e in (size, lay):
                    ctx.sink(e, why="reshape to a size computed at run time")
                result[d] = None
            elif isinstance(lay, Layout) and reads and not same:
                ctx.rewrite(path, lay)
            elif lay is None and reads and isinstance(value, int):
                ctx.rewrite(path, value)  # a fixed dim (head_dim = C // heads): pinned
            elif isinstance(lay, Layout) and not reads and literal(ctx, raw) is not None:
                ctx.rewrite(path, lay)  # `C // heads` not followed (C cut unequally): as a literal
            elif isinstance(lay, Layout) and not reads:  # a head count from a config, B * C
                ctx.sink(lay, why="reshape to a size computed at run time")
                result[d] = None
            else:
                result[d] = ctx.same_count(size, result[d], why="reshape size")


def sizes_computed(ctx, node, value, result) -> None:
    """A shape held by one traced value (`s[:-1] + (h, d)` where the tracer could not split it):
    each size that reads channels follows them; any other size freezes its dim's channels."""
    entries = ctx.entry(node)
    for d, size in enumerate(value):
        e = entries[d] if isinstance(entries, (tuple, list)) and d < len(entries) else None
        if size == -1 or result[d] is None:
            continue
        if ctx.resolve(e) is None:
            ctx.sink(result[d], why="reshape to a size computed at run time")
            result[d] = None
        else:
            result[d] = ctx.same_count(e, result[d], why="reshape size")


def view_couple(ctx) -> None:
    reshape_couple(ctx, shape_from=1)


def view_as_couple(ctx) -> None:
    """x.reshape_as(other): a reshape whose sizes are read from `other`, so they follow it."""
    result = reshape_couple(ctx)
    other = ctx.lay(1, "other")
    ctx.set(tuple(ctx.unify(r, o, why="reshape_as") for r, o in zip(result, other)))


def flatten_couple(ctx) -> None:
    reshape_couple(ctx)


def unflatten_couple(ctx) -> None:
    """torch.unflatten(x, dim, sizes): a reshape whose literal sizes follow the channels."""
    result = list(reshape_couple(ctx))
    x, args = ctx.arg(0, "input"), ctx.node.args
    dim = shapes.norm_dim(ctx.arg(1, "dim"), x.ndim)
    at = ("args", 2) if len(args) > 2 else ("kwargs", "sizes")
    raw = args[2] if len(args) > 2 else ctx.node.kwargs["sizes"]
    if not isinstance(raw, (tuple, list)):  # one value computed at run time: cannot follow
        for e in result:
            ctx.sink(e, why="unflatten into sizes computed at run time")
        return ctx.set((None,) * len(result))
    part = result[dim : dim + len(raw)]
    size_args(ctx, [((*at, i), r) for i, r in enumerate(raw)], part)
    result[dim : dim + len(raw)] = part
    ctx.set(tuple(result))


def unflatten_module_couple(ctx) -> None:
    """nn.Unflatten: its `unflattened_size` is resized (ops/layers.py); an inferred size (-1)
    next to a channel dim would silently take the wrong value, so it is a barrier."""
    if -1 in ctx.module.unflattened_size:
        return ctx.barrier("Unflatten with an inferred size (-1)")
    reshape_couple(ctx)


def unflatten_resize(m, params, in_shapes) -> dict:
    """Only the leading non-one size of an unflatten carries channels (reshape_couple)."""
    sizes = list(m.unflattened_size)
    dim = shapes.norm_dim(m.dim, len(in_shapes[0]))
    lead = next((i for i, s in enumerate(sizes) if s != 1), None)
    if lead is None:
        return {}
    sizes[lead] = in_shapes[0][dim] // (math.prod(sizes) // sizes[lead])
    return {"unflattened_size": tuple(sizes)}


def permute_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dims = ctx.node.args[1:] if ctx.node.op == "call_method" else ctx.arg(1, "dims")
    if ctx.node.op == "call_method" and len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    if ctx.node.op == "call_method" and not dims:
        dims = ctx.node.kwargs.get("dims")
    ctx.set(tuple(lays[shapes.norm_dim(d, x.ndim)] for d in dims))


def transpose_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    if x.ndim < 2:
        return ctx.set(tuple(lays))
    a = shapes.norm_dim(ctx.arg(1, "dim0", 0), x.ndim)
    b = shapes.norm_dim(ctx.arg(2, "dim1", 1), x.ndim)
    lays[a], lays[b] = lays[b], lays[a]
    ctx.set(tuple(lays))


def t_couple(ctx) -> None:
    lays = ctx.lay(0, "input")
    ctx.set(tuple(reversed(lays)) if len(lays) == 2 else lays)


def unsqueeze_couple(ctx) -> None:
    out = ctx.out
    lays = list(ctx.lay(0, "input"))
    d = shapes.norm_dim(ctx.arg(1, "dim"), out.ndim)
    ctx.set(tuple(lays[:d] + [None] + lays[d:]))


def squeeze_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dims = ctx.arg(1, "dim", None)
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    out = []
    for d in range(x.ndim):
        if d in dims and x.shape[d] == 1:
            ctx.mix(lays[d])
        else:
            out.append(lays[d])
    ctx.set(tuple(out))


def expand_couple(ctx) -> None:
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    new = out.ndim - x.ndim
    result = [None] * new
    for d in range(x.ndim):
        if x.shape[d] == out.shape[d + new]:
            result.append(lays[d])
        else:
            ctx.sink(lays[d], why="expand of a channel dim")
            result.append(None)
    size_args(ctx, shape_args(ctx, 1), result)
    ctx.set(tuple(result))


def expand_as_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    other, olays = ctx.arg(1, "other"), ctx.lay(1, "other")
    new = other.ndim - x.ndim
    result = list(olays[:new])
    for d in range(x.ndim):
        if x.shape[d] == other.shape[d + new]:
            result.append(ctx.unify(lays[d], olays[d + new], why="expand_as"))
        else:
            result.append(olays[d + new])
    ctx.set(tuple(result))


def cat_couple(ctx) -> None:
    tensors = ctx.arg(0, "tensors")
    all_lays = ctx.lay(0, "tensors")
    out = ctx.out
    dim = shapes.norm_dim(ctx.arg(1, "dim", 0), out.ndim)
    result = []
    for d in range(out.ndim):
        if d == dim:
            result.append(ctx.concat([(t.shape[d], lay[d]) for t, lay in zip(tensors, all_lays)]))
        else:
            result.append(ctx.unify(*[lay[d] for lay in all_lays], why="concatenated tensors"))
    ctx.set(tuple(result))


def stack_couple(ctx) -> None:
    all_lays = ctx.lay(0, "tensors")
    out = ctx.out
    dim = shapes.norm_dim(ctx.arg(1, "dim", 0), out.ndim)
    merged = [
        ctx.unify(*[lay[d] for lay in all_lays], why="stacked tensors") for d in range(out.ndim - 1)
    ]
    ctx.set(tuple(merged[:dim] + [None] + merged[dim:]))


def split_couple(ctx) -> None:
    """chunk / split / unbind. Along a channel dim, the pieces are parts of the channels: the
    channels are cut at the split's boundaries (a concatenation is already cut there; one
    layer's output is cut into parts that shrink on their own), sizes given as a list are
    rewritten, and equal chunks must keep the same channels (a GLU's halves multiply). Where the
    channels cannot be cut there (a repeated or blocked layout), they freeze."""
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    if ctx.node.target in ("unbind", torch.unbind):
        dim = shapes.norm_dim(ctx.arg(1, "dim", 0), x.ndim)
        ctx.sink(lays[dim], why="unbind along the channel dim")
        lays_out = tuple(lays[:dim]) + tuple(lays[dim + 1 :])
        return ctx.set(tuple(lays_out for _ in out))
    dim = shapes.norm_dim(ctx.arg(2, "dim", 0), x.ndim)
    sizes_out = [o.shape[dim] for o in out]
    entry = ctx.cut(lays[dim], itertools.accumulate(sizes_out))
    pieces = split_layout(entry, sizes_out) if isinstance(entry, Layout) else None
    sizes = ctx.node.args[1] if len(ctx.node.args) > 1 else None
    if pieces is not None and isinstance(sizes, (list, tuple)):
        for i, (piece, size) in enumerate(zip(pieces, sizes)):
            pieces[i] = split_size(ctx, ("args", 1, i), size, piece)
    elif pieces is not None:  # equal chunks: every chunk keeps the same channels
        piece = ctx.unify(*pieces, why="equal chunks")
        if ctx.node.target in (torch.split, "split"):  # split(x, size): every piece's size
            pieces = [split_size(ctx, ("args", 1), sizes, piece)] * len(pieces)
    else:
        ctx.sink(lays[dim], why="split/chunk along the channel dim")
        pieces = [None] * len(out)
    ctx.set(tuple(tuple(p if d == dim else lays[d] for d in range(x.ndim)) for p in pieces))


def split_size(ctx, path, size, piece):
    """A split size: a literal is rewritten with the piece's width; a size read from a tensor
    (`x.shape[-1]`) counts the same channels as the piece at every width."""
    if isinstance(size, torch.fx.Node):
        return ctx.same_count(ctx.entry(size), piece, why="split size")
    if isinstance(size, int):
        ctx.rewrite(path, piece)
    return piece


def flatten_module_shape(ctx) -> TensorMeta:
    x, m = first_input(ctx), ctx.module
    s, e = shapes.norm_dim(m.start_dim, x.ndim), shapes.norm_dim(m.end_dim, x.ndim)
    return TensorMeta(x.shape[:s] + (math.prod(x.shape[s : e + 1]),) + x.shape[e + 1 :], x.dtype)
