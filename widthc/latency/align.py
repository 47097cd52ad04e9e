"""The channel block of a runtime (`--align auto`), measured.

A runtime that computes in blocks of B channels runs fastest at multiples of B: onnxruntime's
CPU convolutions reorder tensors into NCHWc blocks (8 channels with AVX2, 16 with AVX-512),
pad a count to the next block, and fall back to other kernels for other counts. Measured here
(AVX-512, onnxruntime 1.31): a stack of 1x1 convs at 32 channels ran in 143 us, at 31 in 161 us,
at 36 (padded to 48) in 254 us. The signature of such a block is that one more channel, to
reach a multiple of B, makes the model *faster*: stacks of DEPTH convs (1x1, 3x3, depthwise
3x3, on a 28x28 input; a stack, so that the runtime's reordering at the ends weighs little, as
inside a network) are timed at every count from 4 to 64; a kind's block is the smallest B of
CANDIDATES at most of whose multiples m t(m) / t(m - 1) is below FASTER, and the runtime's is
the largest over the kinds (1 where no kind has one: a runtime without blocks). Measured on
this machine: onnxruntime-cpu 16 (1x1 and 3x3 convs 16, depthwise 4), torch-cpu 16 (its
depthwise convs; its 1x1 and 3x3 convs have none). Bins aligned to B (`--align auto`) keep every
width on counts the runtime runs at full speed, and the latency model counts channels rounded
up to B. Cached per machine and runtime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from widthc.latency import cache, timing
from widthc.latency.runtimes import Runtime

__all__ = ["CANDIDATES", "COUNTS", "block_of", "channel_block"]

COUNTS = range(4, 65)
CANDIDATES = (2, 4, 8, 16, 32)
KINDS = {"conv 1x1": (1, False), "conv 3x3": (3, False), "depthwise 3x3": (3, True)}
SIZE, DEPTH, ROUNDS = 28, 6, 15
FASTER = 0.97  # t(m) / t(m - 1) below this: the step to the multiple is faster, not noise
SHARE = 0.75  # ... at this share of the multiples at least


def channel_block(runtime: Runtime, cache_root: Path, echo=print) -> int:
    """The runtime's channel block, measured once per machine (cached)."""
    path = cache.folder(cache_root, runtime) / "block.json"
    data = cache.read(path) or {}
    ms = data.get("ms")
    if data.get("counts") == list(COUNTS) and isinstance(ms, dict) and set(ms) == set(KINDS):
        return block_of(ms)  # the times are what is cached; the rule reads them afresh
    echo(f"latency: measuring the channel block of {runtime.describe()} (once; cache {path})")
    ms = {kind: _times(runtime, k, dw) for kind, (k, dw) in KINDS.items()}
    block = block_of(ms)
    cache.write(
        path,
        {"block": block, "runtime": runtime.describe(), "clock": runtime.clock,
         "counts": list(COUNTS), "ms": ms, "load": timing.load_average()},
    )  # fmt: skip
    return block


def block_of(ms: dict[str, list[float]]) -> int:
    """The runtime's block from times at COUNTS: per kind of conv, the smallest candidate B at
    whose multiples one more channel makes the stack faster (most of them: SHARE); the largest
    over the kinds (1 where no kind steps down)."""
    counts = list(COUNTS)
    blocks = [1]
    for t in ms.values():
        for b in CANDIDATES:
            steps = [t[counts.index(m)] / t[counts.index(m - 1)] for m in counts if m % b == 0
                     and m >= 8]  # fmt: skip
            if steps and np.mean(np.array(steps) < FASTER) >= SHARE:
                blocks.append(b)
                break
    return max(blocks)


def _times(runtime: Runtime, kernel: int, depthwise: bool) -> list[float]:
    """Median ms of a stack of convs at every channel count of COUNTS, timed side by side."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="widthc-block-") as tmp:
        runners = []
        for c in COUNTS:
            layers = []
            for _ in range(DEPTH):
                groups = c if depthwise else 1
                layers += [nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=groups), nn.ReLU()]
            model = nn.Sequential(*layers).eval()
            runners.append(runtime.runner(model, (torch.randn(1, c, SIZE, SIZE),), Path(tmp)))
        return timing.medians(runners, ROUNDS, runtime.clock)
