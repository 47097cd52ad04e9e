"""Masked execution: where a supernet must zero the removed channels again (DESIGN §6).

Sliced execution presents every width's own tensor shapes; an accelerator builds a kernel plan
per new shape (cuDNN: measured 9-17x the plain step on an H200). Masked execution runs every
width at full width instead: each parameter and buffer the slicing plan would shrink is
multiplied by its keep-mask (widthc/supernet.py), so producers (conv, linear, norms) write
exact zeros at the removed channels and their gradients there are exactly zero. The kept
channels then equal sliced execution's as long as every value stays zero at the removed
ones. This pass walks the graph once with the op registry's `zeros` rules
(widthc/ops/zeros.py) and returns either
- the nodes after which the runtime zeroes the removed channels again (f(0) != 0: a sigmoid
  gate, `x + 1`, a layer norm's bias over other dims), or
- the reason masked execution would differ from sliced execution: a searchable group with a
  channel-mixing op (layer norm, softmax or a mean over channels, weight norm: statistics
  would count the removed channels), an op not finite at 0 (log, sqrt, a division by
  channels), an op without a rule, an in-place op that makes zeros non-zero. The supernet
  then runs sliced.
`rewrite_masks` returns the graph with those zeroing nodes in place. Random ops (dropout) draw
their masks for the full-width tensor: the same distribution at the kept channels as sliced
execution, not the same draws.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from widthc import ops
from widthc.errors import Reason
from widthc.ir import Layout, TensorMeta
from widthc.ops.zeros import RESULTS, SHIFTS, SINGULAR
from widthc.passes.groups import layouts
from widthc.trace import VALUE, NodeView
from widthc.tree import leaves

MASKS = "widthc_masks"  # submodule of the masked GraphModule: the current zeroing masks
SOURCE = "widthc_source"  # attribute of the masked GraphModule: the one whose tensors it reads


@dataclass(frozen=True)
class Site:
    """A node whose value is zeroed at the removed channels right after it."""

    node: str
    layouts: tuple  # per dim: Layout or None
    groups: tuple[int, ...]  # the searchable groups its channel dims carry


@dataclass(frozen=True)
class MaskPlan:
    sites: tuple[Site, ...]
    reason: Reason | None  # why masked execution would differ from sliced; None: it is exact


class ZeroCtx(NodeView):
    """What a `zeros` rule sees (widthc/ops/zeros.py)."""

    def __init__(self, node: fx.Node, module: nn.Module | None, searchable: set[int]):
        super().__init__(node)
        self.module, self.searchable = module, searchable

    def for_module(self, module: nn.Module) -> ZeroCtx:
        return ZeroCtx(self.node, module, self.searchable)

    def _tensor(self, i: int, name: str | None):
        raw = self._raw(i, name)
        if isinstance(raw, fx.Node) and isinstance(raw.meta.get(VALUE), TensorMeta):
            return raw.meta[VALUE], layouts(raw)
        return None, None

    def touches(self, i: int, name: str | None = None) -> bool:
        value, lays = self._tensor(i, name)
        return value is not None and bool(self.groups_of(lays))

    def carries(self, i: int, name: str | None = None) -> bool:
        value, lays = self._tensor(i, name)
        out, out_lays = self.node.meta[VALUE], layouts(self.node)
        if value is None or not isinstance(out, TensorMeta) or lays is None:
            return False
        for d, lay in enumerate(out_lays or ()):
            need = self.groups_of(lay)
            if not need:
                continue
            j = d - (out.ndim - value.ndim)
            if j < 0 or value.shape[j] != out.shape[d] or not need <= self.groups_of(lays[j]):
                return False
        return True

    def groups_of(self, lays) -> set[int]:
        """The searchable groups that layouts (of any structure) carry."""
        return {g for lay in leaves(lays) if isinstance(lay, Layout) for g in lay.groups} & (
            self.searchable
        )


def mask_plan(program) -> MaskPlan:
    """Where masked execution of `program`'s supernet zeroes values, or why it cannot be exact."""
    searchable = {g.id for g in program.searchable}
    for g in program.searchable:
        if g.mixing:
            why = (
                f"`{g.mixing[0]}` mixes the channels of group {g.id} ({g.name}): its statistics "
                "would count the removed channels"
            )
            return MaskPlan((), Reason(why, g.mixing[0]))
    gm = program.gm
    modules = dict(gm.named_modules())
    sites = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        ctx = ZeroCtx(
            node, modules.get(node.target) if node.op == "call_module" else None, searchable
        )
        if not any(isinstance(v, TensorMeta) for v in leaves(node.meta.get(VALUE))):
            spec = ops.lookup(node, modules)  # no value: sizes, or a write into its argument
            if spec is not None and spec.zeros in (SHIFTS, SINGULAR) and ctx.touches(0):
                op = ops.op_name(node, modules)
                why = f"masked execution: `{op}` writes into a tensor with removable channels"
                return MaskPlan((), Reason(why, node.name, op))
            continue  # sizes: full-width tensors have their full sizes, consistently
        groups = ctx.groups_of(layouts(node))
        if not groups:
            continue
        site = Site(node.name, layouts(node), tuple(sorted(groups)))
        if node.op == "get_attr":  # a stored tensor: masked by the runtime where the plan slices it
            dims = program.param_dims.get(node.target, {})
            if any(ctx.groups_of(lay) and d not in dims for d, lay in enumerate(site.layouts)):
                sites.append(site)
            continue
        verdict, op = _verdict(node, ctx, modules)
        why = None
        if verdict == SINGULAR:
            why = f"`{op}` is not finite at zero (or its gradient is not)"
        elif verdict not in RESULTS:
            why = f"widthc does not know what `{op}` does to channels that are zero"
        elif verdict == SHIFTS and _in_place(node, ctx.module):
            why = f"`{op}` makes zero channels non-zero in place"
        elif verdict == SHIFTS and not isinstance(node.meta.get(VALUE), TensorMeta):
            why = f"`{op}` makes zero channels non-zero in a structured value"
        if why is not None:
            return MaskPlan((), Reason(f"masked execution: {why}", node.name, op))
        if verdict == SHIFTS:
            sites.append(site)
    return MaskPlan(tuple(sites), None)


