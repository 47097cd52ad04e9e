"""Channel atoms: the channel vectors the coupling pass creates, united in a union-find, and cut
into parts where the graph splits them.

An atom is the channels of one producer (a conv's output) or of one tensor dim. Where a rule
needs a boundary inside an atom (a split of a layer's output into unequal pieces, the halves of
a GLU, a concatenation added to a single layer's output), the atom is *refined*: cut into
consecutive parts, each an atom of its own. Every atom united with it is cut alike and the
corresponding parts are united, so atoms of one class always have the same boundaries. A
refined atom stands for the concatenation of its parts wherever it appears (`expand`); only
unrefined atoms (leaves) become channel groups. An atom that must shrink in equal blocks (a
grouped conv) is never cut. A `ParamVar` is a weight dim whose atom is not decided yet.

An atom can also be *coarsened*: its channels shrink only in whole units of `u` consecutive
channels (the heads of a (heads, head_dim) view, the query heads that share one key/value head).
It is then refined into one part of `n / u` units that stands for the atom with every unit
repeated `u` times (`inner`), so that every layout of it reads in units from then on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from networkx.utils import UnionFind

from widthc.errors import Reason
from widthc.ir import Layout, Segment

NETWORK_OUTPUT = "output of the network"  # the reason of the channels the network returns


@dataclass(frozen=True)
class ParamVar:
    """Dim `dim` of parameter or buffer `target`, channels not decided yet."""

    target: str
    dim: int
    size: int


class Atoms:
    def __init__(self):
        self.uf = UnionFind()
        self.atom_size: list[int] = []
        self.producer: dict[int, str] = {}
        self.frozen: dict[int, list[Reason]] = defaultdict(list)
        self.mixing: dict[int, list[str]] = defaultdict(list)
        self.ordered: dict[int, list[str]] = defaultdict(list)  # mixing that reads positions
        self.blocks: dict[int, int] = {}  # atom -> number of equal blocks it must shrink by
        # atom -> layers that could read its channels a second way (a grouped conv: whole
        # groups; a reshape: heads rather than equal pieces), should they end frozen
        self.second: dict[int, list[str]] = defaultdict(list)
        self.parts: dict[int, tuple[int, ...]] = {}  # refined atom -> its consecutive parts
        self.unit: dict[int, int] = {}  # part of a coarsened atom -> channels of it per unit
        self._class: dict[int, list[int]] = {}  # union-find root -> the leaves of its class

    def new_atom(self, size: int, producer: str | None = None) -> Layout:
        a = len(self.atom_size)
        self.atom_size.append(size)
        self.uf[a]  # noqa: B018 - registers the atom
        self._class[a] = [a]
        if producer is not None:
            self.producer[a] = producer
        return Layout((Segment(a, size, 1),))

    def leaves(self) -> list[int]:
        """Unrefined atoms, in order of creation, a refined atom's parts at its place."""
        out: list[int] = []
        stack = list(range(len(self.atom_size) - 1, -1, -1))
        seen: set[int] = set()
        while stack:
            a = stack.pop()
            if a in seen:
                continue
            seen.add(a)
            if a in self.parts:
                stack.extend(reversed(self.parts[a]))
            else:
                out.append(a)
        return out

    # --- refinement ----------------------------------------------------------------------------

    def expand(self, layout: Layout) -> Layout:
        """The layout with every refined atom replaced by its parts."""
        if not any(s.group in self.parts for s in layout.segments):
            return layout
        return Layout(tuple(x for s in layout.segments for x in self._expand(s)))

    def _expand(self, s: Segment) -> list[Segment]:
        if s.group not in self.parts:
            return [s]
        one = [
            x
            for p in self.parts[s.group]
            for x in self._expand(Segment(p, self.atom_size[p], s.inner * self.unit.get(p, 1)))
        ]
        return one * s.outer

    def cut(self, layout: Layout, positions) -> Layout | None:
        """Refine atoms so that every position (along the dim) is a segment boundary; the
        expanded layout, or None where a boundary falls inside a repeated or blocked atom."""
        layout, positions = self.expand(layout), sorted(set(positions))
        cuts: dict[int, set[int]] = defaultdict(set)
        start = 0
        for s in layout.segments:
            for p in positions:
                if start < p < start + s.width:
                    if s.outer != 1 or s.blocks != 1 or (p - start) % s.inner:
                        return None
                    cuts[s.group].add((p - start) // s.inner)
            start += s.width
        for atom, at in cuts.items():
            if not self._refine(atom, at):
                return None
        return self.expand(layout)

    def _refine(self, a: int, cuts) -> bool:
        """Cut leaf `a` and every leaf of its class at `cuts`; corresponding parts unite."""
        if a in self.parts:  # refined meanwhile (a class mate was cut): push into the parts
            start, ok = 0, True
            for p in self.parts[a]:
                unit = self.unit.get(p, 1)
                size = self.atom_size[p] * unit
                inside = [c - start for c in cuts if start < c < start + size]
                ok = ok and all(c % unit == 0 for c in inside)  # never inside a unit
                ok = ok and self._refine(p, {c // unit for c in inside})
                start += size
            return ok
        cuts = sorted(c for c in cuts if 0 < c < self.atom_size[a])
        if not cuts:
            return True
        members = self._class.pop(self.uf[a])
        if any(m in self.blocks for m in members):
            self._class[self.uf[a]] = members
            return False
        sizes = [e - s for s, e in zip([0, *cuts], [*cuts, self.atom_size[a]])]
        first = None
        for m in members:
            parts = tuple(self.new_atom(n, self.producer.get(m)).groups[0] for n in sizes)
            for p in parts:
                self.frozen[p] = list(self.frozen[m])
                self.mixing[p] = list(self.mixing[m])
                self.ordered[p] = list(self.ordered[m])
            self.parts[m] = parts
            if first is None:
                first = parts
            else:
                for p, q in zip(first, parts):
                    self._unite(p, q)
        return True

    def coarsen(self, layout: Layout, unit: int) -> Layout | None:
        """The layout counted in units of `unit` consecutive positions (a unit: one head of
        `unit` channels): atoms are coarsened so that they shrink in whole units only. None
        where a unit would straddle two segments or a repeated or blocked atom."""
        out, todo = [], list(self.expand(layout).segments)
        while todo:
            s = todo.pop(0)
            if s.group in self.parts:  # coarsened meanwhile (a class mate came first)
                todo[:0] = self._expand(s)
                continue
            if s.inner % unit == 0:  # already in units (or coarser)
                out.append(Segment(s.group, s.size, s.inner // unit, s.outer, s.blocks))
                continue
            factor = unit // s.inner
            if unit % s.inner or s.size % factor or s.outer != 1 or s.blocks != 1:
                return None
            part = self._coarsen(s.group, factor)
            if part is None:
                return None
            out.append(Segment(part, s.size // factor, 1))
        return Layout(tuple(out))

    def _coarsen(self, a: int, factor: int) -> int | None:
        """Coarsen leaf `a` and every leaf of its class by `factor`: returns `a`'s part."""
        members = self._class.pop(self.uf[a])
        if any(m in self.blocks for m in members):
            self._class[self.uf[a]] = members
            return None
        first = None
        for m in members:
            (p,) = self.new_atom(self.atom_size[m] // factor, self.producer.get(m)).groups
            self.frozen[p] = list(self.frozen[m])
            self.mixing[p] = list(self.mixing[m])
            self.unit[p] = factor
            self.parts[m] = (p,)
            if first is None:
                first = p
            else:
                self._unite(first, p)
        return self.parts[a][0]

    def count_form(self, layout: Layout) -> dict[int, int] | None:
        """The width of the layout as a linear form: class -> channels per kept channel of it
        (None for blocked segments, whose counts are per block)."""
        form: dict[int, int] = defaultdict(int)
        for s in self.expand(layout).segments:
            if s.blocks != 1:
                return None
            form[self.uf[s.group]] += s.inner * s.outer
        return dict(form)

    def second_wanted(self) -> set[str]:
        """Layers with a second reading of channels that ended frozen, other than at the
        network's outputs (no reading changes those)."""
        return {x for a, layers in self.second.items() if self._ends_frozen(a) for x in layers}

    def _ends_frozen(self, a: int) -> bool:
        for s in self.expand(Layout((Segment(a, self.atom_size[a]),))).segments:
            for m in self._class.get(self.uf[s.group], (s.group,)):
                if any(r.why != NETWORK_OUTPUT for r in self.frozen.get(m, ())):
                    return True
        return False

    # --- union ---------------------------------------------------------------------------------

    def unite_layouts(self, a: Layout, b: Layout) -> bool:
        """Make two layouts of one dim keep the same channels: cut atoms until their segment
        boundaries agree, then unite segment by segment. False where they cannot agree."""
        a, b = self.expand(a), self.expand(b)
        if a.size != b.size:
            return False
        if a.shape_key() != b.shape_key() and self._match_units(a, b):
            a, b = self.expand(a), self.expand(b)
        if a.shape_key() != b.shape_key():
            if not _alike(a, b) or self.cut(a, _ends(b)) is None or self.cut(b, _ends(a)) is None:
                return False
            a, b = self.expand(a), self.expand(b)
            if a.shape_key() != b.shape_key():
                return False
        for sa, sb in zip(a.segments, b.segments):
            self._unite(sa.group, sb.group)
        return True

    def _unite(self, a: int, b: int) -> None:
        ra, rb = self.uf[a], self.uf[b]
        if ra == rb:
            return
        self.uf.union(ra, rb)
        root = self.uf[ra]
        self._class[root] = self._class.pop(ra) + self._class.pop(rb)

    def _match_units(self, a: Layout, b: Layout) -> bool:
        """Where two segments cover the same positions, repeat alike, but one in units of
        several of the other's positions (query heads against the key/value head they share),
        coarsen the finer one. True when anything changed."""
        spans = {(start, end): s for start, end, s in _segments(b)}
        changed = False
        for start, end, sa in _segments(a):
            sb = spans.get((start, end))
            if sb is None or sa.inner == sb.inner:
                continue
            fine, coarse = (sa, sb) if sa.inner < sb.inner else (sb, sa)
            if (fine.outer, fine.blocks) != (coarse.outer, coarse.blocks):
                continue
            if coarse.inner % fine.inner == 0:
                one = Layout((Segment(fine.group, fine.size, fine.inner),))
                changed = self.coarsen(one, coarse.inner) is not None or changed
        return changed


def _segments(layout: Layout) -> list[tuple[int, int, Segment]]:
    out, start = [], 0
    for s in layout.segments:
        out.append((start, start + s.width, s))
        start += s.width
    return out


def _ends(layout: Layout) -> set[int]:
    """Positions where the layout's segments end."""
    out, end = set(), 0
    for s in layout.segments:
        end += s.width
        out.add(end)
    return out


def _alike(a: Layout, b: Layout) -> bool:
    """Overlapping segments repeat their channels alike (else no cut can align them, and
    cutting would only split atoms for nothing)."""
    sa, sb, i, j = _spans(a), _spans(b), 0, 0
    while i < len(sa) and j < len(sb):
        (start_a, end_a, key_a), (start_b, end_b, key_b) = sa[i], sb[j]
        if start_a < end_b and start_b < end_a and key_a != key_b:
            return False
        i, j = (i + 1, j) if end_a <= end_b else (i, j + 1)
    return True


def _spans(layout: Layout) -> list[tuple[int, int, tuple[int, int, int]]]:
    """(start, end, how the channels repeat) of every segment."""
    out, start = [], 0
    for s in layout.segments:
        out.append((start, start + s.width, (s.inner, s.outer, s.blocks)))
        start += s.width
    return out
