"""What a trace leaves behind, undone or made explicit: attributes a traced forward stored on
its modules (a cache of anchors), and `self.training` that torch.fx bakes in as a constant."""

from __future__ import annotations

from torch import fx, nn

from widthc.fx_tracer import Tracer
from widthc.tree import leaves as flat


def module_state(model: nn.Module) -> list:
    """Every module's attributes and buffers (shallow): what a traced forward might overwrite."""
    return [(name, m, dict(m.__dict__), dict(m._buffers)) for name, m in model.named_modules()]


def restore_module_state(model: nn.Module, saved: list) -> list[tuple[str, str]]:
    """Undo every attribute or buffer that tracing set to a traced value (a forward that caches,
    like YOLO's anchors); return (module path, why) of each module that did."""
    out = []
    for name, m, attrs, buffers in saved:
        changed = []
        for store, before in ((m.__dict__, attrs), (m._buffers, buffers)):
            for key in [k for k, v in store.items() if v is not before.get(k) and _holds_proxy(v)]:
                if key in before:
                    store[key] = before[key]
                else:
                    del store[key]
                changed.append(key)
        if changed:
            what = ", ".join(f"`self.{key}`" for key in changed)
            out.append((name, f"its forward stores traced values in {what}"))
    return out


def stores_alike(model: nn.Module, graph: fx.Graph, retrace) -> bool:
    """Whether a forward that stores traced values on its modules computes alike whatever it
    stored before: `retrace()` (an eager run, then a trace) gives the same graph as a trace from
    the model's state. HF Swin clamps `self.window_size` to the input's resolution on every call
    (a value read from shapes, stored, then read back in the same call): it traces alike and
    needs no leaf. A cache read back on the next call (YOLO's anchors) does not trace alike.
    The model's attributes are as they were afterwards."""
    saved = module_state(model)
    try:
        again = retrace()
    except Exception:  # noqa: BLE001 - no second graph: not shown to compute alike
        return False
    finally:
        _reset_module_state(model, saved)
    return _live(again) == _live(graph)


def _live(graph: fx.Graph) -> list:
    """The nodes that compute something used, each with its inputs by position: a comparison
    that only steered the trace's control flow (`h <= self.window_size`, with the stored
    value's literal) is left out."""
    nodes = [n for n in graph.nodes if n.users or n.is_impure()]
    index = {n: i for i, n in enumerate(nodes)}
    return [
        (n.op, n.target, repr(fx.node.map_arg((n.args, n.kwargs), lambda a: index.get(a, -1))))
        for n in nodes
    ]


def _reset_module_state(model: nn.Module, saved: list) -> None:
    """Every attribute and buffer as `module_state` saw it (an eager run's stores undone)."""
    for _, m, attrs, buffers in saved:
        for store, before in ((m.__dict__, attrs), (m._buffers, buffers)):
            for key in [k for k, v in store.items() if v is not before.get(k, _MISSING)]:
                if key in before:
                    store[key] = before[key]
                else:
                    del store[key]


_MISSING = object()


def _holds_proxy(value) -> bool:
    return any(isinstance(v, fx.Proxy) for v in flat(value))


def follow_training_flag(graph: fx.Graph, model: nn.Module, tracer_args: tuple) -> None:
    """torch.fx bakes `self.training` into the graph as a constant: traced in eval mode,
    `F.dropout(x, p, self.training)` or torchvision's stochastic depth would stay off when the
    supernet trains. Where a train-mode trace of the same graph has True in place of a False,
    the argument becomes a read of the module's `training` flag, so `.train()` switches it.
    (A train-mode graph of another structure, such as GoogLeNet's auxiliary heads, is left
    out: the analysed graph is the inference graph.)"""
    if not any(False in _literals(n) for n in graph.nodes):
        return
    was_training = model.training
    model.train()
    saved = module_state(model)
    try:
        train_graph = Tracer(*tracer_args).trace(model)
    except Exception:  # noqa: BLE001 - no train-mode graph: keep the constants
        return
    finally:
        model.train(was_training)
        restore_module_state(model, saved)
    pairs = list(zip(graph.nodes, train_graph.nodes))
    if len(graph.nodes) != len(train_graph.nodes) or any(
        (a.op, a.target) != (b.op, b.target) for a, b in pairs
    ):
        return
    flag = None
    for a, b in pairs:
        for key in _flag_positions(a, b):
            if flag is None:
                first = next(n for n in graph.nodes if n.op != "placeholder")
                with graph.inserting_before(first):
                    flag = graph.get_attr("training")
            a.update_arg(key, flag) if isinstance(key, int) else a.update_kwarg(key, flag)


def _literals(node: fx.Node) -> list:
    return [v for v in (*node.args, *node.kwargs.values()) if isinstance(v, bool)]


def _flag_positions(a: fx.Node, b: fx.Node) -> list:
    """Argument positions (ints) and keywords (strs) that are False in `a` and True in `b`."""
    out: list = [i for i, (x, y) in enumerate(zip(a.args, b.args)) if x is False and y is True]
    out += [k for k, v in a.kwargs.items() if v is False and b.kwargs.get(k) is True]
    return out
