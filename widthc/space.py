"""The width search space: full, uniform and random widths, budget repair, and candidates.

All functions work on bins (DESIGN §5–6) and take the FLOPs as a callable, so that the same code
serves `Program` and the searchers. A width's candidates are its locally free sub-networks:
for a group with `k` of `n` bins and offset `r`, `cf = min(r + 1, k)` free bins chosen from the
zone `[k - cf, min(k + r, n))` after the `k - cf` base bins; candidate `j` takes, in every group,
the `j`-th pattern (lexicographic, modulo the group's number of patterns).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from widthc.errors import WidthcError
from widthc.ir import ChannelGroup, GroupWidth, WidthChoice


def full(groups: list[ChannelGroup]) -> WidthChoice:
    return WidthChoice.of({g.id: len(g.bins) for g in groups if g.searchable})


def smallest(groups: list[ChannelGroup]) -> WidthChoice:
    return WidthChoice.of({g.id: 1 for g in groups if g.searchable})


def at_ratio(groups: list[ChannelGroup], ratio: float) -> WidthChoice:
    """Every searchable group keeps the number of bins closest to `ratio` of its channels."""
    widths = {}
    for g in groups:
        if g.searchable:
            cum = np.cumsum(g.bins)
            widths[g.id] = int(np.argmin(np.abs(cum - ratio * g.block_size))) + 1
    return WidthChoice.of(widths)


def uniform(groups, flops: Callable, budget: float | None = None, ratio: float | None = None):
    """Uniform width: a given ratio, or the largest ratio whose FLOPs meet `budget`."""
    if (budget is None) == (ratio is None):
        raise WidthcError("uniform() takes exactly one of flops= or ratio=")
    if ratio is not None:
        if not 0 < ratio <= 1:
            raise WidthcError(f"the width ratio must be in (0, 1], got {ratio}")
        return at_ratio(groups, ratio)
    check_budget(groups, flops, budget)
    lo, hi = 0.0, 1.0
    if flops(at_ratio(groups, hi)) <= budget:
        return at_ratio(groups, hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        if flops(at_ratio(groups, mid)) <= budget:
            lo = mid
        else:
            hi = mid
    best = at_ratio(groups, lo)
    if flops(best) > budget:  # the rounding of ratio 0 can still be over the budget
        best = smallest(groups)
    return best


def check_budget(groups, flops: Callable, budget: float) -> None:
    lo, hi = flops(smallest(groups)), flops(full(groups))
    if not lo <= budget <= hi * (1 + 1e-9):
        raise WidthcError(
            f"a FLOPs budget of {human(budget)} is out of reach: this model can be slimmed to "
            f"between {human(lo)} and {human(hi)} FLOPs"
        )


def random(groups, flops: Callable, seed: int, budget: float | None = None) -> WidthChoice:
    """A width drawn uniformly over bins; under `budget`, repaired to meet it and filled up."""
    rng = np.random.default_rng(seed)
    widths = {g.id: int(rng.integers(1, len(g.bins) + 1)) for g in groups if g.searchable}
    choice = WidthChoice.of(widths)
    if budget is not None:
        check_budget(groups, flops, budget)
        choice = repair(groups, flops, choice, budget, rng)
    return choice


def repair(groups, flops: Callable, choice: WidthChoice, budget: float, rng) -> WidthChoice:
    """Meet `budget`: shrink random groups until under it, then grow random groups while it
    stays met, so the result is as close to the budget as the bins allow."""
    n_bins = {g.id: len(g.bins) for g in groups if g.searchable}
    widths = {g: w.k for g, w in choice.widths}
    ids = sorted(n_bins)
    while flops(WidthChoice.of(widths)) > budget:
        shrinkable = [g for g in ids if widths[g] > 1]
        if not shrinkable:
            break
        g = shrinkable[int(rng.integers(len(shrinkable)))]
        widths[g] -= 1
    grew = True
    while grew:
        grew = False
        for g in rng.permutation(ids):
            g = int(g)
            if widths[g] < n_bins[g]:
                widths[g] += 1
                if flops(WidthChoice.of(widths)) <= budget:
                    grew = True
                else:
                    widths[g] -= 1
    return WidthChoice.of(widths)


def patterns(n_bins: int, k: int, offset: int) -> list[tuple[int, ...]]:
    """The free-bin patterns of one group, lexicographic; pattern 0 is the left-most."""
    if offset < 0:
        raise WidthcError(f"the offset r must be 0 or more, got {offset}")
    cf = min(offset + 1, k)
    zone = range(k - cf, min(k + offset, n_bins))
    return list(itertools.combinations(zone, cf))


def candidates(groups, choice: WidthChoice, offset: int = 1) -> list[WidthChoice]:
    """The sub-networks that represent one width (the set S_c of the paper's appendix A.1)."""
    by_id = {g.id: g for g in groups}
    per_group = {gid: patterns(len(by_id[gid].bins), w.k, offset) for gid, w in choice.widths}
    n = max((len(p) for p in per_group.values()), default=1)
    out = []
    for j in range(n):
        widths = {}
        for gid, w in choice.widths:
            pats = per_group[gid]
            free = pats[j % len(pats)]
            widths[gid] = _canonical(w.k, free)
        out.append(WidthChoice.of(widths))
    return out


def _canonical(k: int, free: tuple[int, ...]) -> GroupWidth:
    """Write a pattern with as few free bins as possible (a left-most pattern has none)."""
    active = sorted(set(range(k - len(free))) | set(free))
    base = 0
    while base < len(active) and active[base] == base:
        base += 1
    return GroupWidth(k, tuple(active[base:]))


def human(flops: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.4g}{unit}"
    return f"{flops:.4g}"
