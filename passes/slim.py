"""Slim: a width choice -> a physically smaller GraphModule with inherited weights (DESIGN §9).

The slicing plan (passes/slicing.py) says what every parameter, buffer, module attribute and
literal channel count keeps; the supernet reads the same plan, so the two cannot disagree.
Invariants: the program's graph, modules and weights are left untouched; the result shares no
tensor with them; a full-width choice gives a bit-identical copy.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from widthc.errors import InternalError
from widthc.ir import WidthChoice
from widthc.ops.reparam import recompute
from widthc.passes.slicing import SlicePlan, make_plan

_WIDTHC_META = "widthc."  # node.meta keys of the analysis: full-width facts, stale after slim


def slim(program, choice: WidthChoice) -> fx.GraphModule:
    """A new GraphModule (eval mode) whose layers keep only the channels `choice` selects."""
    plan = make_plan(program, choice)
    src = program.gm
    # Deep-copy with the sliced tensors pre-seeded in the memo: every tensor the plan shrinks is
    # copied once, already small, and the full-width weights are never duplicated.
    memo = sliced_tensors(src, plan)
    small = copy_module(src, memo)
    src_nodes, small_nodes = list(src.graph.nodes), list(small.graph.nodes)
    if [n.name for n in src_nodes] != [n.name for n in small_nodes]:
        raise InternalError("deep-copying the program's graph changed its nodes")
    node_map = dict(zip(src_nodes, small_nodes))

    src_modules, small_modules = dict(src.named_modules()), dict(small.named_modules())
    for ref, node in node_map.items():
        if node.op == "call_module":
            _resize_module(plan, src_modules, ref, small_modules[node.target])
        new_args = plan.literal_args(ref)
        if new_args is not None:
            args, kwargs = new_args
            node.args = fx.node.map_arg(args, node_map.__getitem__)
            node.kwargs = fx.node.map_arg(kwargs, node_map.__getitem__)
        for key in [k for k in node.meta if k.startswith(_WIDTHC_META)]:
            del node.meta[key]
    for module in small.modules():
        recompute(module)  # weights an old-style weight-norm hook keeps, from their sliced sources
    small.recompile()
    small.eval()
    return small


def copy_module(module: nn.Module, memo: dict | None = None) -> nn.Module:
    """copy.deepcopy that also copies modules holding a computed tensor as an attribute (the
    old `torch.nn.utils.weight_norm` hook keeps `weight` so; deepcopy refuses such tensors)."""
    memo = {} if memo is None else memo
    for m in module.modules():
        for value in m.__dict__.values():
            if isinstance(value, torch.Tensor) and not value.is_leaf and id(value) not in memo:
                memo[id(value)] = value.detach().clone()
    memo.setdefault(id(memo), []).append(module)  # keep-alive: ids stay valid while we copy
    return copy.deepcopy(module, memo)


def sliced_tensors(src: fx.GraphModule, plan: SlicePlan) -> dict[int, torch.Tensor]:
    """A deepcopy memo: id(full tensor) -> its sliced copy (a Parameter stays a Parameter)."""
    memo: dict[int, torch.Tensor] = {}
    slices_of: dict[int, list] = {}
    for target in plan.param_dims:
        slices = plan.param_slices(target)
        if not slices:
            continue
        old = _get_tensor(src, target)
        key = [(d, i.tolist()) for d, i in slices]
        if id(old) in slices_of:
            # one tensor under two names (tied weights) must shrink the same way under both
            if slices_of[id(old)] != key:
                raise InternalError(f"tensor `{target}` is shared but sliced two different ways")
            continue
        slices_of[id(old)] = key
        with torch.no_grad():
            new = plan.slice_param(target, old.detach()).contiguous()
        if isinstance(old, nn.Parameter):
            new = nn.Parameter(new, requires_grad=old.requires_grad)
        memo[id(old)] = new
    memo[id(memo)] = [src]  # deepcopy's keep-alive convention: ids stay valid while we copy
    return memo


def _get_tensor(gm: nn.Module, target: str) -> torch.Tensor:
    owner_name, _, attr = target.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    value = getattr(owner, attr, None)
    if not isinstance(value, torch.Tensor):
        raise InternalError(f"the slicing plan names `{target}`, which is not a tensor")
    return value


def _resize_module(plan: SlicePlan, src_modules: dict, ref: fx.Node, module: nn.Module) -> None:
    """Set the attributes (in_channels, groups, num_features, ...) that follow sliced weights."""
    tensors = dict(module.named_parameters(recurse=False)) | dict(
        module.named_buffers(recurse=False)
    )
    for attr, value in plan.module_attrs(src_modules, ref, tensors).items():
        setattr(module, attr, value)
