"""The width search space: widths as integer arrays, budgets, repair, and candidates.

A *width* is, for every searchable group, the number `k` of active bins (DESIGN §5). Inside a
search a width is a row of an integer array (one column per searchable group, in group-id
order), so that thousands of widths are costed in one numpy call; a `WidthChoice` is the same
width as a value that enters or leaves the program (validated there, never in inner loops).
Bins are a value: a `WidthSpace` is built from one binning and never changes; every width it
makes is stamped with that binning's key, and a program refuses a width counted in other bins.

Budgets (widthc.budgets, re-exported here) meet the space through one number per width, its
load: `uniform(space, budget.load, 1.0)`, `repair(...)`, `random(...)` take any cost function
and its budget.

A width's candidates are its locally free sub-networks: for a group with `k` of `n` bins and
offset `r`, `cf = min(r + 1, k)` free bins chosen from the zone `[k - cf, min(k + r, n))` after
the `k - cf` base bins; candidate `j` takes, in every group, the `j`-th pattern (lexicographic,
modulo the group's number of patterns). Bins within a group are equal but for a smaller last
one, so the left-most pattern keeps the most channels: a width's FLOPs are those of its
left-most pattern, an upper bound for every candidate's.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import numpy as np

from widthc.budgets import (
    KINDS,
    Budget,
    Limit,
    budget_label,
    budget_specs,
    human,
    parse_budget,
    parse_budgets,
)
from widthc.errors import WidthcError
from widthc.ir import ChannelGroup, GroupWidth, WidthChoice

__all__ = [
    "KINDS",
    "Budget",
    "FlopsMany",
    "Limit",
    "WidthSpace",
    "at_ratio",
    "binning_key",
    "budget_label",
    "budget_specs",
    "candidates",
    "check_budget",
    "human",
    "in_band",
    "parse_budget",
    "parse_budgets",
    "patterns",
    "random",
    "repair",
    "uniform",
]

FlopsMany = Callable[[np.ndarray], np.ndarray]  # widths [B, S] -> FLOPs (or any cost) [B]


class WidthSpace:
    """The searchable groups of one binning: ids, bin counts, and channels per bin count."""

    def __init__(self, groups: list[ChannelGroup]):
        searchable = [g for g in groups if g.searchable]
        self.n_groups = len(groups)
        self.ids = np.array([g.id for g in searchable], dtype=np.int64)
        self.n_bins = np.array([len(g.bins) for g in searchable], dtype=np.int64)
        self.block_sizes = np.array([g.block_size for g in groups], dtype=np.float64)
        width = int(self.n_bins.max(initial=1)) + 1
        # channels[i, k]: channels per block that k left-most bins of group ids[i] keep
        self.channels = np.zeros((len(searchable), width))
        for i, g in enumerate(searchable):
            cum = np.cumsum(g.bins)
            self.channels[i, 1 : len(cum) + 1] = cum
            self.channels[i, len(cum) + 1 :] = cum[-1]
        self.key = binning_key(groups)
        self._rows = np.arange(len(searchable))

    @property
    def size(self) -> int:
        return len(self.ids)

    def full(self) -> np.ndarray:
        return self.n_bins.copy()

    def smallest(self) -> np.ndarray:
        return np.ones_like(self.n_bins)

    def searchable_counts(self, widths: np.ndarray) -> np.ndarray:
        """Channels kept per block in the searchable groups ([B, S], in `ids` order)."""
        return self.channels[self._rows, np.atleast_2d(widths)]

    def counts(self, widths: np.ndarray) -> np.ndarray:
        """Channels kept per block in every group ([B, n_groups]; frozen groups at full width)."""
        widths = np.atleast_2d(widths)
        out = np.broadcast_to(self.block_sizes, (len(widths), self.n_groups)).copy()
        out[:, self.ids] = self.channels[self._rows, widths]
        return out

    def choice(self, width) -> WidthChoice:
        """The width as a value (left-most pattern), stamped with this binning."""
        return WidthChoice.of(
            {int(g): int(k) for g, k in zip(self.ids, np.asarray(width))}, binning=self.key
        )

    def array(self, choice: WidthChoice) -> np.ndarray:
        """The bin counts of `choice` (groups it does not name at full width)."""
        out = self.full()
        index = {int(g): i for i, g in enumerate(self.ids)}
        for gid, w in choice.widths:
            out[index[gid]] = w.k
        return out

    def log10_size(self) -> float:
        """log10 of the number of distinct widths (a group of one bin counts once: it is fixed
        by its bins)."""
        return float(np.log10(self.n_bins).sum())


def binning_key(groups: list[ChannelGroup]) -> str:
    """A short fingerprint of every group's bins: widths counted in other bins differ."""
    text = ";".join(f"{g.id}:{','.join(map(str, g.bins))}" for g in groups if g.searchable)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# --- widths that meet a budget ---------------------------------------------------------------------


