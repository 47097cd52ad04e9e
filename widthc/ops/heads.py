"""Channels split into heads or into equal pieces by a reshape (widthc/ops/shape_ops.py)."""

from __future__ import annotations

import math

from widthc.ir import Layout
from widthc.ops.spans import split_layout


def heads_split(ctx, entry: Layout, sizes: list[int], dims: list[int], result: list) -> None:
    """Channels last split as (..., n, heads, head_dim): attention heads. The unit of width is a
    whole head (head_dim stays: the softmax scale and rotary embeddings depend on it); the
    leading dims are n equal pieces that keep the same heads (q, k and v of a fused qkv).
    Read the second way (`second_reading`), the first dim holds the heads and the others their
    positions (VOLO's outlook attention: (heads, k x k, k x k) weights of each head)."""
    n = math.prod(sizes[:-2])
    if n > 1 and ctx.second_reading():
        heads, at = ctx.coarsen(entry, math.prod(sizes[1:])), dims[0]
    else:
        piece = equal_pieces(ctx, entry, n) if n > 1 else entry
        heads, at = ctx.coarsen(piece, sizes[-1]) if piece is not None else None, dims[-2]
    if heads is None:
        return ctx.sink(entry, why="reshape splits the channel dim into heads it cannot follow")
    if n > 1:
        ctx.offer_second(entry)
    result[at] = heads


def equal_pieces(ctx, entry: Layout, n: int) -> Layout | None:
    """Channels cut into `n` equal consecutive pieces that keep the same channels (the heads
    of a split attention, the groups of a channel shuffle): one piece, or None."""
    size = entry.size // n
    cut = ctx.cut(entry, range(size, entry.size, size))
    pieces = split_layout(cut, [size] * n) if cut is not None else None
    if pieces is None or len({p.shape_key() for p in pieces}) != 1:
        return None
    return ctx.unify(*pieces, why="equal pieces")


def rows_split(ctx, entry: Layout, sizes: list[int], dims: list[int], result: list) -> bool:
    """Channels split as (n, m), rows first (EfficientViT's `reshape(B, -1, 3 * dim, H * W)`):
    n equal pieces that keep the same channels on the m dim (a channel shuffle's groups), or n
    heads of m positions on the n dim (the m dim keeps its width). Channels counted already in
    units that a row holds whole (a grouped conv's whole groups, one per q, k or v of a head)
    are heads; else pieces where they can be (read the second way: heads). False: neither
    can be followed."""
    n, m = sizes
    in_units = all(1 < s.inner and m % s.inner == 0 for s in entry.segments)
    pieces_first = not in_units and not ctx.second_reading()
    if pieces_first and (piece := equal_pieces(ctx, entry, n)) is not None:
        ctx.offer_second(entry)
        result[dims[1]] = piece
        return True
    heads = ctx.coarsen(entry, m)
    if heads is not None:
        result[dims[0]] = heads
    return heads is not None
