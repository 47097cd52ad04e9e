"""Rules of ops that move positions around the channels: shifted windows (torch.roll), tiles
(x.repeat), sliding windows (Tensor.unfold, nn.Unfold, F.fold), window partitions reversed and
patches merged (timm's and torchvision's no-trace functions)."""

from __future__ import annotations

import math

from widthc import shapes
from widthc.ir import Layout
from widthc.ops.common import shape_args
from widthc.ops.shape_ops import MAX_SEGMENTS


def roll_couple(ctx) -> None:
    """torch.roll(x, shifts, dims): positions along the rolled dims move (a shifted window), so
    channels there keep their width; every other dim keeps its channels. No dims: the
    flattened tensor rolls, every dim moves."""
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    dims = ctx.arg(2, "dims", None)
    dims = range(x.ndim) if dims in (None, ()) else (dims,) if isinstance(dims, int) else dims
    for d in {shapes.norm_dim(d, x.ndim) for d in dims}:
        ctx.sink(lays[d], why="roll along the channel dim")
        lays[d] = None
    ctx.set(tuple(lays))


def repeat_couple(ctx) -> None:
    """x.repeat(*sizes): new leading dims are fixed; a dim repeated once keeps its channels,
    one repeated r times holds them r times over, block-major (a tile)."""
    x, lays = ctx.arg(0), ctx.lay(0)
    sizes = [ctx.value(raw) for _, raw in shape_args(ctx, 1)]
    new = len(sizes) - x.ndim
    out = [None] * new
    for d, times in enumerate(sizes[new:]):
        entry = ctx.resolve(lays[d])
        if times == 1 or not isinstance(entry, Layout):
            out.append(lays[d] if times == 1 else None)
        elif len(entry.segments) * times <= MAX_SEGMENTS:
            out.append(entry.tile(times))
        else:
            ctx.sink(entry, why="repeat of a channel dim")
            out.append(None)
    ctx.set(tuple(out))


def sliding_couple(ctx) -> None:
    """x.unfold(dim, size, step): windows along `dim` (a new last dim of `size` positions); the
    channels of every other dim stay."""
    x, lays = ctx.arg(0), list(ctx.lay(0))
    d = shapes.norm_dim(ctx.arg(1, "dimension"), x.ndim)
    ctx.sink(lays[d], why="sliding windows along the channel dim")
    lays[d] = None
    ctx.set((*lays, None))


def im2col_couple(ctx) -> None:
    """nn.Unfold / F.unfold: (N, C, *spatial) -> (N, C x prod(kernel), L), each channel followed
    by its kernel positions (channel-major)."""
    lays = ctx.lay(0)
    kernel = ctx.module.kernel_size if ctx.module is not None else ctx.arg(1, "kernel_size")
    for e in lays[2:]:
        ctx.sink(e, why="sliding windows over the spatial dims")
    taps = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel ** (len(lays) - 2)
    c = ctx.resolve(lays[1])
    ctx.set((lays[0], c.repeat(taps) if isinstance(c, Layout) else None, None))


def col2im_couple(ctx) -> None:
    """F.fold / nn.Fold: (N, C x prod(kernel), L) -> (N, C, *output_size): the channels each
    followed by their kernel positions fold back into one."""
    lays = ctx.lay(0)
    kernel = ctx.module.kernel_size if ctx.module is not None else ctx.arg(2, "kernel_size")
    taps = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel**2
    c = ctx.resolve(lays[1])
    ctx.sink(lays[-1], why="sliding windows over the spatial dims")
    out = None
    if isinstance(c, Layout) and all(s.inner % taps == 0 for s in c.segments):
        out = ctx.unrepeat(c, taps)
    else:
        ctx.sink(c, why="fold of channels that are not each followed by their kernel positions")
    ctx.set((lays[0], out, *(None,) * (ctx.out.ndim - 2)))


def channel_moves(src: int, dst: int):
    """An op that rearranges everything but one channel dim (a window partition reversed, a
    position embedding resampled): channel dim `src` of the first input is dim `dst` of the
    output, every other dim keeps its width."""

    def rule(ctx) -> None:
        x, lays = ctx.arg(0), ctx.lay(0)
        c = shapes.norm_dim(src, x.ndim)
        for d in range(x.ndim):
            if d != c:
                ctx.sink(lays[d], why="rearranged with the other dims")
        out = [None] * ctx.out.ndim
        out[shapes.norm_dim(dst, ctx.out.ndim)] = lays[c]
        ctx.set(tuple(out))

    return rule


def patch_merging_couple(ctx) -> None:
    """torchvision's _patch_merging_pad(x): (..., H, W, C) -> (..., H/2, W/2, 4C), the four
    2x2 neighbours concatenated: the channels four times over, in the same order."""
    lays = ctx.lay(0)
    for e in lays[:-1]:
        ctx.sink(e, why="rearranged with the other dims")
    c = ctx.resolve(lays[-1])
    out = c.tile(4) if isinstance(c, Layout) else None
    ctx.set((*(None,) * (len(lays) - 1), out))


def repeat_interleave_couple(ctx) -> None:
    """x.repeat_interleave(r, dim): each position along `dim` r times in a row (channel-major
    for a channel dim, with a literal r); every other dim keeps its channels. No dim: the
    flattened tensor, every dim moves."""
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    dim, raw = ctx.arg(2, "dim", None), ctx.node.args[1] if len(ctx.node.args) > 1 else None
    if dim is None:
        for e in lays:
            ctx.sink(e, why="repeat_interleave of the flattened tensor")
        return ctx.set((None,))
    d = shapes.norm_dim(dim, x.ndim)
    entry = ctx.resolve(lays[d])
    if isinstance(entry, Layout) and isinstance(raw, int) and not isinstance(raw, bool):
        lays[d] = entry.repeat(raw)
    else:
        ctx.sink(lays[d], why="repeat_interleave along the channel dim")
        lays[d] = None
    ctx.set(tuple(lays))
