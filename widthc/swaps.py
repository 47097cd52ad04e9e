"""What running a supernet at one width changes, as data: which tensors to slice (or mask) how
(`Swap`), where each tensor the plan may slice lives (`Target`), and everything one choice
changes (`Applied`), with the tensor helpers that build and undo them (`widthc.supernet`).

Sliced execution keeps the kept positions of a tensor (`slices`); masked execution keeps its
full shape and multiplies it by its keep-mask, one broadcastable vector per channel dim
(`keep`: a parameter's removed entries and their gradients are exactly zero, a buffer's
removed entries read as zero and are never written back). The vectors are cached per group
width; their product, as large as the weight for a linear layer, is made in the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from widthc.ir import Layout
from widthc.passes.groups import layouts


@dataclass(frozen=True)
class Swap:
    """One tensor to slice: `store[attr]` of `owner` (its _parameters, _buffers or __dict__)."""

    owner: nn.Module
    store: str
    attr: str
    slices: tuple[tuple[int, torch.Tensor], ...]  # (dim, kept positions), on the tensor's device
    is_buffer: bool
    shape: tuple[int, ...]  # the sliced shape
    narrow: tuple[tuple[int, int, int], ...] | None = None  # (dim, start, length): all ranges
    keep: tuple[torch.Tensor, ...] | None = None  # masked: per channel dim, True where kept
    scale: tuple[torch.Tensor, ...] | None = None  # `keep` in the parameter's dtype

    def take(self, full: torch.Tensor, private: bool) -> torch.Tensor:
        """What replaces `full` during a forward. `private` (probing, scoring): buffers are
        copies, and without autograd sliced parameters are gathered contiguous, once."""
        if self.keep is not None:
            if self.is_buffer:
                return torch.where(product(self.keep), full, 0)
            return full * product(self.scale)  # the small product first (k x k convs)
        if not self.slices:
            return full.clone()  # a private copy
        t = self.apply(full)
        return (
            t.contiguous() if private and not self.is_buffer and not torch.is_grad_enabled() else t
        )

    @torch.no_grad()
    def write_back(self, full: torch.Tensor, taken: torch.Tensor) -> None:
        """Put the kept positions of a buffer a training forward updated back into `full`."""
        if self.keep is not None:
            full.copy_(torch.where(product(self.keep), taken, full))
        elif self.slices:
            index_copy(full, self.slices, taken)

    def kept(self, shape, device) -> torch.Tensor:
        """A boolean tensor of the full `shape`, true at the kept positions."""
        if self.keep is not None:
            return product(self.keep).expand(shape)
        return kept_mask(shape, self.slices, device)

    def apply(self, full: torch.Tensor) -> torch.Tensor:
        """The kept part of `full`: a view where every kept set is a range (parameters only:
        no copy, and a cheaper backward), else one index_select per sliced dim. (Measured on
        CPU: two index_selects beat one gather at flat indices, which also costs an int64
        index as large as the weight, per cached choice.)"""
        if self.narrow is not None:
            for dim, start, length in self.narrow:
                full = full.narrow(dim, start, length)
            return full
        for dim, idx in self.slices:
            full = full.index_select(dim, idx)
        return full


@dataclass(frozen=True)
class Target:
    """A parameter or buffer the plan may slice: where it lives, its shape, its channel dims."""

    name: str
    owner: nn.Module
    store: str
    attr: str
    shape: tuple[int, ...]
    dims: tuple[tuple[int, Layout], ...]
    groups: tuple[int, ...]  # the groups its channel dims carry: its slices depend on them only


@dataclass(frozen=True)
class Applied:
    """Everything one choice changes, resolved once and cached."""

    swaps: tuple[Swap, ...]
    attrs: tuple[tuple[nn.Module, dict, dict], ...]  # (module, new attributes, old attributes)
    sizes: tuple[int, ...]  # literal channel counts, in slot order
    sites: tuple = ()  # masked execution: per zeroing site, True where removed (or None)


def untouched_buffers(slots, swaps) -> tuple[Swap, ...]:
    """Every buffer of `slots` [(module, name)] that no swap covers, as a swap that only copies
    it (probing: every buffer a private copy)."""
    covered = {(id(s.owner), s.attr) for s in swaps}
    return tuple(
        Swap(m, "_buffers", name, (), True, ())
        for m, name in slots
        if m._buffers.get(name) is not None and (id(m), name) not in covered
    )


def store_of(owner: nn.Module, attr: str) -> tuple[str, torch.Tensor]:
    for store in ("_parameters", "_buffers"):
        d = getattr(owner, store)
        if d.get(attr) is not None:
            return store, d[attr]
    return "__dict__", owner.__dict__[attr]  # a plain tensor attribute (fx constants)


def targets(gm: fx.GraphModule, param_dims) -> list[Target]:
    out = []
    for name, dims in param_dims.items():
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        store, tensor = store_of(owner, attr)
        groups = tuple(sorted({g for lay in dims.values() for g in lay.groups}))
        out.append(
            Target(
                name, owner, store, attr, tuple(tensor.shape), tuple(sorted(dims.items())), groups
            )
        )
    return out


def resizable(src: fx.GraphModule, modules: dict, param_dims) -> list:
    """[(node, module, groups)]: call_module nodes and the groups their parameters and inputs
    carry; a node whose groups all keep their width keeps its attributes."""
    out, seen = [], set()
    for node in src.graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        seen.add(node.target)
        module = modules[node.target]
        groups = set()
        for name in (*module._parameters, *module._buffers):
            for lay in param_dims.get(f"{node.target}.{name}", {}).values():
                groups.update(lay.groups)
        for arg in node.all_input_nodes:
            groups.update(layout_groups(layouts(arg)))
        out.append((node, module, tuple(sorted(groups))))
    return out


def layout_groups(layouts) -> set[int]:
    if isinstance(layouts, Layout):
        return set(layouts.groups)
    if isinstance(layouts, (tuple, list)):
        return set().union(*(layout_groups(x) for x in layouts)) if layouts else set()
    if isinstance(layouts, dict):
        return layout_groups(list(layouts.values()))
    return set()


def make_swap(t: Target, found: list) -> Swap:
    """How to slice `t`; `found`: [(dim, (kept positions, (start, length) or None))]."""
    slices = tuple((d, idx) for d, (idx, _) in found)
    shape = list(t.shape)
    for d, idx in slices:
        shape[d] = len(idx)
    is_buffer = t.store != "_parameters"  # buffers are small and must be copies (probing)
    ranges = [r for _, (_, r) in found]
    narrow = None
    if not is_buffer and all(r is not None for r in ranges):
        narrow = tuple((d, start, n) for (d, _), (start, n) in zip(slices, ranges))
    return Swap(t.owner, t.store, t.attr, slices, is_buffer, tuple(shape), narrow)


def as_range(idx: torch.Tensor) -> tuple[int, int] | None:
    """(start, length) when `idx` is start, start+1, ..., else None."""
    n = len(idx)
    start = int(idx[0])
    if int(idx[-1]) - start + 1 != n:
        return None  # indices are ascending and distinct: a gap shows in the span
    return start, n


def keep_vector(idx: torch.Tensor, n: int, device) -> torch.Tensor:
    """A boolean vector of length `n`, true at `idx` (ascending), built on `device` from runs of
    consecutive positions: scalar fills only, no index tensor copied to the device (on CUDA
    such a copy from pageable memory waits for the device)."""
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    idx = idx.tolist()
    start = prev = idx[0]
    for i in (*idx[1:], None):
        if i is not None and i == prev + 1:
            prev = i
            continue
        keep.narrow(0, start, prev - start + 1).fill_(True)
        if i is not None:
            start = prev = i
    return keep


def broadcast_keep(ndim: int, found) -> tuple[torch.Tensor, ...] | None:
    """The keep-mask of a tensor of `ndim` dims from [(dim, keep vector or None)], as one
    broadcastable view per dim (size 1 along every other dim); None: it keeps everything."""
    views = tuple(
        vec.view([-1 if d == dim else 1 for d in range(ndim)])
        for dim, vec in found
        if vec is not None
    )
    return views or None


def mask_swap(t: Target, found) -> Swap:
    """How to mask `t`; `found`: [(dim, keep vector or None, the same in t's dtype)]."""
    n = len(t.shape)
    keep = broadcast_keep(n, [(d, k) for d, k, _ in found])
    is_buffer = t.store != "_parameters"
    scale = None if is_buffer else broadcast_keep(n, [(d, f) for d, _, f in found])
    return Swap(t.owner, t.store, t.attr, (), is_buffer, t.shape, None, keep, scale)


def removed_mask(ndim: int, found) -> torch.Tensor | None:
    """True where a value of `ndim` dims is removed (broadcastable), from [(dim, keep vector)]."""
    keep = broadcast_keep(ndim, found)
    return None if keep is None else ~product(keep)


def product(factors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The mask of a tensor from its broadcastable factors (boolean: and; else: times)."""
    out = factors[0]
    for f in factors[1:]:
        out = out & f if out.dtype == torch.bool else out * f
    return out


def kept_mask(shape, slices, device) -> torch.Tensor:
    """A boolean tensor of `shape`, true at the positions `slices` (dim, kept indices) keep."""
    mask = torch.ones((1,) * len(shape), dtype=torch.bool, device=device)
    for dim, idx in slices:
        kept = torch.zeros(shape[dim], dtype=torch.bool, device=device)
        kept[idx] = True
        mask = mask & kept.view([-1 if d == dim else 1 for d in range(len(shape))])
    return mask.expand(shape)


def index_copy(full: torch.Tensor, slices, sliced: torch.Tensor) -> None:
    """full[kept positions] = sliced, for a slice along any number of dims."""
    (dim, idx), *rest = slices
    if rest:
        inner = full.index_select(dim, idx)
        index_copy(inner, rest, sliced)
        sliced = inner
    full.index_copy_(dim, idx, sliced)
