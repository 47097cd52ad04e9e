"""Rewrite: literal channel counts in a traced graph read the current width (DESIGN §6).

A graph such as `x.view(n, 256)` holds channel counts as literals. The supernet runs many widths
on one graph, so `rewrite_literals` returns a copy of the GraphModule (sharing the modules) in
which each such literal reads `widthc_sizes.values[i]`, set per width by the supernet runtime
(`widthc/supernet.py`). Cheaper than a torch.fx.Interpreter, which pays Python overhead at every
node (bench/supernet_cost.py).
"""

from __future__ import annotations

import copy

from torch import fx, nn

from widthc.passes.groups import rewrites
from widthc.trace import VALUE

SIZES = "widthc_sizes"  # submodule of the supernet's GraphModule: the current literal sizes


class Sizes(nn.Module):
    """Holds the literal channel counts of the current choice, read by the rewritten graph."""

    def __init__(self, values: list[int]):
        super().__init__()
        self.values = values


def rewrite_literals(src: fx.GraphModule) -> tuple[fx.GraphModule, list]:
    """A GraphModule sharing `src`'s modules whose literal channel counts read `widthc_sizes`.

    Returns it and the slots: [(node name, path of the literal in (args, kwargs), the groups
    whose widths set it)]."""
    gm = fx.GraphModule(src, copy.deepcopy(src.graph), src.__class__.__name__)
    slots, sizes = [], []
    gm.add_submodule(SIZES, Sizes(sizes))
    for node in list(gm.graph.nodes):
        for path, lay in rewrites(node):
            with gm.graph.inserting_before(node):
                holder = gm.graph.get_attr(SIZES)
                item = gm.graph.call_function(_item, (holder, len(slots)))
            args_kwargs = (node.args, node.kwargs)
            value = at(args_kwargs, path)  # a literal, or a size read from a tensor
            sizes.append(value.meta[VALUE] if isinstance(value, fx.Node) else value)
            node.args, node.kwargs = replaced(args_kwargs, path, item)
            groups = () if isinstance(lay, int) else tuple(sorted(lay.groups))  # int: pinned
            slots.append((node.name, path, groups))
    gm.recompile()
    return gm, slots


def _item(sizes: Sizes, i: int) -> int:
    return sizes.values[i]


def at(args_kwargs: tuple, path: tuple):
    """The value at `path` ("args" or "kwargs", then keys; "start"/"stop" of a slice) of
    (args, kwargs)."""
    x = args_kwargs[0 if path[0] == "args" else 1]
    for key in path[1:]:
        x = getattr(x, key) if isinstance(x, slice) else x[key]
    return x


def replaced(args_kwargs: tuple, path: tuple, value) -> tuple:
    """(args, kwargs) with the value at `path` replaced (fx's containers are immutable)."""

    def put(x, keys):
        if not keys:
            return value
        key, *rest = keys
        if isinstance(x, dict):
            return {**x, key: put(x[key], rest)}
        if isinstance(x, slice):
            ends = {"start": x.start, "stop": x.stop, "step": x.step}
            ends[key] = put(ends[key], rest)
            return slice(ends["start"], ends["stop"], ends["step"])
        items = list(x)
        items[key] = put(items[key], rest)
        return type(x)(items)

    which = 0 if path[0] == "args" else 1
    out = list(args_kwargs)
    out[which] = put(args_kwargs[which], path[1:])
    return tuple(out)
