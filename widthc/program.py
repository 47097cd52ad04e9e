"""`widthc.compile`: trace and analyse a model into a `Program` (DESIGN §11, analysis half)."""

from __future__ import annotations

import copy
import gc
from collections.abc import Sequence

import numpy as np
import torch
from torch import fx, nn

from widthc import space, trace
from widthc.errors import WidthcError
from widthc.ir import ChannelGroup, WidthChoice
from widthc.passes import bins as bins_pass
from widthc.passes import flops as flops_pass
from widthc.passes.coupling import Coupling, couple


class Program:
    """A traced, analysed model: its channel groups, bins, and FLOPs/params as functions of a
    `WidthChoice`. `gm` shares its modules (and so its weights) with the user's model."""

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

    def group(self, gid: int) -> ChannelGroup:
        return self.groups[gid]

    def rebin(self, beta: float, align: int | None = None) -> Program:
        """The same graph and groups with bins for another beta (multi-stage search) or
        another channel alignment."""
        align = self.align if align is None else align
        groups = [copy.copy(g) for g in self.groups]
        bins_pass.assign_bins(groups, beta, align)
        coupling = Coupling(groups, self.coupling.param_dims)
        program = Program(
            self.traced, self.example_inputs, coupling, self._flops, self._params, beta, align
        )
        program._gm = self._gm
        return program

    # --- costs --------------------------------------------------------------------------------

    def counts(self, choice: WidthChoice | None = None) -> np.ndarray:
        """Channels kept per block in each group (all groups, frozen ones at full width)."""
        c = np.array([g.block_size for g in self.groups], dtype=np.float64)
        if choice is not None:
            for gid, _ in choice.widths:
                g = self.groups[gid]
                c[gid] = g.channels(choice.active_bins(g))
        return c

    def flops(self, choice: WidthChoice | None = None) -> float:
        """Multiply-accumulates of one forward pass on the example inputs."""
        return self._flops.evaluate(self.counts(choice))

    def params(self, choice: WidthChoice | None = None) -> float:
        return self._params.evaluate(self.counts(choice))

    def flops_by_layer(self, choice: WidthChoice | None = None) -> dict[str, float]:
        return self._flops.per_owner(self.counts(choice))

    # --- widths ---------------------------------------------------------------------------------

    def full(self) -> WidthChoice:
        return space.full(self.groups)

    def smallest(self) -> WidthChoice:
        return space.smallest(self.groups)

    def uniform(self, flops: float | None = None, ratio: float | None = None) -> WidthChoice:
        return space.uniform(self.groups, self.flops, flops, ratio)

    def random(self, seed: int, flops: float | None = None) -> WidthChoice:
        return space.random(self.groups, self.flops, seed, flops)

    def candidates(self, choice: WidthChoice, offset: int = 1) -> list[WidthChoice]:
        return space.candidates(self.groups, choice, offset)

    def validate(self, choice: WidthChoice) -> WidthChoice:
        """Raise a WidthcError if `choice` names unknown or frozen groups or bad widths."""
        for gid, _ in choice.widths:
            if not 0 <= gid < len(self.groups) or not self.groups[gid].searchable:
                raise WidthcError(f"width choice names group {gid}, which is not searchable here")
            choice.active_bins(self.groups[gid])
        return choice

    # --- reports --------------------------------------------------------------------------------

    def to_json(self) -> dict:
        conv_channels = sum(len(g.producers) and g.n for g in self.groups)
        searchable_channels = sum(len(g.producers) and g.n for g in self.searchable)
        return {
            "model": self.traced.name,
            "input_shapes": [
                list(x.shape) for x in self.example_inputs if isinstance(x, torch.Tensor)
            ],
            "beta": self.beta,
            "align": self.align,
            "flops": self.flops(),
            "params": self.params(),
            "flops_unit": flops_pass.UNIT,
            "groups": [g.to_json() for g in self.groups],
            "searchable_groups": len(self.searchable),
            "searchable_channel_fraction": searchable_channels / conv_channels
            if conv_channels
            else 0.0,
            "search_space_log10": bins_pass.n_widths(self.groups),
        }


def compile(  # noqa: A001 - the public name the design gives
    model: nn.Module,
    example_inputs,
    beta: float = 1.0,
    leaves: Sequence = (),
    align: int = 1,
) -> Program:
    """Trace `model` on `example_inputs` (a tensor or a tuple) and analyse its channels.

    `beta`: the minimum bin size of eq. 9; `leaves`: module classes or names not to trace into;
    `align`: bin boundaries on multiples of this many channels (8 gives faster kernels)."""
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
        return _compile(model, inputs, beta, leaves, align)
    finally:
        if gc_was_enabled:
            gc.enable()


def _compile(model, inputs: tuple, beta: float, leaves: Sequence, align: int) -> Program:
    if isinstance(model, fx.GraphModule) and not leaves:  # analyse a copy of its graph
        gm = trace.Traced(copy.deepcopy(model.graph), model, model.__class__.__name__)
    else:
        gm = trace.trace_graph(model, leaves)
    trace.propagate_shapes(gm, inputs)
    coupling = couple(gm)
    table = flops_pass.flops_table(gm, len(coupling.groups))
    params = flops_pass.params_table(gm, coupling)
    for g, eps in zip(coupling.groups, bins_pass.sensitivity(coupling.groups, table)):
        g.sensitivity = float(eps)
    bins_pass.assign_bins(coupling.groups, beta, align)
    return Program(gm, inputs, coupling, table, params, beta, align)
