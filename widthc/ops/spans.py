"""A channel dim that a reshape merges into a dim with others, or that it takes back out of one
(MobileViT's unfolding: (B, C, H, W) -> (B * C * n_h, p_h, n_w, p_w), and back to (B, C, N, P)).

Within one block of a reshape (widthc.shapes.reshape_blocks), a dim spans an interval of the
row-major positions: from the product of the sizes before it to that product times its size.
Where one dim's interval lies inside another's, its channels are that dim's positions each
repeated `inner` times and the whole repeated `outer` times (`Layout.repeat`, `Layout.tile`):
exact at the traced sizes, and the sizes given to the reshape (`B * C * n_h`, with C read from
the tensor) count the same channels at every width."""

from __future__ import annotations

import math

from widthc.ir import Layout, Segment

MAX_SEGMENTS = 64  # a layout repeated block-major keeps at most this many segments


def span(sizes: list[int], dims: tuple, d: int) -> tuple[int, int]:
    """(start, end) of dim `d`'s interval within its block `dims`, as products of sizes."""
    start = math.prod(sizes[k] for k in dims if k < d)
    return start, start * sizes[d]


def merged(entry: Layout, x_shape, src: tuple, out_shape, dst: tuple, d: int):
    """(dst dim, layout) where src dim `d` lies inside one dst dim, else None."""
    start, end = span(x_shape, src, d)
    for k in dst:
        lo, hi = span(out_shape, dst, k)
        if start % lo == 0 and hi % end == 0 and out_shape[k] > x_shape[d]:
            outer = start // lo
            if outer > 1 and len(entry.segments) * outer > MAX_SEGMENTS:
                return None
            return k, entry.repeat(hi // end).tile(outer)
    return None


def taken(entry: Layout, x_shape, src: tuple, out_shape, dst: tuple, d: int):
    """(dst dim, layout) where one dst dim lies inside src dim `d` and `entry` is that dim's
    layout repeated and tiled as `merged` lays it out, else None."""
    start, end = span(x_shape, src, d)
    for k in dst:
        lo, hi = span(out_shape, dst, k)
        if lo % start or end % hi or not 1 < out_shape[k] < x_shape[d]:
            continue
        outer, inner = lo // start, end // hi
        segs = entry.segments
        n = len(segs) // outer
        if len(segs) % outer or any(segs[i] != segs[i % n] for i in range(len(segs))):
            continue
        if any(s.inner % inner for s in segs[:n]):
            continue
        one = Layout(tuple(Segment(s.group, s.size, s.inner // inner, s.outer, s.blocks)
                           for s in segs[:n]))  # fmt: skip
        if one.size == out_shape[k]:
            return k, one
    return None


def split_layout(entry: Layout, sizes: list[int]) -> list[Layout] | None:
    """Cut a layout into consecutive pieces of the given sizes, on segment boundaries only."""
    pieces, segs = [], list(entry.segments)
    for size in sizes:
        take, total = [], 0
        while segs and total < size:
            total += segs[0].width
            take.append(segs.pop(0))
        if total != size or not take:
            return None
        pieces.append(Layout(tuple(take)))
    return pieces if not segs else None
