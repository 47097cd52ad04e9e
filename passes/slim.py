"""Slim: a width choice -> a physically smaller GraphModule with inherited weights (DESIGN §9).

Every parameter and buffer is copied at the kept indices of the plan (passes/slicing.py), every
resized module gets its new attributes from the op registry, and literal channel counts in the
graph are rewritten. The program's graph and modules are left unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from widthc.passes.slicing import make_plan

from widthc.ir import WidthChoice


def slim(program, choice: WidthChoice) -> fx.GraphModule:
    """A new GraphModule whose layers keep only the channels `choice` selects."""
    plan = make_plan(program, choice)
    src = program.gm
    graph = copy.deepcopy(src.graph)
    small = fx.GraphModule(_copy_modules(src), graph, src.__class__.__name__)
    modules = dict(small.named_modules())

    with torch.no_grad():
        for target in plan.param_dims:
            if not plan.param_slices(target):
                continue
            owner_name, _, attr = target.rpartition(".")
            owner = modules[owner_name] if owner_name else small
            old = getattr(owner, attr)
            new = plan.slice_param(target, old.detach()).clone()
            if isinstance(old, nn.Parameter):
                setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                owner._buffers[attr] = new  # a buffer keeps being a buffer

    src_nodes = {n.name: n for n in src.graph.nodes}
    for node in small.graph.nodes:
        ref = src_nodes[node.name]
        if node.op == "call_module":
            module = modules[node.target]
            params = dict(module.named_parameters(recurse=False)) | dict(
                module.named_buffers(recurse=False)
            )
            for attr, value in plan.module_attrs(dict(src.named_modules()), ref, params).items():
                setattr(module, attr, value)
        new_args = plan.literal_args(ref)
        if new_args is not None:
            args, kwargs = new_args
            node.args = fx.node.map_arg(args, lambda n: _same_node(small.graph, n))
            node.kwargs = fx.node.map_arg(kwargs, lambda n: _same_node(small.graph, n))
    small.recompile()
    small.eval()
    return small


def _copy_modules(gm: fx.GraphModule) -> nn.Module:
    """A deep copy of the GraphModule's module tree, so the original stays untouched."""
    root = copy.deepcopy(nn.Module())
    memo: dict = {}
    for name, child in gm.named_children():
        root.add_module(name, copy.deepcopy(child, memo))
    for name, p in gm.named_parameters(recurse=False):
        root.register_parameter(name, nn.Parameter(p.detach().clone(), p.requires_grad))
    for name, b in gm.named_buffers(recurse=False):
        root.register_buffer(name, b.detach().clone())
    return root


def _same_node(graph: fx.Graph, n: fx.Node) -> fx.Node:
    for m in graph.nodes:
        if m.name == n.name:
            return m
    raise KeyError(n.name)
