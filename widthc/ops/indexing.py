"""Rules of indexing: `x[...]` of a tensor or a structured value, and `x[...] = v`. A slice of a
channel dim is a part of its channels (like `split`); rows gathered by one index tensor keep
the other dims' channels; other indexing of a channel dim keeps it at full width."""

from __future__ import annotations

import torch

from widthc.ir import Layout, TensorMeta
from widthc.ops.common import set_field


def getitem_couple(ctx) -> None:
    src = ctx.arg(0)
    if not isinstance(src, TensorMeta):
        key = ctx.arg(1)
        if isinstance(key, (int, str)):
            return set_field(ctx, src, ctx.lay(0), key)
        return ctx.set(ctx.item_of(0, key))
    if gathered(ctx, src, ctx.node.args[1]):
        return None
    out = indexed(ctx, src, ctx.lay(0), ctx.node.args[1])
    if out is None:
        return ctx.barrier("advanced indexing")
    ctx.set(out)


def setitem_couple(ctx) -> None:
    """`x[key] = v` (and `x[key] += v`): v's channels are those of the region x[key]; a channel
    dim the key slices keeps its width (as in indexing)."""
    x, value = ctx.arg(0), ctx.arg(2)
    if not isinstance(x, TensorMeta):
        return ctx.barrier("item assignment into a structured value")
    region = indexed(ctx, x, ctx.lay(0), ctx.node.args[1])
    if region is None:
        return ctx.barrier("assignment through advanced indexing")
    if isinstance(value, TensorMeta):
        lays = ctx.lay(2)
        for d in range(value.ndim):  # broadcast: aligned on the right, equal sizes only
            j = d + len(region) - value.ndim
            if j >= 0 and value.shape[d] != 1:
                ctx.unify(region[j], lays[d], why="assigned values")
    ctx.set(None)


def indexed(ctx, src: TensorMeta, lays, idx) -> tuple | None:
    """The layouts of `src[idx]` (basic indexing: ints, slices, None, Ellipsis). A slice of a
    channel dim is a part of its channels (`sliced`); a channel dim that is indexed, or sliced
    where that cannot be followed, keeps its width. None for advanced indexing."""
    at = (lambda k: ("args", 1, k)) if isinstance(idx, tuple) else (lambda k: ("args", 1))
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, torch.fx.Node) or isinstance(i, (list, torch.Tensor)) for i in idx):
        return None
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out, d = [], 0
    for k, i in enumerate(idx):
        if i is Ellipsis:
            for _ in range(src.ndim - n_real):
                out.append(lays[d])
                d += 1
        elif i is None:
            out.append(None)
        elif isinstance(i, slice):
            # a slice that keeps everything keeps doing so once the dim shrinks
            full = (
                (i.start is None or i.start == 0)
                and (i.stop is None or (isinstance(i.stop, int) and i.stop >= src.shape[d]))
                and (i.step is None or i.step == 1)
            )
            part = lays[d] if full else sliced(ctx, lays[d], i, src.shape[d], at(k))
            if part is None:
                ctx.sink(lays[d], why="slicing along the channel dim")
            out.append(part)
            d += 1
        else:  # an int: the dim disappears
            ctx.sink(lays[d], why="indexing along the channel dim")
            d += 1
    out.extend(lays[d:])
    return tuple(out)


def sliced(ctx, entry, i: slice, size: int, path: tuple) -> Layout | None:
    """`x[..., a:b]` of channels: the channels from a to b, cut from the others (the parts of a
    fused projection, `qkv[..., :q]`, shrink on their own). A literal bound is rewritten with
    the width before it; a bound read from a size (`x.shape[-1] // 2`) counts the channels
    before it. None where that cannot be (a negative bound, a step, a repeated layout)."""
    if i.step not in (None, 1) or not isinstance(ctx.resolve(entry), Layout):
        return None
    ends = []
    for raw, default in ((i.start, 0), (i.stop, size)):
        value = default if raw is None else ctx.value(raw)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        ends.append(min(value, size))
    (a, b), raws = ends, (i.start, i.stop)
    cut = ctx.cut(entry, [a, b]) if a < b else None
    if cut is None:
        return None
    for name, raw, end in zip(("start", "stop"), raws, ends):
        before = span(cut, 0, end)
        if before is None or raw is None:
            continue
        if isinstance(raw, torch.fx.Node):
            if ctx.resolve(ctx.entry(raw)) is None:
                ctx.sink(before, why="slice bound read from the size of a fixed-width dim")
            else:
                ctx.same_count(ctx.entry(raw), before, why="slice bound")
        else:
            ctx.rewrite((*path, name), before)
    return span(cut, a, b)


def span(layout: Layout, a: int, b: int) -> Layout | None:
    """The segments of `layout` between positions a and b (segment boundaries), or None."""
    segments, start = [], 0
    for s in layout.segments:
        if a <= start and start + s.width <= b:
            segments.append(s)
        start += s.width
    return Layout(tuple(segments)) if segments else None


def gathered(ctx, src: TensorMeta, key) -> bool:
    """`table[index]`, `biases[:, index]`: one integer tensor indexes one dim, the others taken
    whole (a relative position bias read at every pair of positions). The indexed dim is
    addressed, so it keeps its width; the index's dims take its place; every other dim keeps
    its channels (one column per head). False for any other key."""
    key = key if isinstance(key, tuple) else (key,)
    tensors = [i for i, k in enumerate(key) if isinstance(k, torch.fx.Node)]
    whole = all(
        k == slice(None) for i, k in enumerate(key) if i not in tensors and k is not Ellipsis
    )
    if len(tensors) != 1 or not whole or key.count(Ellipsis) > 1:
        return False
    (at,) = tensors
    index = ctx.value(key[at])
    if not isinstance(index, TensorMeta) or index.dtype.is_floating_point:
        return False
    if index.dtype == torch.bool:
        return False
    lays, lay_index = ctx.lay(0), entries_at(ctx, key[at], index)
    dim = at if Ellipsis not in key[:at] else src.ndim - (len(key) - at)
    ctx.sink(lays[dim], why="rows addressed by an index")
    for e in lay_index:
        ctx.sink(e, why="an index")
    ctx.set((*lays[:dim], *(None,) * index.ndim, *lays[dim + 1 :]))
    return True


def entries_at(ctx, node, meta: TensorMeta):
    """The entries of a tensor node given inside another argument (a key's index tensor)."""
    e = ctx.entry(node)
    return e if isinstance(e, tuple) and len(e) == meta.ndim else (None,) * meta.ndim
