"""Why a model has little to search: the causes that keep conv/linear channels at full width.

`widthc analyze` prints the largest causes under its table whenever fewer than half of the
conv/linear output channels are searchable, so that a model never ends at "0% searchable"
without a reason.
"""

from __future__ import annotations

from collections import Counter

from torch import fx

from widthc import fx_tracer, ops

SHOW_BELOW = 0.5  # `widthc analyze` explains the frozen channels below this searchable share
_OUTPUT = "output of the network"


def freeze_summary(program) -> list[tuple[str, int]]:
    """(cause, channels) for every cause that keeps conv/linear output channels unsearchable,
    the most channels first. A frozen group of produced channels counts under its first reason
    other than being the network's output; weights hidden inside a leaf module (an opaque call)
    count under the leaf; weights of the graph whose output channels no group follows count
    under the op that first reads them. Channels are those of each layer's weight (dim 0)."""
    counts: Counter[str] = Counter()
    for g in program.groups:
        if g.producers and not g.searchable:
            counts[_group_cause(g)] += g.n * len(g.producers)
    gm = program.gm
    modules = dict(gm.named_modules())
    auto = dict(getattr(program.traced, "auto_leaves", ()))
    followed = set(program.param_dims)
    for node in gm.graph.nodes:
        if node.op == "call_module" and ops.lookup(node, modules) is None:
            n = _weight_channels(modules[node.target])
            if n:
                counts[_leaf_cause(node, modules, auto)] += n
        elif node.op == "get_attr" and node.target not in followed:
            p = _fetch(gm, node.target)
            if getattr(p, "ndim", 0) >= 2 and node.users:
                user = next(iter(node.users))
                op = ops.op_name(user, modules)
                counts[f"weights read through `{op}`, whose channels are not followed"] += int(
                    p.shape[0]
                )
    return counts.most_common()


def footer(program, fraction: float, top: int = 3) -> str | None:
    """One line naming the largest causes, or None where at least SHOW_BELOW is searchable."""
    if fraction >= SHOW_BELOW:
        return None
    causes = freeze_summary(program)
    if not causes:
        return None
    shown = "; ".join(f"{cause} ({n} channels)" for cause, n in causes[:top])
    more = f"; +{len(causes) - top} more" if len(causes) > top else ""
    return f"frozen conv/linear channels by cause: {shown}{more}"


def _group_cause(g) -> str:
    reasons = [r for r in g.frozen if r.why != _OUTPUT] or list(g.frozen)
    r = reasons[0]
    return f"{r.why} (`{r.op}`)" if r.op and r.op not in r.why else r.why


def _leaf_cause(node: fx.Node, modules, auto: dict) -> str:
    module = modules[node.target]
    cls = type(module).__name__
    if node.target in auto:
        why = auto[node.target]
    elif isinstance(module, tuple(fx_tracer.timm_leaves()[0])):
        why = "timm marks it as not traceable"
    elif type(module).__module__.startswith("torch.nn"):
        why = "a torch.nn module without a channel rule"
    else:
        why = "a leaf you asked for"
    return f"inside leaf `{cls}` ({why})"


def _weight_channels(module) -> int:
    return sum(int(p.shape[0]) for p in module.parameters() if p.ndim >= 2)


def _fetch(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj
