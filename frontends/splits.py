"""The three data splits of a run, and the seeded partition every source cuts them with.

train: supernet training and retraining; val: the search's score (the paper's D_val); test: the
reported accuracy, never seen by training or search (the source's own test set where it has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from widthc.errors import WidthcError


@dataclass
class DataSplits:
    """train / val / test datasets of (input, label) pairs; `classes` is None when the labels are
    not class indices; `synthetic` data is random (smoke runs only); `note` says how the splits
    were made where that is not the source's own layout."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: int | None
    name: str
    synthetic: bool = False
    note: str = ""


def part(n: int, fraction: float) -> int:
    """The size of a `fraction` of `n` items: rounded, at least 1."""
    return max(1, int(round(fraction * n)))


def partition(n: int, seed: int, *sizes: int) -> list[torch.Tensor]:
    """Disjoint index tensors covering range(n): the given sizes in order, then the rest, cut
    from one seeded permutation (the same seed gives the same split on every machine)."""
    if sum(sizes) >= n:
        raise WidthcError(f"cannot split {n} samples into parts of {', '.join(map(str, sizes))}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cuts = torch.tensor(sizes).cumsum(0).tolist()
    return [order[a:b] for a, b in zip([0, *cuts], cuts)] + [order[cuts[-1] :]]


def subset(data: Dataset, idx: torch.Tensor) -> Dataset:
    """`data` at positions `idx`: a TensorDataset stays one (widthc.evaluate's fast path)."""
    if isinstance(data, TensorDataset):
        return TensorDataset(*(t[idx] for t in data.tensors))
    return Subset(data, idx.tolist())


def class_count(data: Dataset) -> int | None:
    """1 + the largest label, or None when labels are not integers (a dict, a mask, ...)."""
    while isinstance(data, Subset):  # the classes of the whole set, not of this part
        data = data.dataset
    if getattr(data, "classes", None) is not None:  # torchvision's folders and CIFAR
        return len(data.classes)
    try:
        if isinstance(data, TensorDataset):
            labels = data.tensors[1]
        else:
            labels = torch.as_tensor([data[i][1] for i in range(len(data))])
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        return None
    return int(labels.max()) + 1
