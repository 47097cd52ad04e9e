"""The IR: tensor shapes, channel layouts, channel groups and width choices.

A *channel group* is a set of channels that must keep the same index set everywhere they appear
(DESIGN §3). A tensor dimension that carries searchable channels has a *layout*: the ordered
segments it is made of. Most layouts are one group; a concatenation is several groups one after
the other; a flatten repeats every channel `inner` times (channel-major). Layouts are what let
one function slice any weight, of any op, at the active channels of a choice.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from widthc.errors import Reason, WidthcError

__all__ = ["ChannelGroup", "GroupWidth", "Layout", "Segment", "TensorMeta", "WidthChoice"]


@dataclass(frozen=True)
class TensorMeta:
    """Shape and dtype of one tensor value in the traced graph."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Segment:
    """Channels of one group (or atom, during analysis) along a dimension.

    `size` positions, each repeated `inner` times (channel-major: a flatten, a depthwise channel
    multiplier), the whole repeated `outer` times (block-major: the blocks of a grouped conv).
    `blocks` is used during analysis only: the segment is one of that many equal blocks of its
    atom (the input channels of one group of a grouped conv).
    """

    group: int
    size: int
    inner: int = 1
    outer: int = 1
    blocks: int = 1

    @property
    def width(self) -> int:
        return self.size * self.inner * self.outer


