"""`widthc.compile`: trace and analyse a model into a `Program` (DESIGN §11, analysis half)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import gc
from collections.abc import Sequence

import numpy as np
import torch
from torch import fx, nn

from widthc import space, trace
from widthc.batch import batch_size
from widthc.errors import InternalError, WidthcError
from widthc.ir import ChannelGroup, WidthChoice
from widthc.passes import bins as bins_pass
from widthc.passes import flops as flops_pass
from widthc.passes.coupling import Coupling, couple

__all__ = ["Program", "compile"]


class Program:
    """A traced, analysed model: its channel groups, bins, and FLOPs/params as functions of a
    width. `gm` shares its modules (and so its weights) with the user's model.

    FLOPs are per sample: the count on the example inputs divided by their batch size (the
    first dimension of the first input), so a budget means the same for any example batch.
    A program is a value: `rebin` returns a new one; its groups and bins never change."""

    def __init__(
        self, traced, example_inputs, coupling: Coupling, flops_table, params_table, beta, align=1
    ):
        self.traced: trace.Traced = traced
        self._gm: fx.GraphModule | None = None
        self.example_inputs: tuple = example_inputs
        self.coupling = coupling
        self.param_dims = coupling.param_dims
        self._flops = flops_table
        self._params = params_table
        self.beta = beta
        self.align = align
        self.uniform_bins: int | None = None  # K equal bins per group instead of eq. 9's
        self.batch = batch_size(example_inputs)
        self.space = space.WidthSpace(coupling.groups)
        self._block_sizes = np.array([g.block_size for g in self.groups], dtype=np.float64)
        self._cum = {g.id: [0, *np.cumsum(g.bins).tolist()] for g in self.searchable}
        self._flops_of = flops_table.partial(self.space.ids, self._block_sizes)
        self._params_of = params_table.partial(self.space.ids, self._block_sizes)

    @property
    def gm(self) -> fx.GraphModule:
        """The traced model as an fx.GraphModule (built on first use; shares the weights)."""
        if self._gm is None:
            self._gm = self.traced.graph_module()
        return self._gm

    # --- groups and bins -----------------------------------------------------------------------

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.coupling.groups

    @property
    def searchable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.searchable]

    @property
    def bins(self) -> dict[int, tuple[int, ...]]:
        """Bin sizes of every searchable group, by group id."""
        return {g.id: g.bins for g in self.searchable}

    @property
    def binning(self) -> str:
        """The key of this program's bins: widths carry it, and widths of another binning are
        refused (multi-stage search holds several binnings at once)."""
        return self.space.key

    def group(self, gid: int) -> ChannelGroup:
        return self.groups[gid]

    def rebin(self, beta: float, align: int | None = None, uniform: int | None = None) -> Program:
        """The same graph and groups with bins for another beta (multi-stage search), another
        channel alignment, or (`uniform=K`) K bins of equal channel count per group instead of
        FLOPs-sensitive ones: a new program; this one is unchanged."""
        align = self.align if align is None else align
        groups = bins_pass.binned(self.groups, beta, align, uniform)
        coupling = Coupling(groups, self.coupling.param_dims)
        program = Program(
            self.traced, self.example_inputs, coupling, self._flops, self._params, beta, align
        )
        program._gm = self._gm
        program.uniform_bins = uniform
        return program

    def with_model(self, gm: fx.GraphModule) -> Program:
        """The same analysis on `gm`, a copy of this program's `gm` with other weights (the
        same nodes and tensor shapes): channels permuted by importance (passes/order.py)."""
        shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
        nodes = lambda m: [n.name for n in m.graph.nodes]  # noqa: E731
        if shapes(gm) != shapes(self.gm) or nodes(gm) != nodes(self.gm):
            raise InternalError("with_model() needs a copy of the program's graph module")
        traced = trace.Traced(gm.graph, gm, self.traced.name, self.traced.auto_leaves)
        program = Program(
            traced, self.example_inputs, self.coupling, self._flops, self._params, self.beta,
            self.align,
        )  # fmt: skip
        program._gm = gm
        program.uniform_bins = self.uniform_bins
        return program

    # --- costs --------------------------------------------------------------------------------

    def counts(self, choice: WidthChoice | None = None) -> np.ndarray:
        """Channels kept per block in each group (all groups, frozen ones at full width)."""
        c = self._block_sizes.copy()
        if choice is None:
            return c
        if choice.binning not in (None, self.binning):
            self.validate(choice)  # raises: another binning
        for gid, w in choice.widths:
            cum = self._cum.get(gid)
            if cum is None or not 1 <= w.k < len(cum):
                self.validate(choice)  # raises with the reason
            if w.free:
                c[gid] = sum(self.groups[gid].bins[b] for b in w.active_bins())
            else:
                c[gid] = cum[w.k]
        return c

    def flops(self, choice: WidthChoice | None = None) -> float:
        """Multiply-accumulates of one forward pass, per sample."""
        return self._flops.evaluate(self.counts(choice)) / self.batch

    def params(self, choice: WidthChoice | None = None) -> float:
        return self._params.evaluate(self.counts(choice))

    def flops_many(self, widths: np.ndarray) -> np.ndarray:
        """FLOPs per sample of every row of `widths` (bins per searchable group, in the order of
        `space.ids`; the left-most pattern, an upper bound for every candidate)."""
        return self._flops_of(self.space.searchable_counts(widths)) / self.batch

    def params_many(self, widths: np.ndarray) -> np.ndarray:
        return self._params_of(self.space.searchable_counts(widths))

    @property
    def flops_table(self) -> flops_pass.CostTable:
        """FLOPs of the example batch as terms over channel layouts, by layer (not per sample)."""
        return self._flops

    @functools.cached_property
    def activations_table(self) -> flops_pass.CostTable:
        """Elements of every node's output as terms over channel layouts, by layer."""
        return flops_pass.activations_table(self.traced, len(self.groups))

    def flops_by_layer(self, choice: WidthChoice | None = None) -> dict[str, float]:
        return {k: v / self.batch for k, v in self._flops.per_owner(self.counts(choice)).items()}

    # --- widths ---------------------------------------------------------------------------------

    def full(self) -> WidthChoice:
        return self.space.choice(self.space.full())

    def smallest(self) -> WidthChoice:
        return self.space.choice(self.space.smallest())

    def uniform(self, flops: float | None = None, ratio: float | None = None) -> WidthChoice:
        """The same share of channels in every group: `ratio`, or the largest share whose FLOPs
        meet the budget `flops`."""
        if (flops is None) == (ratio is None):
            raise WidthcError("uniform() takes exactly one of flops= or ratio=")
        if ratio is not None:
            if not 0 < ratio <= 1:
                raise WidthcError(f"the width ratio must be in (0, 1], got {ratio}")
            return self.space.choice(space.at_ratio(self.space, ratio)[0])
        return self.space.choice(space.uniform(self.space, self.flops_many, flops))

    def random(self, seed: int, flops: float | None = None) -> WidthChoice:
        """A width drawn uniformly over bins; with `flops`, moved to meet that budget and filled
        up until no group can grow by one bin."""
        rng = np.random.default_rng(seed)
        if flops is not None:
            space.check_budget(self.space, self.flops_many, flops)
        return self.space.choice(space.random(self.space, self.flops_many, rng, flops))

    def candidates(self, choice: WidthChoice, offset: int = 1) -> list[WidthChoice]:
        return space.candidates(self.groups, choice, offset)

    def check_budget(self, budget: float) -> None:
        """A WidthcError stating the reachable range when `budget` is out of it."""
        space.check_budget(self.space, self.flops_many, budget)

    def validate(self, choice: WidthChoice) -> WidthChoice:
        """Raise a WidthcError if `choice` names unknown or frozen groups, bad widths, or counts
        bins of another binning."""
        if choice.binning not in (None, self.binning):
            raise WidthcError(
                f"this width counts bins of another binning ({choice.binning}) than the "
                f"program's ({self.binning}, beta {self.beta:g}, align {self.align}): build it "
                f"from this program, or rebin the program it came from"
            )
        for gid, _ in choice.widths:
            if not 0 <= gid < len(self.groups) or not self.groups[gid].searchable:
                raise WidthcError(f"width choice names group {gid}, which is not searchable here")
            choice.active_bins(self.groups[gid])
        return choice

    # --- reports --------------------------------------------------------------------------------

    def to_json(self) -> dict:
        # channels at each group's first conv/linear producer (every piece and head of it)
        conv_channels = sum(len(g.producers) and g.width for g in self.groups)
        searchable_channels = sum(len(g.producers) and g.width for g in self.searchable)
        return {
            "model": self.traced.name,
            "input_shapes": [
                list(x.shape) for x in self.example_inputs if isinstance(x, torch.Tensor)
            ],
            "beta": self.beta,
            "align": self.align,
            "uniform_bins": self.uniform_bins,
            "binning": self.binning,
            "flops": self.flops(),
            "flops_per": "sample",
            "params": self.params(),
            "flops_unit": flops_pass.UNIT,
            "groups": [g.to_json() for g in self.groups],
            "searchable_groups": len(self.searchable),
            "fixed_by_bins": [g.id for g in bins_pass.fixed_by_bins(self.groups)],
            "searchable_channel_fraction": searchable_channels / conv_channels
            if conv_channels
            else 0.0,
            "search_space_log10": bins_pass.n_widths(self.groups),
            "batch_note": None if self.traced.batch_note is None else str(self.traced.batch_note),
        }


