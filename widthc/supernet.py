"""The CafeNet supernet runtime: a `Program` run at any width with sliced execution (DESIGN §6).

`Supernet` owns the program's modules and weights (the very same objects as `program.gm`).
`set_choice(choice)` then `net(*inputs)` runs exactly that sub-network:
- every parameter and buffer the slicing plan shrinks is replaced, for the duration of the
  forward, by `index_select` of the full tensor at the kept positions (a `narrow` view where
  they are one range), so gradients reach the shared full-width tensors and the positions left
  out get exactly zero gradient;
- module attributes (depthwise `groups`, LayerNorm `normalized_shape`, ...) are resized from the
  op registry via the plan, and restored afterwards;
- literal channel counts in the graph (`x.view(n, 256)`) read the current choice: the graph is
  rewritten once (passes/rewrite.py) so that each such literal reads a value set per choice;
- in training mode, sliced buffers (batch-norm running statistics) are written back at their
  kept positions only, so the other channels' statistics stay bit-identical.

The plan (passes/slicing.py) is the one `slim` reads too, so the two cannot disagree. No masking:
a sub-network at 50% FLOPs costs about 50% of the full network's compute.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import fx, nn

from widthc import swaps as sw
from widthc.errors import WidthcError
from widthc.ir import WidthChoice
from widthc.passes.rewrite import SIZES, at, rewrite_literals
from widthc.passes.slicing import SlicePlan, make_plan
from widthc.swaps import Applied, Swap, Target

__all__ = ["Supernet", "device_of", "supernet"]


class Supernet(nn.Module):
    """The CafeNet supernet of a program: `set_choice(choice)`, then call it like the model."""

    def __init__(self, program, offset: int = 1, cache_size: int = 64):
        super().__init__()
        if offset < 0:
            raise WidthcError(f"the offset r must be 0 or more, got {offset}")
        self.program = program
        self.offset = offset
        self.gm, self._slots = rewrite_literals(program.gm)
        self._full_sizes = tuple(getattr(self.gm, SIZES).values)
        self._src_nodes = {n.name: n for n in program.gm.graph.nodes}
        self._src_modules = dict(program.gm.named_modules())
        self._buffer_slots = [
            (m, name) for m in self.gm.modules() for name in m._buffers
        ]  # every buffer, for probing
        self._targets = sw.targets(self.gm, program.param_dims)
        self._resizable = sw.resizable(program.gm, self._src_modules, program.param_dims)
        self._n_bins = {g.id: len(g.bins) for g in program.searchable}
        self._cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()  # choice -> Applied, least recently used out
        self._parts: dict = {}  # (part, widths of the groups it depends on) -> resolved part
        self._choice = program.full()
        self._probing = False
        self._batch_note = program.traced.batch_note  # the graph holds at this batch only

    # --- choosing a sub-network ------------------------------------------------------------------

    @property
    def choice(self) -> WidthChoice:
        return self._choice

    def set_choice(self, choice: WidthChoice) -> None:
        """Run `choice` on every following forward (validated against the program)."""
        self.program.validate(choice)
        self._choice = choice

    def candidates(self, choice: WidthChoice) -> list[WidthChoice]:
        """The sub-networks of `choice`'s width under this supernet's offset (DESIGN §6)."""
        return self.program.candidates(choice, self.offset)

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Forwards inside leave every buffer untouched (min-min's candidate evaluation): running
        statistics are updated only by the sub-network that is trained."""
        was, self._probing = self._probing, True
        try:
            yield
        finally:
            self._probing = was

    # --- running it ----------------------------------------------------------------------------------

    def forward(self, *inputs, **kwargs):
        note = self._batch_note
        if (
            note is not None
            and inputs
            and getattr(inputs[0], "shape", (note.size,))[0] != note.size
        ):
            raise WidthcError(
                f"{note}; run it at batch size {note.size} (--batch-size {note.size})"
            )
        applied = self._applied(self._choice, device_of(self.gm))
        keep = self._probing and self.training
        if applied is None and not keep:
            return self.gm(*inputs, **kwargs)
        with self._entered(applied, private=keep, write_back=self.training and not keep):
            return self.gm(*inputs, **kwargs)

    @torch.no_grad()
    def decay_used(self, choices: list[WidthChoice], weight_decay: float) -> None:
        """Add weight decay to the gradients of the positions that `choices` used, and only
        those: a parameter no choice slices is decayed whole, a sliced one at its kept
        positions (the union over `choices`). With the optimizer's own decay off, channels
        outside the trained sub-networks then keep their values (without momentum)."""
        device = device_of(self.gm)
        masks: dict[int, torch.Tensor | None] = {}  # id(param) -> kept positions; None: all
        for choice in choices:
            applied = self._applied(choice, device)
            sliced = {
                (id(s.owner), s.attr): s
                for s in (applied.swaps if applied is not None else ())
                if not s.is_buffer and s.store == "_parameters"
            }
            for module in self.gm.modules():
                for attr, param in module._parameters.items():
                    if param is None or masks.get(id(param), True) is None:
                        continue
                    s = sliced.get((id(module), attr))
                    if s is None:
                        masks[id(param)] = None  # used whole
                    else:
                        kept = sw.kept_mask(param.shape, s.slices, device)
                        masks[id(param)] = masks[id(param)] | kept if id(param) in masks else kept
        for param in self.parameters():
            if param.grad is None or id(param) not in masks:
                continue
            mask = masks[id(param)]
            decay = param if mask is None else param * mask
            param.grad.add_(decay, alpha=weight_decay)

    @contextlib.contextmanager
    def isolated(self, choice: WidthChoice) -> Iterator[fx.GraphModule]:
        """`choice` as a plain network, for scoring: its sliced weights gathered once (detached
        copies), every buffer a private copy, module attributes and literal sizes set. Run the
        yielded module as often as needed, batch-norm recalibration in train mode included:
        nothing it does reaches the supernet, which is bit-for-bit unchanged afterwards."""
        self.program.validate(choice)
        applied = self._applied(choice, device_of(self.gm))
        was_training = self.training
        try:
            with torch.inference_mode(), self._entered(applied, private=True, write_back=False):
                yield self.gm
        finally:
            self.train(was_training)

    @contextlib.contextmanager
    def _entered(self, applied: Applied | None, private: bool, write_back: bool):
        """Swap in the sliced tensors, module attributes and literal sizes of `applied`, and put
        everything back on exit. `private`: every buffer is a copy and sliced parameters are
        gathered contiguous copies (probing, scoring); `write_back`: the kept positions of
        sliced buffers are written back into the full ones (training)."""
        swaps = applied.swaps if applied is not None else ()
        if private:
            swaps = swaps + self._untouched_buffers(swaps)
        originals = []
        try:
            for s in swaps:
                store = getattr(s.owner, s.store) if s.store != "__dict__" else s.owner.__dict__
                full = store[s.attr]
                originals.append((store, full))
                if not s.slices:
                    t = full.clone()  # a private copy
                elif private and not s.is_buffer and not torch.is_grad_enabled():
                    t = s.apply(full).contiguous()  # gathered once, for every batch
                else:
                    t = s.apply(full)
                store[s.attr] = t
            if applied is not None:
                for module, new, _ in applied.attrs:
                    module.__dict__.update(new)
                getattr(self.gm, SIZES).values[:] = applied.sizes
            yield
        finally:
            for s, (store, full) in zip(swaps, originals):
                sliced = store[s.attr]
                store[s.attr] = full
                if write_back and s.is_buffer and sliced is not full:
                    with torch.no_grad():
                        sw.index_copy(full, s.slices, sliced)
            if applied is not None:
                for module, _, old in applied.attrs:
                    module.__dict__.update(old)
                getattr(self.gm, SIZES).values[:] = self._full_sizes

    def _untouched_buffers(self, swaps) -> tuple[Swap, ...]:
        """Every buffer no swap covers, as a swap that only copies it (for probing)."""
        covered = {(id(s.owner), s.attr) for s in swaps}
        return tuple(
            Swap(m, "_buffers", name, (), True, ())
            for m, name in self._buffer_slots
            if m._buffers.get(name) is not None and (id(m), name) not in covered
        )

    def _applied(self, choice: WidthChoice, device: torch.device) -> Applied | None:
        key = (choice, device)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.inference_mode(False):  # index tensors made in a probe serve backward too
            applied = self._resolve(choice, device)
        self._cache[key] = applied
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return applied

    def _resolve(self, choice: WidthChoice, device: torch.device) -> Applied | None:
        """Read the plan of `choice`: which tensors to slice how, which module attributes and
        literals change. Each tensor's slices (and each module's attributes) depend only on the
        widths of the groups it carries, so they are cached by those: a new choice mostly
        reuses parts that earlier choices resolved, and builds its plan only on a miss."""
        widths = dict(choice.widths)
        shrunk = {g for g, w in widths.items() if w.k < self._n_bins[g]}
        if not shrunk:
            return None
        if len(self._parts) > 100_000:  # bounded memory over very long runs
            self._parts.clear()
        plan: list[SlicePlan] = []

        def the_plan() -> SlicePlan:
            if not plan:
                plan.append(make_plan(self.program, choice))
            return plan[0]

        swaps, by_name = [], {}
        for i, t in enumerate(self._targets):
            if shrunk.isdisjoint(t.groups):
                continue
            key = ("tensor", i, device, tuple(widths.get(g) for g in t.groups))
            if key not in self._parts:
                self._parts[key] = self._slice(t, widths, the_plan, device)
            swaps.append(self._parts[key])
            by_name[t.name] = self._parts[key]

        attrs = []
        for i, (node, module, groups) in enumerate(self._resizable):
            if shrunk.isdisjoint(groups):
                continue
            key = ("attrs", i, tuple(widths.get(g) for g in groups))
            if key not in self._parts:
                params = {  # the registry's resize rules read the sliced shapes only
                    name: torch.empty(by_name[k].shape, device="meta") if k in by_name else t
                    for name, t in (*module._parameters.items(), *module._buffers.items())
                    if t is not None and (k := f"{node.target}.{name}")
                }
                new = the_plan().module_attrs(self._src_modules, node, params)
                changed = {k: v for k, v in new.items() if getattr(module, k) != v}
                old = {k: getattr(module, k) for k in changed}
                self._parts[key] = (module, changed, old) if changed else None
            if self._parts[key] is not None:
                attrs.append(self._parts[key])

        sizes = list(self._full_sizes)
        for slot, (node_name, path, groups) in enumerate(self._slots):
            if shrunk.isdisjoint(groups):
                continue
            key = ("literal", slot, tuple(widths.get(g) for g in groups))
            if key not in self._parts:
                new_args = the_plan().literal_args(self._src_nodes[node_name])
                self._parts[key] = sizes[slot] if new_args is None else at(new_args, path)
            sizes[slot] = self._parts[key]
        return Applied(tuple(swaps), tuple(attrs), tuple(sizes))

    def _slice(self, t: Target, widths: dict, the_plan, device: torch.device) -> Swap:
        found = []
        for dim, lay in t.dims:  # kept positions per layout: shared by many tensors
            key = ("positions", lay, device, tuple(widths.get(g) for g in lay.groups))
            if key not in self._parts:
                idx = the_plan().positions(lay)
                self._parts[key] = None if idx is None else (idx.to(device), sw.as_range(idx))
            if self._parts[key] is not None:
                found.append((dim, self._parts[key]))
        return sw.make_swap(t, found)


def supernet(program, offset: int = 1) -> Supernet:
    """The CafeNet supernet of `program` with locally free offset `offset` (DESIGN §6)."""
    return Supernet(program, offset)


# --- helpers ------------------------------------------------------------------------------------


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's (first) parameter; the CPU for a module without any."""
    return next(module.parameters(), torch.empty(0)).device
