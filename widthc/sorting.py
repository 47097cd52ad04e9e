"""Channels sorted during supernet training (`--sort-every`; Once-for-All's elastic width,
DS-Net): every few epochs each searchable group's channels are put in order of importance at
full width, most important first, so that the channels a narrow width keeps (the left-most
bins, DESIGN §6) are those the whole network found most important, not the ones that happened
to be first.

A sort is a change of coordinates, not of the function: the supernet's weights and buffers
and the optimizer's state of them (SGD's momentum) are permuted alike, in place (the
optimizer, DDP and a compiled step keep the very same tensors), so the full width computes
what it computed and the next step is the step the unsorted supernet would have taken, in
permuted coordinates. Narrow widths change: they now keep other channels.

The orders are `widthc.order_channels`'s (passes/order.py permutes): proved on a copy of the
model before the live weights move; a group whose permutation alone changes the outputs stays
in its order. The importance is l1, l2 or bn (`taylor` would run the training-mode model on
data, moving its batch-norm statistics). With CafeNet's locally free offset (`--offset`) a
width's candidates stay the windows one or more bins to the right of the left-most ones: after
a sort they hold the next most important channels, which is what the offset was for (a narrow
width may move off channels the wide widths load most).

`--sort-warmup W` is Once-for-All's order: the first W epochs train the full width alone (one
candidate, no probes), their end sorts the channels, and min-min over all widths follows.

A sort reads no random state and depends only on the weights, so a resumed run sorts where
and as the uninterrupted run did; it runs at an epoch end, before that epoch's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from widthc.ops.reparam import recompute, tensor_at
from widthc.options import SORTS
from widthc.ordering import order_channels
from widthc.passes import order

__all__ = [
    "SORTS", "Sorted", "at_epoch_end", "due", "permute_supernet", "sort_supernet", "warmup_width",
]  # fmt: skip


@dataclass(frozen=True)
class Sorted:
    """What one sort did (logged as one line of train.jsonl)."""

    epoch: int
    method: str
    moved: int  # groups whose order changed
    groups: int  # groups sorted (left-alone ones excluded)
    error: float  # relative error of the sorted model's full-width outputs (the proof's)

    def record(self) -> dict:
        return {"sorted": self.method, "moved": self.moved, "groups": self.groups,
                "error": self.error}  # fmt: skip


def due(epoch: int, every: int, epochs: int, warmup: int = 0) -> bool:
    """Whether the end of `epoch` (0-based) sorts: every `every` epochs and at the end of a
    `warmup` of that many epochs; never after the last (its narrow widths would then keep
    channels they were never trained on)."""
    periodic = every > 0 and (epoch + 1) % every == 0
    return (periodic or epoch + 1 == warmup) and epoch + 1 < epochs


def warmup_width(net, cfg, trainer):
    """`--sort-warmup W` (Once-for-All): the full width during the first W epochs, else None."""
    warm = cfg.sort_warmup and trainer.step < cfg.sort_warmup * trainer.steps_per_epoch
    return net.program.full() if warm else None


def at_epoch_end(net, opt: torch.optim.Optimizer, cfg, epoch: int) -> dict | None:
    """Sort `net` by `cfg.sort_by` at the end of `epoch` if `cfg.sort_every` or
    `cfg.sort_warmup` says so (every random state left as it was); the sort's record, or None."""
    if not due(epoch, cfg.sort_every, cfg.epochs, cfg.sort_warmup):
        return None
    device = next(net.parameters(), torch.empty(0)).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return sort_supernet(net, opt, cfg.sort_by, epoch).record()


@torch.no_grad()
def sort_supernet(net, opt: torch.optim.Optimizer | None, method: str, epoch: int = 0) -> Sorted:
    """Sort `net`'s channels by `method` importance in place, with `opt`'s per-parameter state
    of the same shape (momentum) permuted alike (see the module docstring)."""
    program = net.program
    ordering = order_channels(program, method=method)  # proved on a copy; live weights unmoved
    orders = {g: o for g, o in ordering.orders.items() if not torch.equal(o, torch.arange(len(o)))}
    permute_supernet(net, orders, opt)
    return Sorted(epoch, method, len(orders), len(ordering.orders), ordering.error)


@torch.no_grad()
def permute_supernet(net, orders: dict, opt: torch.optim.Optimizer | None = None) -> None:
    """Put the channels of each group `g` of `orders` in the order `orders[g]` (the old index
    at each new position), in place: `net`'s weights and buffers, and `opt`'s state of them."""
    if not orders:
        return
    program = net.program
    live = _tensors(program)
    values = {target: t.detach() for target, t in live.items()}
    for target, t in order.permuted_tensors(program, orders, values).items():
        live[target].copy_(t)
    if opt is not None:
        _permute_state(program, orders, opt, live)
    for module in program.gm.modules():
        recompute(module)  # weights an old-style weight-norm hook keeps, from their sources


def _tensors(program) -> dict[str, torch.Tensor]:
    """Every parameter and buffer laid out on a group, by its first name (tied ones once)."""
    seen, out = set(), {}
    for target in program.param_dims:
        t = tensor_at(program.gm, target)
        if id(t) not in seen:
            seen.add(id(t))
            out[target] = t
    return out


def _permute_state(program, orders, opt: torch.optim.Optimizer, live: dict) -> None:
    """Permute every state tensor of `opt` shaped like its parameter (SGD's momentum buffer)."""
    states = {}
    for target, t in live.items():
        for key, value in opt.state.get(t, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == t.shape:
                states[(target, key)] = value
    for target, key in states:
        new = order.permuted_tensors(program, orders, {target: states[(target, key)]})
        states[(target, key)].copy_(new[target])
