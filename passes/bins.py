"""FLOPs sensitivity and FLOPs-sensitive bins (paper §3.2–3.3, DESIGN §5).

Sensitivity of a group (eq. 7, for any graph): the FLOPs that one more channel of the group
adds with every other group at full width. Bin size (eq. 9): `b = max(1, round(beta * max_eps /
eps))`, so that every bin costs about the same FLOPs; the last bin takes the remainder.
Multi-stage search (eq. 10): the budget decays linearly to the target, beta shrinks by alpha.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from widthc.ir import ChannelGroup
from widthc.passes.flops import CostTable


def sensitivity(groups: list[ChannelGroup], flops: CostTable) -> list[float]:
    """FLOPs of the last channel of each group (of each block, for a blocked group), all
    other groups at full width."""
    full = np.array([g.block_size for g in groups], dtype=np.float64)
    return [float(e) for e in flops.last_channel(full)]


def bin_size(eps: float, max_eps: float, beta: float, n: int, multiple: int = 1) -> int:
    """eq. 9, rounded to a multiple of `multiple` channels (at least one multiple), at most n."""
    if eps <= 0:
        return n
    size = max(1.0, beta * max_eps / eps)
    return int(min(n, max(multiple, round(size / multiple) * multiple)))


def split_bins(n: int, size: int) -> tuple[int, ...]:
    """`n` channels cut into bins of `size`; the last bin takes the remainder."""
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def binned(
    groups: list[ChannelGroup], beta: float, align: int = 1, uniform: int | None = None
) -> list[ChannelGroup]:
    """The groups with their bins for `beta` (new values; the groups given are not changed).
    A frozen group is one bin.

    `align`: every bin boundary falls on a multiple of this many channels (8 suits the
    vectorised kernels of CPUs and GPUs); for a group in blocks, per block, so that the whole
    group keeps a multiple of `align`; for a group of heads, in whole heads. `uniform=K`: instead of FLOPs-sensitive bins, every
    searchable group in K bins of equal channel count (the baseline of the paper's A.7).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if align < 1:
        raise ValueError(f"align must be 1 or more, got {align}")
    # eq. 9 is per channel: a group of attention heads counts heads of `unit` channels each,
    # so its channels' sensitivity sets the scale (a head is at least one bin of its own)
    eps = [g.sensitivity / g.unit for g in groups if g.searchable]
    max_eps = max(eps, default=0.0)
    out = []
    for g in groups:
        n = g.block_size
        if not g.searchable or max_eps <= 0:
            bins = (n,)
        elif uniform is not None:
            multiple = _multiple(g, align)
            size = max(multiple, math.ceil(n / uniform / multiple) * multiple)
            bins = split_bins(n, min(size, n))
        else:
            multiple = _multiple(g, align)
            bins = split_bins(n, bin_size(g.sensitivity, max_eps, beta, n, multiple))
        out.append(dataclasses.replace(g, bins=bins))
    return out


def _multiple(g: ChannelGroup, align: int) -> int:
    """The counted units (channels, or heads of `unit` channels) a bin boundary of `g` falls on
    a multiple of, so that the group keeps a multiple of `align` channels: per block of a
    grouped conv; a head of 64 channels is aligned to 8 already."""
    return align // math.gcd(align, g.blocks * g.unit)


def stage_schedule(
    full_flops: float, target: float, stages: int, beta: float = 1.0, alpha: float = 2.0
) -> list[tuple[float, float]]:
    """(budget, beta) of each stage t = 1..T: eq. 10's linear budget decay and beta / alpha."""
    if stages < 1:
        raise ValueError("stages must be at least 1")
    out = []
    for t in range(1, stages + 1):
        budget = full_flops - (full_flops - target) * t / stages
        out.append((budget, beta / alpha ** (t - 1)))
    return out


def n_widths(groups: list[ChannelGroup]) -> float:
    """Size of the width search space (number of distinct per-group bin counts), as log10. A
    group of one bin is fixed by its bins and adds nothing."""
    return sum(math.log10(len(g.bins)) for g in groups if g.searchable)


def fixed_by_bins(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Searchable groups with a single bin (eq. 9 gave a bin at least as wide as the group):
    they can never change, so they are not searchable in practice."""
    return [g for g in groups if g.searchable and len(g.bins) == 1]
