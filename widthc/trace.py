"""Tracing: torch.fx with a leaf-module policy (widthc/fx_tracer.py: automatic leaves, defaults,
shape-dependent Python values, batch freedom), then shape propagation from the op registry
(widthc/shape_prop.py, whose names this module also exports).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from widthc import batch, fx_tracer, trace_messages, trace_state
from widthc.errors import TraceError, WidthcError
from widthc.shape_prop import (
    MEASURED,
    VALUE,
    NodeView,
    ShapeCtx,
    ShapeProp,
    propagate_shapes,
    to_value,
)

__all__ = [
    "MEASURED", "VALUE", "NodeView", "ShapeCtx", "Traced", "has_timm_leaves", "propagate_shapes",
    "to_value", "trace", "trace_graph",
]  # fmt: skip

_MAX_AUTO_LEAVES = 256  # retries: each automatic leaf costs one more trace


class Traced:
    """A traced graph and the module it came from: what the analysis passes read.

    Cheaper than an fx.GraphModule (which copies the module tree and compiles Python code:
    a third of the cost of tracing a 4,000-node graph); `Program.gm` builds that lazily.
    `auto_leaves`: (module path, why) of every module traced as a leaf automatically;
    `batch_note`: where the graph holds at the example's batch size only (widthc/batch.py).
    """

    def __init__(self, graph: fx.Graph, root: nn.Module, name: str, auto_leaves: Sequence = ()):
        self.graph, self.root, self.name = graph, root, name
        self.auto_leaves: list[tuple[str, str]] = list(auto_leaves)
        self.batch_note: batch.BatchNote | None = None  # the graph holds at one batch size only

    def named_modules(self):
        return self.root.named_modules()

    def graph_module(self) -> fx.GraphModule:
        gm = fx.GraphModule(self.root, self.graph, self.name)
        gm.eval()
        return gm


def trace_graph(
    model: nn.Module,
    leaves: Sequence = (),
    auto_leaf: bool = True,
    example_inputs: Sequence | None = None,
    timm_leaves: bool | None = None,
) -> Traced:
    """Trace `model` with torch.fx in eval mode. `leaves`: module classes or names not to enter;
    `example_inputs`: the positional inputs (the other arguments keep their defaults; control
    flow on their shapes follows them, see fx_tracer).

    Where tracing fails inside a submodule, or a module stores a traced value on itself, that
    module is traced as a leaf and the trace retried (`auto_leaf`; `Traced.auto_leaves` says
    which and why). timm's own no-trace modules are traced into with `auto_leaf` (they often
    trace: nf* blocks, MobileViT blocks) and are leaves without it (`timm_leaves` decides).
    Raises TraceError naming the user's line and the module to mark as a leaf where no retry
    helps (or `auto_leaf=False`).

    Where a value the graph takes from the example differs at another batch size (widthc/
    batch.py), the model is traced again with the example at that batch size; where that graph
    does not hold at every batch either, or does not compute what the model computes, the
    first graph is kept and `Traced.batch_note` says at which batch it holds and why.
    """
    timm_modules, timm_functions = fx_tracer.timm_leaves()
    if not (not auto_leaf if timm_leaves is None else timm_leaves):
        timm_modules = []  # traced into where torch.fx can (nf*, MobileViT), else a leaf below
    given = fx_tracer.given_inputs(model, None if example_inputs is None else len(example_inputs))
    setup = (model, [*leaves, *timm_modules], timm_functions, given, auto_leaf)
    examples = None if example_inputs is None else tuple(example_inputs)
    if examples is None or not batch.has_batch(examples):
        return _trace_at(*setup, examples, None)[0]
    size = batch.batch_size(examples)
    traced, sites = _trace_at(*setup, examples, batch.at_batch(examples, size + 1))
    if sites:
        wider = batch.at_batch(examples, size + 1)
        try:
            retry, again = _trace_at(*setup, wider, batch.at_batch(examples, size + 2))
        except WidthcError:  # the model does not trace at that batch: keep the first graph
            retry, again = None, sites
        if not again and _computes_like(retry, model, examples):
            return retry
        traced.batch_note = batch.BatchNote(size, *sites[0])
    return traced


def _trace_at(model, leaves, timm_functions, given, auto_leaf, examples, other) -> tuple:
    """(Traced, batch sites): the trace with Python values taken from `examples`, each also
    computed on `other` (the examples at another batch size) where given."""
    evaluate = evaluate_other = None
    if examples is not None:
        evaluate = _evaluator(examples)
    if other is not None:
        evaluate_other = _evaluator(other)
    auto: list[tuple[str, str]] = []
    was_training = model.training
    model.eval()
    try:
        while True:
            all_leaves = [*leaves, *(path for path, _ in auto)]
            args = (all_leaves, timm_functions, given, evaluate, evaluate_other)
            tracer = fx_tracer.Tracer(*args)
            retrace = None if examples is None else _retrace(model, examples, args)
            graph, new_leaves = _attempt(
                tracer, model, auto_leaf and len(auto) < _MAX_AUTO_LEAVES, retrace
            )
            if graph is not None:
                break
            auto += new_leaves
    finally:
        model.train(was_training)
    trace_state.follow_training_flag(graph, model, (all_leaves, timm_functions, given, evaluate))
    return Traced(graph, tracer.root, type(model).__name__, auto), tracer.batch_sites


def _evaluator(examples: tuple):
    return lambda g, root: _in_eval_mode(root, ShapeProp(Traced(g, root, ""), examples).value_of)


def _computes_like(traced: Traced, model: nn.Module, examples: tuple) -> bool:
    """Whether the traced graph computes what the model computes on the example."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return batch.same_outputs(traced.graph_module()(*examples), model(*examples))
    except Exception:  # noqa: BLE001 - a graph that does not run on the example does not hold
        return False
    finally:
        model.train(was_training)