def _verdict(node: fx.Node, ctx: ZeroCtx, modules) -> tuple[str | None, str]:
    spec = ops.lookup(node, modules)
    op = ops.op_name(node, modules)
    if spec is None or spec.zeros is None:
        return None, op
    return (spec.zeros if isinstance(spec.zeros, str) else spec.zeros(ctx)), op


_IN_PLACE = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.imod}


def _in_place(node: fx.Node, module: nn.Module | None) -> bool:
    """The op writes into its input (the value before it changes for its other users too)."""
    if node.kwargs.get("inplace") is True or getattr(module, "inplace", False) is True:
        return True
    if node.op == "call_method":
        return node.target.endswith("_") and node.target != "requires_grad_"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.target in _IN_PLACE or (name.endswith("_") and not name.startswith("_"))
    return False


class Masks(nn.Module):
    """Holds the zeroing masks of the current choice (None: nothing removed), read by the graph.
    Capture-ready graphs read buffer `m{i}` instead (True where removed; replaced on every
    forward by the width's mask, widthc/capture.py): a tensor input, not Python state."""

    def __init__(self, sites: tuple[Site, ...], capture: bool):
        super().__init__()
        self.values: list = [None] * len(sites)
        for i, site in enumerate(sites if capture else ()):
            shape = [1 if lay is None else lay.size for lay in site.layouts]
            self.register_buffer(f"m{i}", torch.zeros(shape, dtype=torch.bool), persistent=False)


def rewrite_masks(
    src: fx.GraphModule, sites: tuple[Site, ...], capture: bool = False
) -> fx.GraphModule:
    """A GraphModule sharing `src`'s modules in which the value of every site is zeroed at the
    removed channels right after its node (`widthc_masks.values[i]`: True where removed).
    Every attribute the graph reads (`get_attr`: a position embedding, GPT-2's Conv1D weight)
    is read through `src` itself: fx would copy it into containers of the new module's own,
    where the tensors the supernet swaps into `src` (its masked weights) are not seen.
    `capture`: every site is zeroed by `masked_fill` with buffer `widthc_masks.m{i}`, and
    attributes keep their names: the graph runs under `torch.func.functional_call`, which
    replaces tensors by name."""
    gm = fx.GraphModule(src, copy.deepcopy(src.graph), src.__class__.__name__)
    if not capture:
        gm.__dict__[SOURCE] = src  # a plain attribute: not a submodule, weights not counted twice
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                node.target = f"{SOURCE}.{node.target}"
    gm.add_submodule(MASKS, Masks(sites, capture))
    nodes = {n.name: n for n in gm.graph.nodes}
    for i, site in enumerate(sites):
        node = nodes[site.node]
        with gm.graph.inserting_after(node):
            holder = gm.graph.get_attr(f"{MASKS}.m{i}" if capture else MASKS)
        with gm.graph.inserting_after(holder):
            if capture:
                zeroed = gm.graph.call_method("masked_fill", (node, holder, 0))
            else:
                zeroed = gm.graph.call_function(_zeroed, (holder, i, node))
        zeroed.meta = dict(node.meta)
        node.replace_all_uses_with(zeroed, delete_user_cb=lambda user, z=zeroed: user is not z)
    gm.recompile()
    return gm


def _zeroed(masks: Masks, i: int, x):
    removed = masks.values[i]
    return x if removed is None else x.masked_fill(removed, 0)
