"""Evaluating one sub-network of a supernet: accuracy after batch-norm recalibration.

The supernet's running statistics are shared by every sub-network that trained them, so they
belong to none: before a sub-network is scored its statistics are re-estimated on a few training
batches (DESIGN §8), and afterwards every buffer, the mode and the choice are put back, so that
evaluating never changes the supernet (nor the random state: calibration may run dropout).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data import default_collate as _collate

from widthc.ir import WidthChoice
from widthc.passes.rewrite import Supernet


@torch.no_grad()
def evaluate(
    net: Supernet,
    choice: WidthChoice,
    data: Dataset,
    batch_size: int = 256,
    calibration: list | None = None,
) -> float:
    """Top-1 accuracy of `choice` on `data`, in eval mode. With `calibration` batches, batch-norm
    statistics are first re-estimated for this choice (DESIGN §8); every buffer is restored
    afterwards, so evaluating never changes the supernet."""
    device = device_of(net)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _kept(net):
        # fork_rng: calibration's dropout must not move the training's random state
        net.set_choice(choice)
        if calibration:
            recalibrate(net, [x.to(device) for x, _ in calibration])
        net.eval()
        correct = 0
        for start in range(0, len(data), batch_size):
            x, y = batch(data, torch.arange(start, min(start + batch_size, len(data))))
            out = net(x.to(device))
            correct += int((out.argmax(-1).cpu() == y).sum())
        return correct / len(data)


@contextlib.contextmanager
def _kept(net: Supernet):
    """Buffers, mode and choice of `net` as they were before, whatever happens inside."""
    buffers = list(net.buffers())
    saved = [b.clone() for b in buffers]
    was_training, prev = net.training, net.choice
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)
        net.train(was_training)
        net.set_choice(prev)


def recalibrate(net: Supernet, batches: list) -> None:
    """Re-estimate every batch norm's running statistics for the current choice: reset, then a
    cumulative average over `batches` in training mode (the kept channels' statistics only)."""
    norms = [
        m
        for m in net.modules()
        if hasattr(m, "reset_running_stats") and getattr(m, "track_running_stats", False)
    ]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
        net.train()
        for x in batches:
            net(x)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom


def batch(data: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, labels) at positions `idx` of a dataset of (input, label) pairs."""
    if isinstance(data, TensorDataset):
        x, y = data.tensors[0][idx], data.tensors[1][idx]
    else:
        x, y = _collate([data[int(i)] for i in idx])
    return x, torch.as_tensor(y, dtype=torch.long)


def device_of(net: torch.nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")
