"""Capture-ready masked execution: one forward whose structure does not depend on the width, so
that `torch.compile` (and CUDA graphs under it) trace it once (issue 15).

Plain masked execution (widthc/supernet.py) swaps into the modules' own stores only the tensors
the current width shrinks, and its zeroing sites read Python state (`widthc_masks.values[i]`:
None or a mask). Which tensors a forward reads, and how, changes with the width, so a compiled
forward would be traced again for new widths. A capture-ready supernet
(`Supernet.capture_ready`) instead resolves, for every width,
- the keep-mask of every searchable tensor (all true along a dim whose groups keep their
  width), and
- the removed-channels mask of every zeroing site (all false where nothing is removed),
and `CaptureReady` runs the masked graph as one function of (the full tensors, those masks, the
inputs) through `torch.func.functional_call`: the masks are tensor inputs whose values change
with the width, never Python state. Multiplying by one and filling nothing are exact, so the
outputs, gradients and running statistics are masked execution's, bit for bit.

With `compile`, that function runs through `torch.compile` (`dynamic=False`; on CUDA
`mode="reduce-overhead"`: CUDA graphs): traced once per batch shape, train or eval mode,
probing or not and grad mode, never again for a new width. A forward under `torch.func.vmap`
(min-min's stacked probes, widthc/stacked.py) runs the same function eagerly.
"""

from __future__ import annotations

import itertools
import types

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import tree_map

from widthc.passes.masking import MASKS
from widthc.swaps import Applied, product, store_of

__all__ = ["CaptureReady", "compile_options"]

_SERIAL = itertools.count()


def compile_options(device: torch.device) -> dict:
    """torch.compile's options on `device`: one graph per input shape (no dynamic shapes); on
    CUDA, CUDA graphs (mode "reduce-overhead"); inductor's default elsewhere."""
    return {"dynamic": False, "mode": "reduce-overhead" if device.type == "cuda" else None}


class CaptureReady:
    """The masked forward of a supernet as one function of its full tensors, one width's masks
    and the inputs; `compile`: run it through torch.compile."""

    def __init__(self, net: nn.Module, gm: nn.Module, device: torch.device, compile: bool):
        self.gm, self.compiled = gm, compile
        self.names = {  # (id(owner), attr) -> the tensor's name in `gm`
            (id(m), attr): f"{prefix}.{attr}" if prefix else attr
            for prefix, m in net.named_modules(remove_duplicate=False)
            for attr in (*m._parameters, *m._buffers, *m.__dict__)
        }
        n_sites = len(gm.get_submodule(MASKS).values)
        self.sites = tuple(f"{MASKS}.m{i}" for i in range(n_sites))  # rewrite_masks' buffers
        self.buffers = [(n, b) for n, b in gm.named_buffers() if not n.startswith(f"{MASKS}.")]
        self.run = _forward(gm, self.sites)
        self.cuda = device.type == "cuda"
        if compile:
            for _, t in (*gm.named_parameters(), *self.buffers) if self.cuda else ():
                torch._dynamo.mark_static_address(t)  # updated in place: not copied per replay
            self.run_compiled = torch.compile(_own_code(self.run), **compile_options(device))

    def __call__(self, applied: Applied, args, kwargs, private: bool, write_back: bool):
        """Run `applied` (resolved for every searchable tensor and site) on `args`. `private`:
        every buffer is a copy (probing); `write_back`: the kept positions of the masked
        buffers a training forward updated go back into the full ones."""
        swaps = applied.swaps
        names = tuple(self.names[(id(s.owner), s.attr)] for s in swaps)
        covered = set(names)
        others = [(n, b) for n, b in self.buffers if private and n not in covered]
        layout = (
            names,
            tuple(s.is_buffer for s in swaps),
            tuple(n for n, _ in others),
            write_back,
        )
        fulls = [store_of(s.owner, s.attr)[1] for s in swaps]
        keeps = [s.keep for s in swaps]
        scales = [s.scale for s in swaps]
        inputs = (layout, fulls, keeps, scales, list(applied.sites), [b for _, b in others])
        if not self.compiled or torch._C._functorch.maybe_current_level() is not None:
            return self.run(*inputs, args, kwargs)  # under vmap (stacked probes): eagerly
        out = self.run_compiled(*inputs, args, kwargs)
        # a CUDA graph's outputs are overwritten by its next replay; a caller may keep them
        # (distillation's teacher): eager copies, a kernel each
        return tree_map(lambda t: t.clone() if torch.is_tensor(t) else t, out) if self.cuda else out


def _own_code(fn):
    """`fn` with a code object of its own: torch.compile keeps its graphs per code object
    (guarded, at most `recompile_limit` of them), so every supernet gets its own."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_SERIAL)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _forward(gm: nn.Module, sites: tuple[str, ...]):
    """The function that is compiled: its Python structure (`layout`) is the same for every
    width of a capture-ready supernet; only tensor values change."""

    def run(layout, fulls, keeps, scales, removed, others, args, kwargs):
        names, is_buffer, other_names, write_back = layout
        tensors = {}
        for name, buffer, full, keep, scale in zip(names, is_buffer, fulls, keeps, scales):
            tensors[name] = torch.where(product(keep), full, 0) if buffer else full * product(scale)
        tensors.update(zip(sites, removed))
        tensors.update((n, b.clone()) for n, b in zip(other_names, others))  # private copies
        out = functional_call(gm, tensors, args, kwargs, tie_weights=False, strict=False)
        if write_back:
            for name, buffer, full, keep in zip(names, is_buffer, fulls, keeps):
                if buffer:
                    full.copy_(torch.where(product(keep), tensors[name], full))
        return out

    return run