def _in_eval_mode(root: nn.Module, value_of):
    """`value_of` with every module in eval mode while it runs: a leaf that runs for its shape
    during the train-mode trace must not update batch-norm statistics."""

    def run(node):
        modes = [(m, m.training) for m in root.modules()]
        if not any(mode for _, mode in modes):  # the eval-mode trace: nothing to switch
            return value_of(node)
        for m, _ in modes:  # the flags only: a model's own train() may be slow (HF's is)
            m.training = False
        try:
            return value_of(node)
        finally:
            for m, mode in modes:
                m.training = mode

    return run


def _retrace(model: nn.Module, examples: tuple, tracer_args: tuple):
    """The model traced again from the state an eager run on `examples` leaves it in."""

    def again() -> fx.Graph:
        with torch.no_grad():
            model(*examples)
        return fx_tracer.Tracer(*tracer_args).trace(model)

    return again


def _attempt(tracer, model: nn.Module, auto_leaf: bool, retrace=None) -> tuple:
    """(graph, []) or, where a submodule fails or caches a traced value, (None, [(module path,
    why)]) for the modules to trace as leaves; a TraceError where that cannot help. A module
    that stores traced values but traces alike from the state it leaves (`retrace`,
    trace_state.stores_alike) is traced into."""
    saved = trace_state.module_state(model)
    try:
        graph, error = tracer.trace(model), None
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward
        graph, error = None, e
    stored = trace_state.restore_module_state(model, saved)
    if error is not None:
        path = tracer.failure_path(error)
        if not auto_leaf or not path:
            raise TraceError(trace_messages.trace_message(model, error, path)) from error
        return None, [(path[-1], trace_messages.leaf_reason(error))]
    if stored and retrace is not None and trace_state.stores_alike(model, graph, retrace):
        return graph, []
    if stored and (not auto_leaf or any(not path for path, _ in stored)):
        path, why = min(stored)
        raise TraceError(f"torch.fx cannot trace `{path or type(model).__name__}`: {why}")
    return (None, stored) if stored else (graph, [])


def trace(model: nn.Module, leaves: Sequence = (), auto_leaf: bool = True) -> fx.GraphModule:
    """`trace_graph` as an fx.GraphModule (in eval mode)."""
    return trace_graph(model, leaves, auto_leaf).graph_module()


def has_timm_leaves(model: nn.Module) -> bool:
    """Whether `model` holds a module timm marks as not traceable."""
    kinds = tuple(fx_tracer.timm_leaves()[0])
    return bool(kinds) and any(isinstance(m, kinds) for m in model.modules())