def at_ratio(space: WidthSpace, ratios) -> np.ndarray:
    """For each ratio, every group keeps the number of bins whose channels come closest to that
    ratio of its channels ([R, S]; the first closest on a tie, so it grows with the ratio)."""
    ratios = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    target = ratios[:, None, None] * space.block_sizes[space.ids][None, :, None]
    cum = space.channels[None, :, 1:]  # [1, S, max bins]
    dist = np.abs(cum - target)
    dist = np.where(np.arange(cum.shape[2]) < space.n_bins[:, None], dist, np.inf)
    return dist.argmin(axis=2) + 1


def uniform(space: WidthSpace, flops_many: FlopsMany, budget: float) -> np.ndarray:
    """The largest same-ratio width whose FLOPs meet `budget` (the search's baseline)."""
    check_budget(space, flops_many, budget)
    if flops_many(space.full()[None])[0] <= budget:
        return space.full()
    grid = np.linspace(0.0, 1.0, 65)  # a coarse scan, then bisection in the last good interval
    ok = flops_many(at_ratio(space, grid)) <= budget
    i = int(np.flatnonzero(ok).max(initial=0))
    lo, hi = grid[i], grid[min(i + 1, len(grid) - 1)]
    for _ in range(30):
        mid = (lo + hi) / 2
        if flops_many(at_ratio(space, mid))[0] <= budget:
            lo = mid
        else:
            hi = mid
    best = at_ratio(space, lo)[0]
    if flops_many(best[None])[0] > budget:  # the rounding of ratio 0 can still be over
        best = space.smallest()
    return best


def random(
    space: WidthSpace, flops_many: FlopsMany, rng: np.random.Generator, budget: float | None = None
) -> np.ndarray:
    """A width drawn uniformly over bins; under `budget`, repaired to meet it and filled up."""
    width = rng.integers(1, space.n_bins + 1)
    if budget is None:
        return width
    return repair(space, flops_many, width, budget, rng)


def repair(
    space: WidthSpace,
    flops_many: FlopsMany,
    width: np.ndarray,
    budget: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Move `width` to the budget in a few vectorised steps: if it is over, scale its bins
    above one down together (keeping its shape) to the largest scale that meets the budget;
    then grow random groups by a bin each, many at once, until no single bin fits any more.
    The result meets the budget and is maximal (every group at full width or one bin over)."""
    width = np.asarray(width, dtype=np.int64).copy()
    if flops_many(width[None])[0] > budget:
        scales = np.linspace(0.0, 1.0, 33)
        rows = 1 + np.floor((width - 1)[None, :] * scales[:, None]).astype(np.int64)
        ok = np.flatnonzero(flops_many(rows) <= budget)
        if not len(ok):
            return space.smallest()  # only when the budget is below the smallest width
        width = rows[ok.max()]
    while True:
        growable = np.flatnonzero(width < space.n_bins)
        if not len(growable):
            return width
        rows = np.repeat(width[None], len(growable) + 1, axis=0)
        rows[np.arange(1, len(growable) + 1), growable] += 1
        costs = flops_many(rows)
        base, grown = costs[0], costs[1:]
        fits = np.flatnonzero(grown <= budget)
        if not len(fits):
            return width
        order = rng.permutation(fits)
        # costs are not additive (coupled groups multiply): take the prefix the single-bin
        # increments say fits, halve it until it does
        n = max(1, int(np.searchsorted(np.cumsum(grown[order] - base), budget - base, "right")))
        while True:
            trial = width.copy()
            trial[growable[order[:n]]] += 1
            if n == 1 or flops_many(trial[None])[0] <= budget:
                break
            n //= 2
        width = trial


def in_band(flops: np.ndarray, budget: float, band: tuple[float, float]) -> np.ndarray:
    """Which FLOPs lie in [band[0], band[1]] * budget (and never above the budget)."""
    flops = np.asarray(flops)
    return (flops >= band[0] * budget) & (flops <= min(band[1], 1.0) * budget)


# --- candidates ----------------------------------------------------------------------------------


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
            widths[gid] = _canonical(w.k, pats[j % len(pats)])
        out.append(WidthChoice.of(widths, binning=choice.binning))
    return out


def _canonical(k: int, free: tuple[int, ...]) -> GroupWidth:
    """Write a pattern with as few free bins as possible (a left-most pattern has none)."""
    active = sorted(set(range(k - len(free))) | set(free))
    base = 0
    while base < len(active) and active[base] == base:
        base += 1
    return GroupWidth(k, tuple(active[base:]))


# --- budgets (widthc.budgets: their kinds, values and texts) ---------------------------------------


def check_budget(space: WidthSpace, flops_many: FlopsMany, budget: float) -> None:
    lo, hi = flops_many(np.stack([space.smallest(), space.full()]))
    Budget.of_flops(flops_many, budget).check({"flops": (lo, hi, "")})
