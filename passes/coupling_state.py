"""The state of the coupling walk (passes/coupling.py): what every node's entry is, which
parameter dims are bound to which channels, and the facts that a rule records for the end."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import fx

from widthc.errors import Reason
from widthc.ir import Layout
from widthc.ops.reparam import Reparam
from widthc.passes.atoms import Atoms, ParamVar
from widthc.trace import ShapeProp

__all__ = ["CouplingState"]


class CouplingState(Atoms):
    """The coupling walk's state: atoms and their unions (Atoms), the entry of every node,
    parameter dims bound to channels, tied weights, and the literal rewrites found."""

    def __init__(self, gm, examples=None, switched: frozenset[str] | set[str] = frozenset()):
        super().__init__()
        self.gm = gm
        self.switched = frozenset(switched)  # layers that read their channels the second way
        self.examples = examples  # the example inputs, where given: sizes at another batch
        self.other: ShapeProp | None = None
        self.modules = dict(gm.named_modules())
        self.binding: dict[tuple[str, int], object] = {}
        self.entries: dict[fx.Node, object] = {}
        self.rewrites: dict[fx.Node, list] = defaultdict(list)
        self.param_users: dict[str, list[str]] = defaultdict(list)
        # one tensor under several names (tied weights) is one set of ParamVars, under the
        # first name met; `names` lists every name of it, `tensors` keeps ids unique
        self.canonical: dict[int, str] = {}
        self.names: dict[str, dict[str, None]] = defaultdict(dict)
        self.tensors: list[torch.Tensor] = []
        # weights computed from stored tensors (weight norm): name -> (module path, Reparam)
        self.computed: dict[str, tuple[str, Reparam]] = {}
        self.after_rule: list[tuple[str, ParamVar, str]] = []  # (sink|mix, dim, why)
        self.why_fixed: dict[tuple[str, int], Reason] = {}  # tensor dims sunk before any use
        # tensor dims an op mixed before any layer gave them channels (a filter's mean over its
        # input channels): (dim, layer) - where they get channels, those channels are mixed
        self.mixed_vars: list[tuple[ParamVar, str]] = []

    def walk_again(self, wanted: set[str]) -> CouplingState:
        """A fresh state to walk the graph again with the `wanted` ops switched too."""
        again = CouplingState(self.gm, self.examples, self.switched | wanted)
        again.other = self.other  # the graph at another batch size, if this walk ran it
        return again

    # --- entries ---------------------------------------------------------------------------------

    def resolve(self, e):
        """What an entry stands for now: a Layout (refined atoms expanded), a ParamVar not
        decided yet, or None."""
        while isinstance(e, ParamVar):
            key = (e.target, e.dim)
            if key not in self.binding:
                return e
            e = self.binding[key]
        return self.expand(e) if isinstance(e, Layout) else e

    def tensor_name(self, name: str, tensor: torch.Tensor) -> str:
        """The name under which `tensor` is analysed: the first name it was met under."""
        if id(tensor) not in self.canonical:
            self.canonical[id(tensor)] = name
            self.tensors.append(tensor)
        first = self.canonical[id(tensor)]
        self.names[first][name] = None
        return first

    def fixed_reason(self, e) -> Reason | None:
        """Why a tensor dim that resolves to a fixed width was fixed, where a rule said so."""
        while isinstance(e, ParamVar):
            key = (e.target, e.dim)
            if key in self.why_fixed:
                return self.why_fixed[key]
            e = self.binding.get(key)
        return None

    def bind(self, var: ParamVar, e) -> None:
        self.binding[(var.target, var.dim)] = e

    def freeze(self, layout: Layout, reason: Reason) -> None:
        for s in self.expand(layout).segments:
            if reason not in self.frozen[s.group]:
                self.frozen[s.group].append(reason)

    def union(self, a: Layout, b: Layout, reason: Reason) -> None:
        if not self.unite_layouts(a, b):
            why = Reason(
                f"{reason.why}: channel structures differ (concatenated or repeated)",
                reason.node,
                reason.op,
            )
            self.freeze(a, why)
            self.freeze(b, why)
