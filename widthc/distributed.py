"""Distributed training helpers: torchrun's environment, DDP, and the collectives min-min needs.

All ranks draw the same widths and candidates from a shared seed; candidate losses are averaged
over ranks before the minimum is taken, so every rank backpropagates the same candidate.
Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

from widthc.errors import WidthcError


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device: str) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device."""
    if not under_torchrun():
        raise WidthcError(
            "--distributed needs the environment torchrun sets up: run "
            "`torchrun --nproc_per_node N -m widthc train ...`"
        )
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        torch.cuda.set_device(local)
        backend, dev = "nccl", torch.device("cuda", local)
    else:
        backend, dev = "gloo", torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dev


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def mean(t: torch.Tensor) -> torch.Tensor:
    """The average of `t` over ranks (a copy; `t` itself when not distributed)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(net: torch.nn.Module) -> torch.nn.Module:
    """`net` inside DistributedDataParallel when distributed, else `net` itself."""
    if not active():
        return net
    from torch.nn.parallel import DistributedDataParallel

    device = next(net.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly.

    DDP's reducer sits in reference cycles, so without a collection it is freed only at
    interpreter exit, after the group is gone, where gloo aborted the process ("terminate called
    without an active exception") in about one run in six. Collect it first, and let every rank
    arrive before any tears the group down.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
