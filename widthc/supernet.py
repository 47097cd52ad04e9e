"""The CafeNet supernet runtime: a `Program` run at any width, sliced or masked (DESIGN §6).

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

The plan (passes/slicing.py) is the one `slim` reads too, so the two cannot disagree. Sliced,
a sub-network at 50% FLOPs costs about 50% of the full network's compute: the choice on a CPU.
`private_bn`: each batch norm's scale and shift is its row for the width (private_rows.py).

Masked execution (`execution="masked"`, the default on accelerators) keeps every tensor at full
width, so every width presents the same shapes: each tensor the plan shrinks is multiplied by
its keep-mask, and values made non-zero at removed channels are zeroed again where
passes/masking.py says. Outputs and gradients equal sliced execution's; a model where they
would not runs sliced, and `masking.reason` says why. `capture_ready`: every searchable tensor
masked every step, in one function of the masks (widthc/capture.py: for torch.compile).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import fx, nn

from widthc import swaps as sw
from widthc.capture import CaptureReady
from widthc.config import EXECUTIONS
from widthc.errors import WidthcError
from widthc.ir import WidthChoice
from widthc.options import COMPILE_NEEDS_MASKED, private_bn_refusal
from widthc.passes.masking import MASKS, mask_plan, rewrite_masks
from widthc.passes.rewrite import SIZES, at, rewrite_literals
from widthc.passes.slicing import SlicePlan, make_plan
from widthc.private_rows import PrivateRows, rows_of
from widthc.swaps import Applied, Swap, Target

__all__ = ["Supernet", "device_of", "supernet"]


class Supernet(nn.Module):
    """The CafeNet supernet of a program: `set_choice(choice)`, then call it like the model.
    `execution`: "sliced", "masked", or "auto" (masked on accelerators where exact, else sliced).
    `private_bn`: batch norms own a scale and shift per width (widthc/private_rows.py)."""

    def __init__(self, program, offset=1, cache_size=64, execution="auto", private_bn=False):
        super().__init__()
        if offset < 0:
            raise WidthcError(f"the offset r must be 0 or more, got {offset}")
        if execution not in EXECUTIONS:
            raise WidthcError(f"execution must be one of {', '.join(EXECUTIONS)}: {execution!r}")
        self.masking = mask_plan(program)  # where masked execution zeroes, or why it cannot
        if execution == "masked" and self.masking.reason is not None:
            raise WidthcError(
                f"masked execution would differ from sliced execution on this model "
                f"({self.masking.reason}): use execution='sliced' or 'auto'"
            )
        self.execution = execution
        self._graphs: dict[str, fx.GraphModule] = {}  # masked graph, built on first use
        self.program, self.offset = program, offset
        self.gm, self._slots = rewrite_literals(program.gm)
        self._full_sizes = tuple(getattr(self.gm, SIZES).values)
        self._src_nodes = {n.name: n for n in program.gm.graph.nodes}
        self._src_modules = dict(program.gm.named_modules())
        self._buffer_slots = [(m, b) for m in self.gm.modules() for b in m._buffers]  # probing
        self._targets = sw.targets(self.gm, program.param_dims)
        self._resizable = sw.resizable(program.gm, self._src_modules, program.param_dims)
        self._n_bins = {g.id: len(g.bins) for g in program.searchable}
        self._cache_size, self._cache = cache_size, OrderedDict()  # choice -> Applied, LRU
        self._parts: dict = {}  # (part, widths of the groups it depends on) -> resolved part
        self._choice, self._probing = program.full(), False
        self._fixed: Applied | None = None  # `running`: tensors resolved by the caller
        self._capture: CaptureReady | None = None  # `capture_ready`
        self._batch_note = program.traced.batch_note  # the graph holds at this batch only
        self.private = PrivateRows(program, self.gm) if private_bn else None

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
    def running(self, applied: Applied) -> Iterator[None]:
        """Forwards inside run `applied` (masked execution: a candidate chosen on the device,
        widthc/stacked.py) instead of resolving the current choice, which only names the width."""
        was, self._fixed = self._fixed, applied
        try:
            yield
        finally:
            self._fixed = was

    def capture_ready(self, compile: bool = False) -> Supernet:
        """Forwards from now on capture-ready (widthc/capture.py), `compile`d or not; needs
        masked execution on the supernet's device (a device running sliced ignores it)."""
        device = device_of(self.gm)
        if (mode := self.mode(device)) != "masked":
            raise WidthcError(COMPILE_NEEDS_MASKED.format(mode))
        if self.private is not None:
            raise WidthcError(private_bn_refusal("compile"))
        self._capture = CaptureReady(self.gm, self.graph("capture"), device, compile)
        self._cache.clear()  # resolved again with every tensor
        return self

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

    def mode(self, device: torch.device | None = None) -> str:
        """How forwards run on `device` (default: the supernet's): "sliced" or "masked"."""
        if self.execution != "auto":
            return self.execution
        device = device if device is not None else device_of(self.gm)
        return "masked" if device.type != "cpu" and self.masking.reason is None else "sliced"

    def graph(self, mode: str) -> fx.GraphModule:
        """The GraphModule that runs `mode` (sharing the model's modules and weights)."""
        if mode == "sliced":
            return self.gm
        if mode not in self._graphs:  # a plain dict: not a submodule, not in the state dict
            sites, capture = self.masking.sites, mode == "capture"
            self._graphs[mode] = rewrite_masks(self.gm, sites, capture)  # reads its tensors
            self._graphs[mode].train(self.training)
        return self._graphs[mode]

    def train(self, mode: bool = True) -> Supernet:
        """Train or eval mode, also of the masked graph (its own `training` flag is read by
        traced code: stochastic depth's `self.training`)."""
        super().train(mode)
        for gm in self.__dict__.get("_graphs", {}).values():
            gm.train(mode)
        return self

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
        device = device_of(self.gm)
        mode = self.mode(device)
        gm = self.graph(mode)
        fixed = self._fixed if mode == "masked" else None
        applied = fixed if fixed is not None else self.applied(self._choice, device, mode)
        keep = self._probing and self.training
        if self._capture is not None and mode == "masked":
            return self._capture(applied, inputs, kwargs, keep, self.training and not keep)
        if applied is None and not keep:
            return gm(*inputs, **kwargs)
        rows = rows_of(self.private, self._choice)
        with rows, self._entered(applied, gm, private=keep, write_back=self.training and not keep):
            return gm(*inputs, **kwargs)

    @contextlib.contextmanager
    def isolated(
        self, choice: WidthChoice, execution: str | None = None
    ) -> Iterator[fx.GraphModule]:
        """`choice` as a plain network, for scoring: its sliced weights gathered once (detached
        copies), every buffer a private copy, module attributes and literal sizes set. Run the
        yielded module as often as needed, batch-norm recalibration in train mode included:
        nothing it does reaches the supernet, which is bit-for-bit unchanged afterwards.
        `execution` ("sliced": the reference `widthc.slim` is proved against) overrides the
        supernet's own."""
        self.program.validate(choice)
        device = device_of(self.gm)
        mode = execution or self.mode(device)
        if mode == "masked" and self.masking.reason is not None:
            raise WidthcError(f"masked execution is not exact here ({self.masking.reason})")
        gm = self.graph(mode)
        applied = self.applied(choice, device, mode)
        was_training = self.training
        try:
            with torch.inference_mode(), rows_of(self.private, choice):
                with self._entered(applied, gm, private=True, write_back=False):
                    yield gm
        finally:
            self.train(was_training)

    @contextlib.contextmanager
    def _entered(self, applied: Applied | None, gm, private: bool, write_back: bool):
        """Swap in the sliced (or masked) tensors, module attributes, literal sizes and zeroing
        masks of `applied` for `gm`, and put everything back on exit. `private`: every buffer
        is a copy and sliced parameters are gathered contiguous copies (probing, scoring);
        `write_back`: the kept positions of sliced buffers are written back into the full ones
        (training)."""
        swaps = applied.swaps if applied is not None else ()
        if private:
            swaps = swaps + sw.untouched_buffers(self._buffer_slots, swaps)
        holder = getattr(gm, MASKS, None)
        originals = []
        try:
            for s in swaps:
                store = getattr(s.owner, s.store) if s.store != "__dict__" else s.owner.__dict__
                full = store[s.attr]
                originals.append((store, full))
                store[s.attr] = s.take(full, private)
            if applied is not None:
                for module, new, _ in applied.attrs:
                    module.__dict__.update(new)
                getattr(self.gm, SIZES).values[:] = applied.sizes
                if holder is not None and applied.sites:
                    holder.values[:] = applied.sites
            yield
        finally:
            for s, (store, full) in zip(swaps, originals):
                taken = store[s.attr]
                store[s.attr] = full
                if write_back and s.is_buffer and taken is not full:
                    s.write_back(full, taken)
            if applied is not None:
                for module, _, old in applied.attrs:
                    module.__dict__.update(old)
                getattr(self.gm, SIZES).values[:] = self._full_sizes
                if holder is not None:
                    holder.values[:] = [None] * len(holder.values)

    def applied(
        self, choice: WidthChoice, device: torch.device, mode: str | None = None
    ) -> Applied | None:
        """What running `choice` on `device` in `mode` changes (None: nothing), cached."""
        mode = mode or self.mode(device)
        key = (choice, device, mode)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        resolve = self._resolve if mode == "sliced" else self._resolve_masked
        with torch.inference_mode(False):  # index tensors made in a probe serve backward too
            applied = resolve(choice, device)
        self._cache[key] = applied
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return applied

    def _started(self, choice: WidthChoice, every: bool = False):
        """(widths, the groups `choice` shrinks, its plan built on first use); None: full
        (`every`: resolved all the same, capture-ready)."""
        widths = dict(choice.widths)
        shrunk = {g for g, w in widths.items() if w.k < self._n_bins[g]}
        if not shrunk and not every:
            return None
        if len(self._parts) > 100_000:
            self._parts.clear()
        plan: list[SlicePlan] = []

        def the_plan() -> SlicePlan:
            if not plan:
                plan.append(make_plan(self.program, choice))
            return plan[0]

        return widths, shrunk, the_plan

    def _resolve(self, choice: WidthChoice, device: torch.device) -> Applied | None:
        """Read the plan of `choice`: which tensors to slice how, which module attributes and
        literals change. Each tensor's slices (and each module's attributes) depend only on the
        widths of the groups it carries, so they are cached by those: a new choice mostly
        reuses parts that earlier choices resolved, and builds its plan only on a miss."""
        if (started := self._started(choice)) is None:
            return None
        widths, shrunk, the_plan = started
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

    def _resolve_masked(self, choice: WidthChoice, device: torch.device) -> Applied | None:
        """Masked execution's plan of `choice`: every tensor the plan shrinks with its keep-mask,
        every zeroing site with its mask of removed channels (cached by group widths, as in
        `_resolve`); no attribute or literal changes: every shape stays the full one.
        Capture-ready: every searchable tensor and site, whatever the width."""
        every = self._capture is not None
        if (started := self._started(choice, every)) is None:
            return None
        widths, shrunk, the_plan = started

        def keep(lay, dtype=torch.bool) -> torch.Tensor | None:
            """Kept positions along a dim of layout `lay`, as a vector of `dtype` (cached)."""
            key = ("keep", lay, device, dtype, every, tuple(widths.get(g) for g in lay.groups))
            if key not in self._parts:
                if dtype != torch.bool:
                    vec = keep(lay)
                    self._parts[key] = None if vec is None else vec.to(dtype)
                    return self._parts[key]
                idx = None if shrunk.isdisjoint(lay.groups) else the_plan().positions(lay)
                if idx is None and every:  # one vector per layout: inputs alias alike
                    idx = torch.arange(lay.size)
                self._parts[key] = None if idx is None else sw.keep_vector(idx, lay.size, device)
            return self._parts[key]

        swaps = []
        for i, t in enumerate(self._targets):
            if shrunk.isdisjoint(t.groups) and not every:
                continue
            dtype = sw.store_of(t.owner, t.attr)[1].dtype
            key = ("mask", i, device, dtype, every, tuple(widths.get(g) for g in t.groups))
            if key not in self._parts:  # views of cached vectors: no kernel in a steady state
                found = [(dim, keep(lay), keep(lay, dtype)) for dim, lay in t.dims]
                self._parts[key] = sw.mask_swap(t, found)
            if self._parts[key].keep is not None:
                swaps.append(self._parts[key])
        sites = []
        for i, site in enumerate(self.masking.sites):
            removed = None
            if not shrunk.isdisjoint(site.groups) or every:
                key = ("site", i, device, every, tuple(widths.get(g) for g in site.groups))
                if key not in self._parts:
                    found = [
                        (d, keep(lay)) for d, lay in enumerate(site.layouts) if lay is not None
                    ]
                    self._parts[key] = sw.removed_mask(len(site.layouts), found)
                removed = self._parts[key]
            sites.append(removed)
        return Applied(tuple(swaps), (), self._full_sizes, tuple(sites))

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


def supernet(program, offset: int = 1, execution: str = "auto", private_bn=False) -> Supernet:
    """The CafeNet supernet of `program`, locally free offset `offset` (DESIGN §6); with
    `private_bn`, batch norms own a scale and shift per width (`Supernet.private`)."""
    return Supernet(program, offset, execution=execution, private_bn=private_bn)


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's (first) parameter; the CPU for a module without any."""
    return next(module.parameters(), torch.empty(0)).device
