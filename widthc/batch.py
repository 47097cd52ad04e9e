"""The batch dimension of example inputs, and whether a traced graph holds at other batch sizes.

A graph is traced on one example; where the model's Python code branches on a size (`if
batch_size != position_ids.shape[0]:`, transformers' mask helpers), the graph keeps the branch
the example took (widthc/fx_tracer.py). A branch taken at batch 1 may not hold at batch 3, while
training, scoring and ONNX export run other batch sizes. The tracer therefore also evaluates
each such value at a second batch size (`at_batch`) and records where the two differ
(`Tracer.batch_sites`); `trace.trace_graph` then traces again with the example at that
second batch size, and where that does not hold either, the graph is marked as holding at the
example's batch only (`BatchNote`), and export and proofs run at that batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten


@dataclass(frozen=True)
class BatchNote:
    """The traced graph holds at batch `size` only, because of the value at `site`."""

    size: int
    site: str  # the user's line: `file.py:123 (`code`)`
    what: str  # the kind of value: "a condition", "a length", "int()", ...

    def __str__(self) -> str:
        return (
            f"the traced graph holds at batch size {self.size} only: {self.what} at "
            f"{self.site} depends on the batch size"
        )


def batch_size(inputs: Sequence) -> int:
    """The batch size of the example inputs: the first dimension of the first tensor."""
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.ndim >= 1:
            return max(1, int(x.shape[0]))
    return 1


def has_batch(inputs: Sequence) -> bool:
    """Every input is a tensor with a first (batch) dimension of one common size."""
    sizes = {x.shape[0] for x in inputs if isinstance(x, torch.Tensor) and x.ndim >= 1}
    return bool(inputs) and len(sizes) == 1 and all(isinstance(x, torch.Tensor) for x in inputs)


def at_batch(inputs: Sequence, size: int) -> tuple:
    """The example inputs at another batch size: their rows repeated in turn (token ids and
    masks stay valid)."""
    return tuple(x[torch.arange(size) % x.shape[0]] for x in inputs)


def same_outputs(got, want, tolerance: float = 1e-5) -> bool:
    """Two outputs of one structure whose tensors agree (relative to their size)."""
    a = [t for t in tree_flatten(got)[0] if isinstance(t, torch.Tensor)]
    b = [t for t in tree_flatten(want)[0] if isinstance(t, torch.Tensor)]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        scale = torch.linalg.vector_norm(y.double()).item()
        diff = torch.linalg.vector_norm((x - y).double()).item()
        if not diff <= tolerance * max(scale, 1.0):
            return False
    return True