@dataclass(frozen=True)
class Layout:
    """The channel structure of one tensor dimension: segments laid out one after another."""

    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(s.width for s in self.segments)

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(s.group for s in self.segments))

    def shape_key(self) -> tuple[tuple[int, ...], ...]:
        return tuple((s.size, s.inner, s.outer, s.blocks) for s in self.segments)

    def active_size(self, counts: Mapping[int, int]) -> int:
        """Width of this dimension when group `g` keeps `counts[g]` channels per block
        (default: all)."""
        return sum(counts.get(s.group, s.size) * s.inner * s.outer for s in self.segments)

    def indices(self, group_indices: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Positions along this dimension kept by a choice (`group_indices`: the kept channels
        of each group, within one block)."""
        parts, offset = [], 0
        for s in self.segments:
            idx = group_indices.get(s.group)
            if idx is None:
                idx = torch.arange(s.size)
            pos = idx * s.inner
            if s.inner > 1:
                pos = (pos[:, None] + torch.arange(s.inner)[None, :]).reshape(-1)
            if s.outer > 1:
                step = s.size * s.inner
                pos = (torch.arange(s.outer)[:, None] * step + pos[None, :]).reshape(-1)
            parts.append(pos + offset)
            offset += s.width
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def map_groups(self, f) -> Layout:
        return Layout(
            tuple(Segment(f(s.group), s.size, s.inner, s.outer, s.blocks) for s in self.segments)
        )

    def repeat(self, inner: int) -> Layout:
        """Every position repeated `inner` times, channel-major (flatten, depthwise multiplier)."""
        return Layout(
            tuple(
                Segment(s.group, s.size, s.inner * inner, s.outer, s.blocks) for s in self.segments
            )
        )

    def tile(self, outer: int) -> Layout:
        """The whole dim repeated `outer` times, block-major (a 2x2 patch merging's 4C): the
        segments one copy after another, as a concatenation of the copies lays them out."""
        return Layout(self.segments * outer)

    def to_json(self) -> list:
        return [[s.group, s.size, s.inner, s.outer] for s in self.segments]


@dataclass
class ChannelGroup:
    """Channels that share one index set. Searchable unless `frozen` holds a reason."""

    id: int
    n: int
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    frozen: tuple[Reason, ...] = ()
    mixing: tuple[str, ...] = ()  # nodes that mix channels (layer norm, softmax over channels)
    ordered: tuple[str, ...] = ()  # nodes whose result depends on the channels' order (argmax)
    sensitivity: float = 0.0
    bins: tuple[int, ...] = ()  # bin sizes within one block; the last bin takes the remainder
    blocks: int = 1  # grouped convs: the channels are `blocks` equal blocks that shrink alike
    # positions of its first producer's output per counted channel: head_dim for a group of
    # attention heads (then `n` counts heads), 1 for plain channels
    unit: int = 1
    width: int = 0  # positions it holds in its first producer's output (all pieces and heads)

    @property
    def searchable(self) -> bool:
        return not self.frozen

    @property
    def block_size(self) -> int:
        return self.n // self.blocks

    @property
    def heads(self) -> bool:
        """Its channels are whole attention heads (or runs of query heads sharing a key/value
        head): `n` counts those units of `unit` channels each."""
        return self.unit > 1

    @property
    def name(self) -> str:
        return self.producers[0] if self.producers else f"group{self.id}"

    def bin_starts(self) -> list[int]:
        return [0, *itertools.accumulate(self.bins)]

    def channels(self, active_bins: Iterable[int]) -> int:
        """Channels the active bins keep within one block."""
        return sum(self.bins[b] for b in active_bins)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "channels": self.n,
            "searchable": self.searchable,
            "frozen": [str(r) for r in self.frozen],
            "bins": list(self.bins),
            "blocks": self.blocks,
            "unit": self.unit,
            "width": self.width,
            "sensitivity": self.sensitivity,
            "producers": list(self.producers),
            "consumers": list(self.consumers),
            "members": list(self.members),
            "mixing": list(self.mixing),
            "ordered": list(self.ordered),
        }


@dataclass(frozen=True)
class GroupWidth:
    """Width of one group: `k` active bins, of which `free` (absolute bin indices) are free
    bins and the other `k - len(free)` are the base bins `[0, k - len(free))` (DESIGN §6)."""

    k: int
    free: tuple[int, ...] = ()

    @property
    def base(self) -> int:
        return self.k - len(self.free)

    def active_bins(self) -> tuple[int, ...]:
        return tuple(range(self.base)) + self.free


@dataclass(frozen=True)
class WidthChoice:
    """For every searchable group: its `GroupWidth`. Groups not listed keep their full width.

    `binning`: the key of the bins the widths are counted in (`widthc.space.binning_key`), set
    on every width a program makes; a program refuses a width of another binning. None (a width
    written by hand) is checked against the program's bins only."""

    widths: tuple[tuple[int, GroupWidth], ...] = field(default_factory=tuple)
    binning: str | None = None

    @staticmethod
    def of(widths: Mapping[int, GroupWidth | int], binning: str | None = None) -> WidthChoice:
        items = []
        for gid in sorted(widths):
            w = widths[gid]
            items.append((gid, w if isinstance(w, GroupWidth) else GroupWidth(int(w))))
        return WidthChoice(tuple(items), binning)

    def as_dict(self) -> dict[int, GroupWidth]:
        return dict(self.widths)

    def width(self, gid: int) -> GroupWidth | None:
        for g, w in self.widths:
            if g == gid:
                return w
        return None

    def ks(self) -> tuple[tuple[int, int], ...]:
        """The width without its pattern: what the search scores (max over patterns)."""
        return tuple((g, w.k) for g, w in self.widths)

    def active_bins(self, group: ChannelGroup) -> tuple[int, ...]:
        w = self.width(group.id)
        if w is None:
            return tuple(range(len(group.bins)))
        _check_width(group, w)
        return w.active_bins()

    def channels(self, group: ChannelGroup) -> int:
        """Channels of `group` this choice keeps (all blocks)."""
        return group.channels(self.active_bins(group)) * group.blocks

    def block_indices(self, group: ChannelGroup) -> torch.Tensor:
        """The kept channel indices within one block of `group`, ascending."""
        starts = group.bin_starts()
        bins = sorted(self.active_bins(group))
        return torch.cat([torch.arange(starts[b], starts[b + 1]) for b in bins])

    def indices(self, group: ChannelGroup) -> torch.Tensor:
        """The kept channel indices of `group`, ascending (base bins, then the free bins; the
        same positions in every block of a blocked group)."""
        idx = self.block_indices(group)
        if group.blocks == 1:
            return idx
        return (torch.arange(group.blocks)[:, None] * group.block_size + idx[None, :]).reshape(-1)

    def to_json(self) -> dict:
        out: dict = {str(g): {"k": w.k, "free": list(w.free)} for g, w in self.widths}
        if self.binning is not None:
            out["binning"] = self.binning
        return out

    @staticmethod
    def from_json(data: Mapping | str) -> WidthChoice:
        if isinstance(data, str):
            data = json.loads(data)
        try:
            data = dict(data)
            binning = data.pop("binning", None)
            widths = {}
            for g, w in data.items():
                if isinstance(w, int):
                    widths[int(g)] = GroupWidth(w)
                else:
                    free = tuple(int(b) for b in w.get("free", ()))
                    widths[int(g)] = GroupWidth(int(w["k"]), free)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise WidthcError(
                f"not a width: expected {{group id: {{'k': bins, 'free': [...]}}}} ({e})"
            ) from e
        return WidthChoice.of(widths, binning)


def _check_width(group: ChannelGroup, w: GroupWidth) -> None:
    n_bins = len(group.bins)
    ok = 1 <= w.k <= n_bins and len(set(w.free)) == len(w.free) and list(w.free) == sorted(w.free)
    ok = ok and all(w.base <= b < n_bins for b in w.free)
    if not ok:
        raise WidthcError(
            f"width {w} does not fit group {group.id} ({group.name}): it has {n_bins} bins"
        )
