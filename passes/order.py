"""Importance-ordered channels (issue 20): a permutation of every searchable group's channels
that leaves the model's function unchanged, so that the channels every narrow width keeps
(the left-most bins, DESIGN §6) are the most important ones. OFA and slimmable networks sort
channels before sharing weights for the same reason.

A permutation is a slicing plan that keeps every channel, in another order: the plan
(passes/slicing.py) applies it to every parameter and buffer dim laid out on the group (the
producers' outputs, the consumers' inputs, the norms' parameters and statistics, each segment
of a concatenation, each repeat of a flatten, each block of a blocked group alike). Channel
counts do not change, so no module attribute or literal channel count does. The function is
preserved wherever every op treats the group's channels alike, which the coupling pass
records: a frozen group, and a group whose channels an op reads by position (argmax over
them: `ChannelGroup.ordered`), are left alone with the reason.

The importance of a channel (summed over the blocks of a blocked group):
  l1, l2  the L1 / L2 norm of the producers' weights (of every weight of the group where no
          producer layer holds one)
  bn      |gamma| of the group's norms (the op registry's `scale` parameter); l1 where the
          group has no norm
  taylor  the first-order change of the loss when the channel's weights are zeroed,
          |sum of w * dL/dw| over every parameter entry of the channel, per batch, summed over
          a few batches (eval mode: batch-norm statistics stay as trained)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import fx

from widthc import ops
from widthc.errors import Reason, WidthcError
from widthc.ir import ChannelGroup, Layout
from widthc.ops.reparam import recompute, tensor_at
from widthc.passes.slicing import SlicePlan
from widthc.passes.slim import copy_module, sliced_tensors

__all__ = ["METHODS", "importance", "left_alone", "orders_of", "permuted", "permuted_tensors"]

METHODS = ("l1", "l2", "bn", "taylor")


def left_alone(program) -> dict[int, Reason]:
    """The groups no permutation may touch, and why: frozen ones, and those whose channels an
    op reads by position."""
    out = {}
    for g in program.groups:
        if g.frozen:
            out[g.id] = Reason(f"frozen: {g.frozen[0]}")
        elif g.ordered:
            out[g.id] = Reason("an op reads its channels by position", node=g.ordered[0])
    return out


def importance(
    program,
    groups: Iterable[ChannelGroup],
    method: str,
    batches: Iterable | None = None,
    loss: Callable | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
    """The importance of every channel (within one block) of each of `groups`, and how each
    group was scored (`bn` falls back to `l1` for a group without a norm). `taylor` reads
    (inputs, targets) `batches` and `loss(output, target)` (default cross-entropy)."""
    groups = list(groups)
    if method not in METHODS:
        raise WidthcError(
            f"unknown channel importance {method!r}: choose one of {', '.join(METHODS)}"
        )
    if method == "taylor":
        return _taylor(program, groups, batches, loss), {g.id: method for g in groups}
    scores, how = {}, {}
    for g in groups:
        score = _norm_scale(program, g) if method == "bn" else None
        how[g.id] = "l1" if method == "bn" and score is None else method
        if score is None:
            score = _magnitude(program, g, 2 if method == "l2" else 1)
        scores[g.id] = score
    return scores, how


def orders_of(scores: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Each group's channels, most important first (ties keep their order): the old index of
    the channel at every new position."""
    return {g: torch.argsort(-s, stable=True) for g, s in scores.items()}


def permuted(program, orders: Mapping[int, torch.Tensor]) -> fx.GraphModule:
    """A copy of the program's model whose channels of each group `g` of `orders` come in the
    order `orders[g]` (the old index at each new position, within one block). The program and
    its model are left untouched."""
    gm = copy_module(program.gm, sliced_tensors(program.gm, _plan(program, orders)))
    for module in gm.modules():
        recompute(module)  # weights an old-style weight-norm hook keeps, from their sources
    return gm


