"""Data sources (`--data`, model-file hooks): three disjoint splits per source, deterministic per
seed, shaped for the model's input; and one clear sentence for every bad input."""

from __future__ import annotations

import os
import pickle
import types

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import widthc
from widthc.frontends.data import DataSplits, load_splits, splits_from_hooks
from widthc.frontends.tensors import mnist1d_arrays


def _rows(ds: TensorDataset) -> set[bytes]:
    return {row.numpy().tobytes() for row in ds.tensors[0]}


def _assert_partition(s: DataSplits, sizes: tuple[int, int, int], total_rows: int) -> None:
    """Sizes as given; no sample in two splits (every bundled sample is unique)."""
    assert (len(s.train), len(s.val), len(s.test)) == sizes
    train, val, test = _rows(s.train), _rows(s.val), _rows(s.test)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == total_rows == sum(sizes)


@pytest.mark.parametrize(
    ("name", "sizes", "shape"),
    [
        ("digits", (1257, 270, 270), (1, 1, 8, 8)),
        ("mnist", (3600, 400, 1000), (1, 1, 28, 28)),
        ("mnist1d", (3600, 400, 1000), (1, 1, 40)),
        ("mnist1d-10k", (7200, 800, 2000), (1, 1, 40)),
    ],
)
def test_bundled_splits(name, sizes, shape):
    s = load_splits(name, shape, seed=0)
    _assert_partition(s, sizes, sum(sizes))
    assert s.name == name and s.classes == 10 and not s.synthetic and s.note
    assert s.train.tensors[0].shape[1:] == shape[1:]
    assert abs(float(s.train.tensors[0].mean())) < 1e-4  # normalised on the train split
    for part in (s.train, s.val, s.test):
        assert set(part.tensors[1].tolist()) == set(range(10))
    again, other = load_splits(name, shape, seed=0), load_splits(name, shape, seed=1)
    assert torch.equal(again.val.tensors[0], s.val.tensors[0])
    assert not torch.equal(other.val.tensors[0], s.val.tensors[0])


def test_mnist1d_test_is_the_sources_own_test_set():
    x_train, y_train, x_test, y_test = mnist1d_arrays()

    def standard(x):  # splits differ only by the train split's normalisation
        return (x - x.mean()) / x.std()

    for seed in (0, 5):
        s = load_splits("mnist1d", (1, 1, 40), seed=seed)
        assert torch.equal(s.test.tensors[1], y_test)
        assert torch.allclose(standard(s.test.tensors[0]), standard(x_test), atol=1e-5)
        labels = s.train.tensors[1].tolist() + s.val.tensors[1].tolist()
        assert sorted(labels) == sorted(y_train.tolist())
    assert mnist1d_arrays() is mnist1d_arrays()  # generated once per process


def test_mnist1d_leaves_global_random_state_alone():
    mnist1d_arrays.cache_clear()
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d_arrays()
    assert np.random.rand() == expected


def test_inputs_resized_and_repeated_to_the_model():
    s = load_splits("digits", (2, 3, 16, 12), seed=0)
    assert s.train.tensors[0].shape[1:] == (3, 16, 12)
    assert torch.equal(s.train.tensors[0][:, 0], s.train.tensors[0][:, 2])
    assert load_splits("mnist1d", (1, 2, 80)).test.tensors[0].shape == (1000, 2, 80)


