"""What slicing a supernet at one width changes, as data: which tensors to slice how
(`Swap`), where each tensor the plan may slice lives (`Target`), and everything one choice
changes (`Applied`), with the tensor helpers that build and undo them (`widthc.supernet`).
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
