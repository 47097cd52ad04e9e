"""Min-min's candidates of one width probed in one forward, and chosen on the device (issue 15).

Under masked execution the candidates of a width (its offset's patterns, DESIGN §6) present the
same shapes; only their keep-masks differ. `Stacked` lays those masks out as tables, one row
per candidate (one table per dtype), so that
- `losses` probes every candidate in one forward: `torch.func.vmap` over the rows, each masked
  weight, buffer copy and zeroing mask carrying a leading candidate dim. A convolution becomes
  one grouped convolution, a batch norm one norm over K x C channels: each candidate's batch
  statistics are its own, nothing is shared between candidates. Random ops draw once for all
  (`randomness="same"`), as the sequential probes do, which each start from the same state;
- `chosen(j)` gives the tensors of candidate `j`, a device tensor (the argmin of the losses):
  one `index_select` per table and views of the selected row, so the trained forward runs the
  min-loss candidate without the host reading a loss (no synchronisation per step).
Both go through `Supernet.running`, so the swaps, probing copies and write-backs are the
supernet's own. Sliced execution cannot stack (every candidate slices other positions): it keeps
one forward per candidate, as does a model that vmap cannot run (`MinMinStep` falls back).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import replace

import torch
from torch.func import vmap

from widthc.ir import WidthChoice
from widthc.supernet import Supernet
from widthc.swaps import Applied, Swap

__all__ = ["Stacked"]

_LOOPED = "There is a performance drop because we have not yet implemented the batching rule"


class Stacked:
    """The candidates `cands` of one width on `device`, resolved together (masked execution)."""

    def __init__(self, net: Supernet, cands: list[WidthChoice], device: torch.device):
        applied = [net.applied(c, device, "masked") for c in cands]
        if any(a is None for a in applied) or len({_signature(a) for a in applied}) != 1:
            raise ValueError("the candidates do not share one masked structure")
        self.net, self.cands, self.first = net, cands, applied[0]
        true = torch.ones(1, dtype=torch.bool, device=device)  # buffers' batched copies
        pieces = [[*_pieces(a), true] for a in applied]
        shapes = [tuple(p.shape) for p in pieces[0]]
        if any([tuple(p.shape) for p in ps] != shapes for ps in pieces):
            raise ValueError("the candidates' masks differ in shape")
        self.dtypes = sorted({p.dtype for p in pieces[0]}, key=str)
        self.spec, at = [], dict.fromkeys(self.dtypes, 0)  # per piece: (table, offset, shape)
        for p in pieces[0]:
            t = self.dtypes.index(p.dtype)
            self.spec.append((t, at[p.dtype], p.shape))
            at[p.dtype] += p.numel()
        with torch.inference_mode(False):  # the trained forward differentiates through a row
            self.tables = tuple(  # one cat per dtype: every candidate's row
                torch.cat([p.reshape(-1) for ps in pieces for p in ps if p.dtype == d]).view(
                    len(cands), -1
                )
                for d in self.dtypes
            )
        covered = {(id(s.owner), s.attr) for s in self.first.swaps}
        self.buffers = [
            (m, name, tuple(getattr(m, name).shape))
            for m in net.gm.modules()
            for name, _ in m.named_buffers(recurse=False)
            if (id(m), name) not in covered
        ]

    @classmethod
    def of(cls, net: Supernet, cands: list[WidthChoice], device) -> Stacked | None:
        """The stacked candidates, or None where they cannot stack (sliced execution)."""
        if len(cands) < 2 or net.mode(device) != "masked":
            return None
        try:
            return cls(net, cands, device)
        except ValueError:
            return None

    def losses(self, x, y, loss_fn, autocast=None) -> torch.Tensor:
        """Every candidate's loss on (x, y), from one forward in probing mode (no gradients, no
        buffer updates, every random state as it was), under `autocast` (a context manager)."""
        net = self.net

        def one(rows, x, y):
            with net.running(self._assemble(rows, probing=True)):
                return loss_fn(net(x), y).detach().float()

        devices = [x.device] if x.device.type == "cuda" else []
        with torch.no_grad(), net.probing(), torch.random.fork_rng(devices=devices):
            with autocast if autocast is not None else contextlib.nullcontext():
                with warnings.catch_warnings():  # an op without a batching rule runs per
                    warnings.filterwarnings("ignore", message=_LOOPED)  # candidate: still exact
                    return vmap(one, in_dims=(0, None, None), randomness="same")(self.tables, x, y)

    def chosen(self, j: torch.Tensor) -> Applied:
        """The tensors of candidate `j` (a one-element index tensor on the device), for
        `Supernet.running`: selected on the device, read by nobody on the host."""
        j = j.reshape(1)
        return self._assemble([t.index_select(0, j).view(-1) for t in self.tables], probing=False)

    def _assemble(self, rows, probing: bool) -> Applied:
        """An `Applied` whose masks are views of `rows` (one per table); `probing`: every
        buffer no mask covers is copied too (under vmap: one copy per candidate)."""
        pieces = iter(
            rows[t].narrow(0, at, math.prod(shape)).view(shape) for t, at, shape in self.spec
        )
        swaps = [replace(s, keep=tuple(next(pieces) for _ in s.keep)) for s in self.first.swaps]
        swaps = [
            s if s.scale is None else replace(s, scale=tuple(next(pieces) for _ in s.scale))
            for s in swaps
        ]
        sites = tuple(None if m is None else next(pieces) for m in self.first.sites)
        true = next(pieces).view(())
        if probing:
            swaps += [
                Swap(m, "_buffers", name, (), True, shape, None, keep=(true,))
                for m, name, shape in self.buffers
            ]
        return Applied(tuple(swaps), (), self.first.sizes, sites)


def _pieces(applied: Applied) -> list[torch.Tensor]:
    """The mask tensors of one candidate, in `Stacked._assemble`'s order."""
    return [
        *(f for s in applied.swaps for f in s.keep),
        *(f for s in applied.swaps for f in (s.scale or ())),
        *(m for m in applied.sites if m is not None),
    ]


def _signature(applied: Applied) -> tuple:
    swaps = tuple((id(s.owner), s.attr, len(s.keep), s.scale is None) for s in applied.swaps)
    return swaps, tuple(m is None for m in applied.sites), applied.attrs, applied.sizes