def test_synthetic():
    s = load_splits("synthetic", (1, 5, 7), seed=3)
    assert s.synthetic and s.classes == 10 and "smoke" in s.note
    assert [len(p) for p in (s.train, s.val, s.test)] == [256, 64, 64]
    assert s.train.tensors[0].shape == (256, 5, 7)
    assert torch.equal(
        load_splits("synthetic", (1, 5, 7), seed=3).test.tensors[0], s.test.tensors[0]
    )


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        ("imagenet", (1, 3, 8, 8), "unknown data source 'imagenet': choose one of digits, mnist, mnist1d, mnist1d-10k, synthetic, imagefolder:PATH, cifar10:PATH"),
        ("digits:/x", (1, 3, 8, 8), "unknown data source 'digits:/x'"),
        ("imagefolder", (1, 3, 8, 8), "--data imagefolder needs a folder: give --data imagefolder:PATH"),
        ("digits", (1, 64), "holds images, .* shape 1x64: give --input-shape N,C,H,W"),
        ("mnist", (1, 1, 28), "holds images"),
        ("mnist1d", (1, 1, 8, 5), "1-D signals of length 40, .* shape 1x1x8x5: give --input-shape N,C,L"),
    ],
)  # fmt: skip
def test_bad_specs(spec, shape, message):
    with pytest.raises(widthc.WidthcError, match=message):
        load_splits(spec, shape)


# --- image folders on disk ----------------------------------------------------------------------


