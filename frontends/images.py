"""Image folders on disk, read with torchvision (widthc never downloads).

- `imagefolder:PATH`: `PATH/train/CLASS/*` and `PATH/val/CLASS/*` (ImageNet's layout); test is
  `val/`, the search's validation split is 10% of `train/` by seed. ImageNet's transforms:
  random-resized crop and flip for training, resize and center crop for val and test.
- `cifar10:PATH`: torchvision's `CIFAR10` python files under `PATH/cifar-10-batches-py`; test is
  CIFAR's test set, validation 10% of the training set by seed. The paper's augmentation: random
  crop 32 with padding 4 and horizontal flip.

The validation split reads the training files with the evaluation transforms (no augmentation).
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch.utils.data import Dataset, Subset

from widthc.errors import WidthcError

from .splits import DataSplits, part, partition
from .tensors import VAL_FRACTION

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR10_HELP = (
    "download CIFAR-10's python version (cifar-10-python.tar.gz) on a machine with internet, "
    "unpack it there and pass the folder that holds cifar-10-batches-py; widthc never downloads"
)


def imagefolder(path: str, input_shape: tuple[int, ...], seed: int) -> DataSplits:
    datasets, t = _torchvision()
    root = Path(path)
    layout = "PATH/train/CLASS/*.jpg and PATH/val/CLASS/*.jpg, one folder per class"
    if not root.is_dir():
        raise WidthcError(f"imagefolder:{path}: no such folder; expected {layout}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise WidthcError(f"imagefolder:{path} has no {split}/ folder; expected {layout}")
    c, h, w = _image_shape(input_shape, f"imagefolder:{path}")
    side = int(round(min(h, w) / 0.875))  # ImageNet's 256 -> 224
    train_tf = t.Compose([t.RandomResizedCrop((h, w)), t.RandomHorizontalFlip()])
    eval_tf = t.Compose([t.Resize(side), t.CenterCrop((h, w))])
    try:
        train = datasets.ImageFolder(root / "train", transform=_finish(train_tf, c, IMAGENET_STATS))
        test = datasets.ImageFolder(root / "val", transform=_finish(eval_tf, c, IMAGENET_STATS))
    except OSError as e:  # torchvision: "Couldn't find any class folder", "Found no valid file"
        raise WidthcError(
            f"imagefolder:{path} holds no images where expected ({e}); expected {layout}"
        ) from e
    if test.classes != train.classes:
        raise WidthcError(
            f"imagefolder:{path}: val/ has other class folders than train/ "
            f"({len(test.classes)} vs {len(train.classes)}); give both the same class folders"
        )
    return _split_train(train, test, eval_tf, c, IMAGENET_STATS, seed, f"imagefolder:{path}")


def cifar10(path: str, input_shape: tuple[int, ...], seed: int) -> DataSplits:
    datasets, t = _torchvision()
    if not Path(path).is_dir():
        raise WidthcError(f"cifar10:{path}: no such folder; {CIFAR10_HELP}")
    c, h, w = _image_shape(input_shape, f"cifar10:{path}")
    resize = [t.Resize((h, w))] if (h, w) != (32, 32) else []
    train_tf = t.Compose([*resize, t.RandomCrop((h, w), padding=4), t.RandomHorizontalFlip()])
    eval_tf = t.Compose(resize)
    try:
        train = datasets.CIFAR10(path, train=True, transform=_finish(train_tf, c, CIFAR10_STATS))
        test = datasets.CIFAR10(path, train=False, transform=_finish(eval_tf, c, CIFAR10_STATS))
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise WidthcError(f"cifar10:{path} holds no CIFAR-10 files; {CIFAR10_HELP}") from e
    return _split_train(train, test, eval_tf, c, CIFAR10_STATS, seed, f"cifar10:{path}")


def _split_train(train, test, eval_tf, c, stats, seed, name) -> DataSplits:
    """train minus a seeded validation part; the validation part without augmentation."""
    unaugmented = copy.copy(train)  # shares the file list: one folder scan
    unaugmented.transform = _finish(eval_tf, c, stats)
    n = len(train)
    val_idx, train_idx = partition(n, seed, part(n, VAL_FRACTION))
    val: Dataset = Subset(unaugmented, val_idx.tolist())
    return DataSplits(
        Subset(train, train_idx.tolist()),
        val,
        test,
        classes=len(train.classes),
        name=name,
        note="val 10% of the training images by seed (without augmentation)",
    )


def _image_shape(input_shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    shape = "x".join(str(s) for s in input_shape)
    if len(input_shape) != 4:
        raise WidthcError(
            f"{name} holds images, but the model takes an input of shape {shape}: "
            f"give --input-shape N,C,H,W (e.g. 1,3,32,32)"
        )
    c, h, w = input_shape[1:]
    if c not in (1, 3):
        raise WidthcError(
            f"{name} holds RGB images, but the model takes {c} input channels: "
            f"give --input-shape with 3 (or 1 for grey) channels"
        )
    return c, h, w


def _finish(geometry, c: int, stats):
    """geometry, then grey if the model takes one channel, then a normalised tensor."""
    t = _torchvision()[1]
    mean, std = stats
    if c == 1:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    grey = [t.Grayscale(1)] if c == 1 else []
    return t.Compose([geometry, *grey, t.ToTensor(), t.Normalize(mean, std)])


def _torchvision():
    """(torchvision.datasets, torchvision.transforms)."""
    try:
        from torchvision import datasets, transforms
    except ImportError as e:
        raise WidthcError("image data needs torchvision: pip install 'widthc[zoo]'") from e
    return datasets, transforms