def _traced(model, inputs: tuple, leaves, auto_leaf: bool):
    """The traced model with its shapes. timm's no-trace modules are traced into first; where
    the graph that gives cannot run on the example (a mask built for eager mode), again with
    them as leaves."""
    try:
        gm = trace.trace_graph(model, leaves, auto_leaf, example_inputs=inputs)
        trace.propagate_shapes(gm, inputs)
        return gm
    except WidthcError:
        if not auto_leaf or not trace.has_timm_leaves(model):
            raise
    gm = trace.trace_graph(model, leaves, auto_leaf, example_inputs=inputs, timm_leaves=True)
    trace.propagate_shapes(gm, inputs)
    return gm


def compile(  # noqa: A001 - the public name the design gives
    model: nn.Module,
    example_inputs,
    beta: float = 1.0,
    leaves: Sequence = (),
    align: int = 1,
    auto_leaf: bool = True,
) -> Program:
    """Trace `model` on `example_inputs` (a tensor or a tuple) and analyse its channels.

    `beta`: the minimum bin size of eq. 9; `leaves`: module classes or names not to trace into;
    `align`: bin boundaries on multiples of this many channels (8 gives faster kernels);
    `auto_leaf`: trace a submodule torch.fx fails in as a leaf (`program.traced.auto_leaves`)."""
    if not isinstance(model, nn.Module):
        raise WidthcError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not beta > 0:
        raise WidthcError(f"beta (the minimum bin size) must be positive, got {beta}")
    if int(align) != align or align < 1:
        raise WidthcError(f"align must be a whole number of channels, 1 or more, got {align}")
    inputs = (
        tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    )
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tracing creates many small objects: the collector took ~20% of the time
    try:
        return _compile(model, inputs, beta, leaves, align, auto_leaf)
    finally:
        if gc_was_enabled:
            gc.enable()


def _compile(model, inputs, beta, leaves: Sequence, align: int, auto_leaf=True) -> Program:
    if isinstance(model, fx.GraphModule) and not leaves:  # analyse a copy of its graph
        gm = trace.Traced(copy.deepcopy(model.graph), model, model.__class__.__name__)
    else:
        gm = _traced(model, inputs, leaves, auto_leaf)
    if isinstance(model, fx.GraphModule) and not leaves:
        trace.propagate_shapes(gm, inputs)
    coupling = couple(gm, inputs)
    table = flops_pass.flops_table(gm, len(coupling.groups))
    params = flops_pass.params_table(gm, coupling)
    batch = batch_size(inputs)
    sensitivities = bins_pass.sensitivity(coupling.groups, table)
    groups = [
        dataclasses.replace(g, sensitivity=float(eps) / batch)
        for g, eps in zip(coupling.groups, sensitivities)
    ]
    groups = bins_pass.binned(groups, beta, align)
    return Program(gm, inputs, Coupling(groups, coupling.param_dims), table, params, beta, align)