def _image_tree(root, per_class: dict[str, tuple[int, int]]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, (n_train, n_val) in per_class.items():
        for split, n in (("train", n_train), ("val", n_val)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_imagefolder_splits(tmp_path):
    _image_tree(tmp_path, {"cat": (10, 2), "dog": (10, 3)})
    s = load_splits(f"imagefolder:{tmp_path}", (1, 3, 8, 8), seed=0)
    assert (len(s.train), len(s.val), len(s.test), s.classes) == (18, 2, 5, 2)
    assert sorted(s.train.indices + s.val.indices) == list(range(20))  # disjoint, all of train/
    assert str(s.test.root).endswith("val") and s.test.classes == ["cat", "dog"]
    x, y = s.train[0]
    assert x.shape == (3, 8, 8) and y in (0, 1)
    # validation and test: no augmentation, the same tensor every time
    assert torch.equal(s.val[0][0], s.val[0][0]) and torch.equal(s.test[4][0], s.test[4][0])
    assert s.val.indices == load_splits(f"imagefolder:{tmp_path}", (1, 3, 8, 8), seed=0).val.indices
    grey = load_splits(f"imagefolder:{tmp_path}", (1, 1, 6, 6), seed=0)
    assert grey.train[0][0].shape == (1, 6, 6) and grey.test[0][0].shape == (1, 6, 6)


def test_imagefolder_errors(tmp_path):
    layout = "expected PATH/train/CLASS/.*PATH/val/CLASS/"
    with pytest.raises(widthc.WidthcError, match=f"no such folder; {layout}"):
        load_splits(f"imagefolder:{tmp_path / 'absent'}", (1, 3, 8, 8))
    with pytest.raises(widthc.WidthcError, match=f"has no train/ folder; {layout}"):
        load_splits(f"imagefolder:{tmp_path}", (1, 3, 8, 8))
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(widthc.WidthcError, match=f"holds no images where expected .*{layout}"):
        load_splits(f"imagefolder:{tmp_path}", (1, 3, 8, 8))
    _image_tree(tmp_path, {"cat": (3, 1), "dog": (3, 0)})
    (tmp_path / "val" / "dog").rmdir()
    with pytest.raises(widthc.WidthcError, match="val/ has other class folders than train/"):
        load_splits(f"imagefolder:{tmp_path}", (1, 3, 8, 8))
    with pytest.raises(widthc.WidthcError, match="N,C,H,W"):
        load_splits(f"imagefolder:{tmp_path}", (1, 3, 8))
    with pytest.raises(widthc.WidthcError, match="takes 4 input channels"):
        load_splits(f"imagefolder:{tmp_path}", (1, 4, 8, 8))


def _fake_cifar10(root, n_per_batch: int = 10, n_test: int = 20) -> None:
    """CIFAR-10's python layout with tiny batches (the checksums are patched in the test)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        n = n_test if name == "test_batch" else n_per_batch
        data = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
        entry = {"data": data, "labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]})
    )


def test_cifar10_splits(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    _fake_cifar10(tmp_path)
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    s = load_splits(f"cifar10:{tmp_path}", (1, 3, 32, 32), seed=0)
    assert (len(s.train), len(s.val), len(s.test), s.classes) == (45, 5, 20, 10)
    assert sorted(s.train.indices + s.val.indices) == list(range(50))
    assert s.train[0][0].shape == (3, 32, 32) and s.test[0][0].shape == (3, 32, 32)
    assert torch.equal(s.val[1][0], s.val[1][0])  # no augmentation on validation
    augmented = [s.train[0][0] for _ in range(4)]  # random crop with padding 4, flip
    assert any(not torch.equal(augmented[0], a) for a in augmented[1:])
    assert load_splits(f"cifar10:{tmp_path}", (1, 3, 16, 16)).test[0][0].shape == (3, 16, 16)


def test_cifar10_errors(tmp_path):
    never = "widthc never downloads"
    with pytest.raises(widthc.WidthcError, match=f"no such folder; download CIFAR-10.*{never}"):
        load_splits(f"cifar10:{tmp_path / 'absent'}", (1, 3, 32, 32))
    with pytest.raises(
        widthc.WidthcError,
        match=f"holds no CIFAR-10 files; download .*cifar-10-batches-py; {never}",
    ):
        load_splits(f"cifar10:{tmp_path}", (1, 3, 32, 32))
    with pytest.raises(widthc.WidthcError, match="N,C,H,W"):
        load_splits(f"cifar10:{tmp_path}", (1, 3, 32))


# --- a model file's data hooks ------------------------------------------------------------------


def _tensors(n: int, offset: int = 0) -> TensorDataset:
    return TensorDataset(torch.arange(offset, offset + n).float()[:, None], torch.arange(n) % 4)


def _module(**hooks) -> types.ModuleType:
    module = types.ModuleType("hooks")
    for name, value in hooks.items():
        setattr(module, name, lambda value=value: value)
    return module


def test_train_val_test_hooks():
    train, val, test = _tensors(8), _tensors(6, 100), _tensors(4, 200)
    s = splits_from_hooks(_module(train_data=train, val_data=val, test_data=test), "m.py")
    assert (s.train, s.val, s.test, s.classes, s.note) == (train, val, test, 4, "")


@pytest.mark.parametrize("hooks", ["pair", "data"])
def test_test_split_from_validation_by_seed(hooks):
    train, val = _tensors(8), _tensors(7, 100)
    module = (
        _module(train_data=train, val_data=val) if hooks == "pair" else _module(data=(train, val))
    )
    s = splits_from_hooks(module, "m.py", seed=2)
    assert s.train is train and "test_data()" in s.note
    v, t = set(s.val.tensors[0].flatten().tolist()), set(s.test.tensors[0].flatten().tolist())
    assert not v & t and v | t == set(range(100, 107)) and (len(v), len(t)) == (4, 3)
    assert torch.equal(splits_from_hooks(module, "m.py", seed=2).test.tensors[0], s.test.tensors[0])


def test_hook_errors_and_no_hooks():
    assert splits_from_hooks(_module(), "m.py") is None
    with pytest.raises(widthc.WidthcError, match=r"defines train_data\(\) but not val_data\(\)"):
        splits_from_hooks(_module(train_data=_tensors(4)), "m.py")
    with pytest.raises(widthc.WidthcError, match=r"val_data\(\) in 'm.py' is empty"):
        splits_from_hooks(_module(train_data=_tensors(4), val_data=[]), "m.py")
    broken = _module(train_data=_tensors(4), val_data=_tensors(4))
    broken.val_data = lambda: 1 / 0
    with pytest.raises(
        widthc.WidthcError, match=r"val_data\(\) in 'm.py' failed: ZeroDivisionError"
    ):
        splits_from_hooks(broken, "m.py")
    with pytest.raises(widthc.WidthcError, match=r"must return \(train_dataset, val_dataset\)"):
        splits_from_hooks(_module(data=_tensors(4)), "m.py")


def test_classes_none_for_non_integer_labels():
    pairs = [(torch.zeros(2), {"box": torch.zeros(4)}) for _ in range(3)]
    assert splits_from_hooks(_module(train_data=pairs, val_data=pairs), "m.py").classes is None