def permuted_tensors(
    program, orders: Mapping[int, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`tensors`, each keyed by the parameter or buffer of the program's model it is laid out
    like (its value, or an optimizer's state of it: momentum), with the channels of each group
    `g` of `orders` in the order `orders[g]`, exactly as `permuted` moves that parameter."""
    plan = _plan(program, orders)
    return {target: plan.slice_param(target, t) for target, t in tensors.items()}


def _plan(program, orders: Mapping[int, torch.Tensor]) -> SlicePlan:
    """The slicing plan that keeps every channel, each group of `orders` in its order."""
    counts = {g.id: g.block_size for g in program.groups}
    for gid, order in orders.items():
        if sorted(order.tolist()) != list(range(counts[gid])):
            raise WidthcError(f"the order of group {gid} is not a permutation of its channels")
    return SlicePlan({g: o.long() for g, o in orders.items()}, counts, program.param_dims)


# --- the scores ------------------------------------------------------------------------------


def _dims_on(program, g: ChannelGroup):
    """(target, dim, layout) of every parameter and buffer dim laid out on group `g`."""
    for target, dims in program.param_dims.items():
        for dim, lay in dims.items():
            if g.id in lay.groups:
                yield target, dim, lay


def _per_channel(values: torch.Tensor, layout: Layout, g: ChannelGroup) -> torch.Tensor:
    """`values` (one per position along a dim laid out as `layout`) summed over the positions
    of each channel of `g` within one block: every segment, repeat and block of it."""
    out = torch.zeros(g.block_size, dtype=torch.float64)
    offset = 0
    for s in layout.segments:
        if s.group == g.id:
            part = values[offset : offset + s.width].view(s.outer, s.size, s.inner)
            out += part.sum((0, 2)).to(torch.float64)
        offset += s.width
    return out


def _along(t: torch.Tensor, dim: int, f) -> torch.Tensor:
    """f applied to every entry, summed over every dim but `dim`."""
    return f(t.detach().movedim(dim, 0).reshape(t.shape[dim], -1).double()).sum(1)


def _magnitude(program, g: ChannelGroup, p: int) -> torch.Tensor:
    params = dict(program.gm.named_parameters(remove_duplicate=False))
    found = [
        (t, d, lay) for t, d, lay in _dims_on(program, g) if t in params and params[t].ndim >= 2
    ]
    producers = [x for x in found if x[0].rpartition(".")[0] in g.producers]
    score = torch.zeros(g.block_size, dtype=torch.float64)
    for target, dim, lay in producers or found:
        score += _per_channel(_along(params[target], dim, lambda x: x.abs() ** p), lay, g)
    return score.sqrt() if p == 2 else score


def _scales(program, g: ChannelGroup) -> list[str]:
    """The scale parameters (a norm's gamma, as the op registry names them) laid out on `g`."""
    modules = dict(program.gm.named_modules())
    names = []
    for node in program.gm.graph.nodes:
        if node.op == "call_module":
            spec = ops.lookup(node, modules)
            if spec is not None and spec.scale is not None:
                names.append(f"{node.target}.{spec.scale}")
    dims = {t for t, _, _ in _dims_on(program, g)}
    return [n for n in names if n in dims]


def _norm_scale(program, g: ChannelGroup) -> torch.Tensor | None:
    names = _scales(program, g)
    if not names:
        return None
    score = torch.zeros(g.block_size, dtype=torch.float64)
    for name in names:
        for dim, lay in program.param_dims[name].items():
            if g.id in lay.groups:
                gamma = tensor_at(program.gm, name)
                score += _per_channel(_along(gamma, dim, torch.abs), lay, g)
    return score


def _taylor(program, groups, batches, loss) -> dict[int, torch.Tensor]:
    if batches is None:
        raise WidthcError("taylor importance needs data: give batches of (inputs, targets)")
    loss = loss or F.cross_entropy
    params = dict(program.gm.named_parameters(remove_duplicate=False))
    used = {
        t: [(g, d, lay) for g in groups for tt, d, lay in _dims_on(program, g) if tt == t]
        for t in params
        if params[t].requires_grad
    }
    used = {t: v for t, v in used.items() if v}
    tensors = [params[t] for t in used]
    device = tensors[0].device if tensors else torch.device("cpu")
    scores = {g.id: torch.zeros(g.block_size, dtype=torch.float64) for g in groups}
    seen = 0
    for x, y in batches:
        inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        out = program.gm(*(i.to(device) for i in inputs))
        grads = torch.autograd.grad(loss(out, y.to(device)), tensors, allow_unused=True)
        step = {g.id: torch.zeros(g.block_size, dtype=torch.float64) for g in groups}
        for places, w, grad in zip(used.values(), tensors, grads):
            if grad is None:
                continue
            first_order = (w.detach() * grad).cpu()
            for g, dim, lay in places:
                step[g.id] += _per_channel(_along(first_order, dim, lambda v: v), lay, g)
        for gid, s in step.items():
            scores[gid] += s.abs()
        seen += 1
    if not seen:
        raise WidthcError("taylor importance needs data: the batches given were empty")
    return scores
