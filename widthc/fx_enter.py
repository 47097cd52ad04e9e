"""Functions that a library marks as not traceable but the op registry has no rule for
(timm's `reshape_pre_pool` in MViTv2): torch.fx would record each call as one opaque node,
which freezes every channel it touches. widthc traces into them instead, and where that fails
(control flow on tensor data, say), the nodes the attempt made are erased and the call is
recorded as one node, as torch.fx's autowrap would have recorded it."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterable

from torch import fx

from widthc.tree import leaves as flat


@contextlib.contextmanager
def entered(tracer: fx.Tracer, functions: Iterable[Callable]):
    """While the block runs, each function (by its name in its own module's globals, where
    its module's models call it) is traced into, or recorded as one call by `tracer`."""
    saved = []
    for f in functions:
        module = sys.modules.get(getattr(f, "__module__", ""))
        name = getattr(f, "__name__", "")
        if module is not None and getattr(module, name, None) is f:
            saved.append((module, name, f))
            setattr(module, name, _into(tracer, f))
    try:
        yield
    finally:
        for module, name, f in saved:
            setattr(module, name, f)


def _into(tracer: fx.Tracer, f: Callable) -> Callable:
    @functools.wraps(f)
    def call(*args, **kwargs):
        if not any(isinstance(v, fx.Proxy) for v in flat((args, kwargs))):
            return f(*args, **kwargs)
        graph = tracer.graph
        last = next(reversed(graph.nodes))
        try:
            return f(*args, **kwargs)
        except Exception:  # noqa: BLE001 - not traceable after all: one opaque call
            node = next(reversed(graph.nodes))
            while node is not last:
                before = node.prev
                graph.erase_node(node)
                node = before
            return tracer.create_proxy("call_function", f, args, kwargs)

    return call
