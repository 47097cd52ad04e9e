"""Candidate sub-networks of one width (widthc/space.py) checked against DESIGN §6, written
out independently here: for k of n bins and offset r, cf = min(r+1, k) free bins chosen from the
zone [k-cf, min(k+r, n)) after the base bins [0, k-cf); candidate j takes, in every group, the
j-th pattern (lexicographic, modulo that group's count)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from widthc.ir import ChannelGroup, GroupWidth, WidthChoice
from widthc.space import candidates


def _group(gid: int, n_bins: int) -> ChannelGroup:
    return ChannelGroup(id=gid, n=2 * n_bins, bins=(2,) * n_bins)


def _expected_count(n: int, k: int, r: int) -> int:
    cf = min(r + 1, k)
    zone = min(k + r, n) - (k - cf)
    return math.comb(zone, cf)


@st.composite
def _width(draw, max_bins: int = 12):
    n = draw(st.integers(1, max_bins))
    k = draw(st.integers(1, n))
    return n, k


@settings(max_examples=300, deadline=None)
@given(nk=_width(), r=st.integers(0, 4))
def test_one_group_matches_design(nk, r):
    n, k = nk
    group = _group(0, n)
    cands = candidates([group], WidthChoice.of({0: k}), offset=r)
    cf = min(r + 1, k)
    base = set(range(k - cf))
    zone = set(range(k - cf, min(k + r, n)))

    assert len(cands) == _expected_count(n, k, r)
    assert cands[0].active_bins(group) == tuple(range(k))  # left-most first
    seen = set()
    for c in cands:
        active = set(c.active_bins(group))
        assert len(active) == k and c.width(0).k == k
        assert base <= active  # every base bin is kept
        assert active - base <= zone and len(active - base) == cf  # free bins inside the zone
        assert len(c.indices(group)) == 2 * k  # k bins of 2 channels
        seen.add(frozenset(active))
    assert len(seen) == len(cands)  # no duplicates
    if k + r <= n and k >= r + 1:  # zone not clipped: the paper's C(2r+1, r+1)
        assert len(cands) == math.comb(2 * r + 1, r + 1)
    if r == 0 or k == n:
        assert len(cands) == 1


@settings(max_examples=150, deadline=None)
@given(widths=st.lists(_width(), min_size=1, max_size=4), r=st.integers(0, 3))
def test_groups_share_the_candidate_index(widths, r):
    groups = [_group(i, n) for i, (n, _) in enumerate(widths)]
    choice = WidthChoice.of({i: k for i, (_, k) in enumerate(widths)})
    cands = candidates(groups, choice, offset=r)
    per_group = [
        [c.active_bins(g) for c in candidates([g], WidthChoice.of({g.id: k}), offset=r)]
        for g, (_, k) in zip(groups, widths)
    ]
    assert len(cands) == max(len(p) for p in per_group)
    for j, c in enumerate(cands):
        for g, patterns in zip(groups, per_group):
            assert c.active_bins(g) == patterns[j % len(patterns)]


def test_paper_counts_for_unclipped_zones():
    group = _group(0, 20)
    for r, count in ((0, 1), (1, 3), (2, 10), (3, 35)):
        assert len(candidates([group], WidthChoice.of({0: 10}), offset=r)) == count


def test_free_bins_are_written_canonically():
    """A pattern that is left-most after all carries no free bins; others name theirs."""
    group = _group(0, 8)
    cands = candidates([group], WidthChoice.of({0: 4}), offset=1)
    assert [c.width(0) for c in cands] == [
        GroupWidth(4),
        GroupWidth(4, (4,)),  # bins 0-2 and 4: base [0, 3) and one free bin
        GroupWidth(4, (3, 4)),
    ]
