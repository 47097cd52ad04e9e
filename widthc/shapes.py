"""Shape arithmetic used by the op registry's shape formulas (pure functions on int tuples)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def ntuple(v, n: int) -> tuple:
    if isinstance(v, (tuple, list)):
        return tuple(v) if len(v) == n else tuple(v) * n if len(v) == 1 else tuple(v)
    return (v,) * n


def conv_out(
    size: Sequence[int], kernel, stride, padding, dilation, transposed=False, output_padding=0
) -> tuple[int, ...]:
    """Spatial output size of a (transposed) convolution."""
    n = len(size)
    k, s, d = ntuple(kernel, n), ntuple(stride, n), ntuple(dilation, n)
    if padding == "same":
        return tuple(size)
    p = (0,) * n if padding == "valid" else ntuple(padding, n)
    if transposed:
        op = ntuple(output_padding, n)
        return tuple(
            (size[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(n)
        )
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n))


def pool_out(size: Sequence[int], kernel, stride, padding, dilation=1, ceil_mode=False):
    """Spatial output size of max/avg pooling (PyTorch's rule, `ceil_mode` included)."""
    n = len(size)
    k = ntuple(kernel, n)
    s = ntuple(stride if stride not in (None, ()) else kernel, n)
    p, d = ntuple(padding, n), ntuple(dilation, n)
    out = []
    for i in range(n):
        span = size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1
        o = (math.ceil(span / s[i]) if ceil_mode else span // s[i]) + 1
        if ceil_mode and (o - 1) * s[i] >= size[i] + p[i]:
            o -= 1
        out.append(o)
    return tuple(out)


def adaptive_out(size: Sequence[int], output_size) -> tuple[int, ...]:
    n = len(size)
    o = ntuple(output_size, n)
    return tuple(size[i] if o[i] is None else o[i] for i in range(n))


def interpolate_out(size: Sequence[int], out_size, scale_factor) -> tuple[int, ...]:
    n = len(size)
    if out_size is not None:
        return ntuple(out_size, n)
    sf = ntuple(scale_factor, n)
    return tuple(int(math.floor(size[i] * sf[i])) for i in range(n))


def norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def reshape_blocks(src: Sequence[int], dst: Sequence[int]) -> list[tuple[tuple, tuple]] | None:
    """Pair runs of source dims with runs of target dims of equal product.

    Returns [(src_dims, dst_dims), ...] covering both shapes in order, each block as small as
    possible; size-1 dims are attached to the block on their left (or the first block).
    None if the shapes do not have the same number of elements.
    """
    if math.prod(src) != math.prod(dst):
        return None
    blocks, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        si, dj = [], []
        ps = pd = 1
        # take at least one non-empty dim on each side
        while i < len(src) and (not si or ps < pd or (ps == pd and src[i] == 1 and not dj)):
            ps *= src[i]
            si.append(i)
            i += 1
            if ps != 1:
                break
        while j < len(dst) and (not dj or pd < ps):
            pd *= dst[j]
            dj.append(j)
            j += 1
        while ps != pd:
            if ps < pd and i < len(src):
                ps *= src[i]
                si.append(i)
                i += 1
            elif pd < ps and j < len(dst):
                pd *= dst[j]
                dj.append(j)
                j += 1
            else:
                return None
        # absorb trailing size-1 dims on both sides into this block
        while i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            si.append(i)
            i += 1
        while j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            dj.append(j)
            j += 1
        blocks.append((tuple(si), tuple(dj)))
    return blocks
