"""Model sources: model.py beside its helpers, `package.module:function`, loss/metric hooks, and
the paper's example models at their published FLOPs and parameter counts."""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import widthc
from widthc.cli import main
from widthc.frontends.data import splits_from_hooks
from widthc.frontends.models import check_output, load_model

ROOT = Path(__file__).resolve().parents[1]

BLOCKS = """
from torch import nn

class Block(nn.Sequential):
    def __init__(self, c):
        super().__init__(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
"""

MODEL_BESIDE = """
from torch import nn
from {blocks} import Block

def model():
    from {late} import WIDTH  # imported while model() runs, not at import time
    return nn.Sequential(nn.Conv2d(3, WIDTH, 1), Block(WIDTH), nn.Conv2d(WIDTH, 4, 1))

input_shape = (1, 3, 8, 8)

def train_data():
    from {late} import data
    return data(8)

def val_data():
    from {late} import data
    return data(4)
"""

LATE = """
import torch
from torch.utils.data import TensorDataset

WIDTH = 6

def data(n):
    return TensorDataset(torch.randn(n, 3, 8, 8), torch.arange(n) % 4)
"""


@pytest.fixture
def fresh_modules():
    """Names of helper modules the test imports; removed from sys.modules afterwards."""
    names: list[str] = []
    yield names
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            del sys.modules[name]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_model_file_imports_its_neighbours_from_any_cwd(tmp_path, monkeypatch, fresh_modules):
    fresh_modules += ["wc_blocks_a", "wc_late_a"]
    proj = tmp_path / "proj"
    _write(proj / "wc_blocks_a.py", BLOCKS)
    _write(proj / "wc_late_a.py", LATE)
    _write(proj / "model.py", MODEL_BESIDE.format(blocks="wc_blocks_a", late="wc_late_a"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path_before = list(sys.path)
    src = load_model("../proj/model.py")
    assert type(src.model[1]).__name__ == "Block" and src.model[0].out_channels == 6
    assert src.example_inputs[0].shape == (1, 3, 8, 8) and src.name == "model"
    assert sys.path == path_before  # the folder was on the path only while the file ran
    del sys.modules["wc_late_a"]  # imported again by the hooks, from beside the file
    splits = splits_from_hooks(src.module, "../proj/model.py")
    assert (len(splits.train), len(splits.val) + len(splits.test), splits.classes) == (8, 4, 4)
    assert sys.path == path_before
    # the command line, from the same foreign working directory
    result = CliRunner().invoke(main, ["analyze", "../proj/model.py"])
    assert result.exit_code == 0, result.output
    assert "searchable groups: 2/3" in result.output


def test_model_file_neighbour_missing_names_the_module(tmp_path, monkeypatch):
    _write(tmp_path / "model.py", MODEL_BESIDE.format(blocks="wc_no_such_blocks", late="x"))
    with pytest.raises(widthc.WidthcError, match="No module named 'wc_no_such_blocks'"):
        load_model(str(tmp_path / "model.py"))


PKG_NETS = """
import torch
from torch import nn
from .layers import Head

def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(2, 5, 3), nn.Flatten(1), Head(5 * 4 * 4, num_classes))

input_shape = (1, 2, 6, 6)

def loss(output, target):
    return nn.functional.cross_entropy(output, target)

def metric(output, target):
    return (output.argmax(1) == target).float().mean().item()
"""


def _package(root: Path, name: str) -> None:
    _write(root / name / "__init__.py", "")
    _write(root / name / "layers.py", "from torch import nn\nHead = nn.Linear\n")
    _write(root / name / "nets.py", PKG_NETS)


def test_package_module_function(tmp_path, monkeypatch, fresh_modules):
    fresh_modules.append("wc_pkg_a")
    _package(tmp_path, "wc_pkg_a")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = load_model("wc_pkg_a.nets:build", num_classes=7)  # relative imports work
    assert src.name == "wc_pkg_a.nets:build" and src.model[2].out_features == 7
    assert src.example_inputs[0].shape == (1, 2, 6, 6)
    out, target = src.model(torch.randn(4, 2, 6, 6)), torch.tensor([0, 1, 2, 3])
    check_output(src, out)  # a tensor output needs no hooks; these are the module's own
    assert torch.equal(src.loss(out, target), torch.nn.functional.cross_entropy(out, target))
    assert src.metric(out, target) == (out.argmax(1) == target).float().mean().item()
    program = widthc.compile(src.model, src.example_inputs)
    assert program.flops() == 5 * 2 * 9 * 16 + 80 * 7


def test_package_module_function_from_the_working_directory(tmp_path, monkeypatch, fresh_modules):
    fresh_modules.append("wc_pkg_b")
    _package(tmp_path, "wc_pkg_b")
    monkeypatch.chdir(tmp_path)  # like `python -m`: the cwd is importable
    path_before = list(sys.path)
    assert load_model("wc_pkg_b.nets:build").model[2].out_features == 3
    assert sys.path == path_before


def test_package_module_function_errors(tmp_path, monkeypatch, fresh_modules):
    fresh_modules.append("wc_pkg_c")
    _package(tmp_path, "wc_pkg_c")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(widthc.WidthcError, match="no module named 'wc_absent'.*install"):
        load_model("wc_absent.nets:build")
    with pytest.raises(widthc.WidthcError, match=r"'wc_pkg_c.nets' has no function nothing\(\)"):
        load_model("wc_pkg_c.nets:nothing")
    with pytest.raises(widthc.WidthcError, match="takes no num_classes"):
        load_model("wc_pkg_c.layers:Head", num_classes=3)  # nn.Linear(in, out): no num_classes


DICT_MODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return {{"logits": y.mean((2, 3)), "map": y}}

def model():
    return Net()

input_shape = (1, 1, 5, 5)
{hooks}
"""


def test_dict_output_needs_loss_and_metric(tmp_path):
    files = itertools.count()

    def source(hooks: str):
        path = _write(tmp_path / f"m{next(files)}.py", DICT_MODEL.format(hooks=hooks))
        return load_model(str(path))

    bare = source("")
    out = bare.model(*bare.example_inputs)
    with pytest.raises(
        widthc.WidthcError,
        match=r"dict output.*define loss\(output, target\) and metric\(output, target\)",
    ):
        check_output(bare, out)
    with pytest.raises(widthc.WidthcError, match=r"define metric\(output, target\):"):
        check_output(source("def loss(o, t):\n    return o['logits'].sum()"), out)
    with pytest.raises(widthc.WidthcError, match="tuple output"):
        check_output(bare, (out["logits"], out["map"]))
    hooks = "def loss(o, t):\n    return o['logits'].sum()\ndef metric(o, t):\n    return 0.5"
    full = source(hooks)
    check_output(full, out)  # both hooks: accepted
    assert float(full.loss(out, None)) == pytest.approx(float(out["logits"].sum()))
    assert full.metric(out, None) == 0.5 and bare.loss is None and bare.metric is None
    with pytest.raises(widthc.WidthcError, match="'loss' in .* is not a function"):
        source("loss = 3")


# --- the paper's settings: FLOPs per sample and parameters within 1% ----------------------------

PAPER = {
    "cifar10_mobilenetv2": (296.5e6, 2.24e6),
    "cifar10_vgg19": (398.1e6, 20.0e6),
    "imagenet_resnet50": (4.09e9, 25.6e6),
    "imagenet_mobilenetv2": (301e6, 3.50e6),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_examples_flops_and_params(name):
    src = load_model(str(ROOT / "examples" / f"{name}.py"))
    assert src.example_inputs[0].shape[0] == 1  # batch 1: FLOPs per sample either way
    program = widthc.compile(src.model, src.example_inputs)
    flops, params = PAPER[name]
    assert program.flops() == pytest.approx(flops, rel=0.01)
    assert program.params() == pytest.approx(params, rel=0.01)
    assert sum(p.numel() for p in src.model.parameters()) == program.params()
    assert src.model(*src.example_inputs).shape == (1, 10 if "cifar" in name else 1000)


def test_mnist1d_cnn_groups():
    """The couplings the example exists to show, as golden producer sets: one residual stream
    per stage, the depthwise conv inside its expansion's group, the SE gate joined to it."""
    src = load_model(str(ROOT / "examples" / "mnist1d_cnn.py"))
    program = widthc.compile(src.model, src.example_inputs)
    assert program.flops() == 85984  # the benchmark's widths (8, 8, 16, 32): BENCHMARKS.md
    producers = {g.producers for g in program.searchable}
    assert producers == {
        ("stem.0.0", "stage1.0.body.2.0", "stage1.1.body.2.0"),  # residual stream, stage 1
        ("stage1.0.body.0.0",),
        ("stage1.1.body.0.0",),
        ("down.0.0", "stage2.0.body.5.0", "stage2.1.body.5.0"),  # residual stream, stage 2
        ("stage2.0.body.0.0", "stage2.0.body.4.expand"),  # expansion + SE gate
        ("stage2.0.body.4.reduce",),
        ("stage2.1.body.0.0", "stage2.1.body.4.expand"),
        ("stage2.1.body.4.reduce",),
    }
    expansion = next(g for g in program.searchable if "stage2.0.body.0.0" in g.producers)
    assert "stage2.0.body.2.0" in expansion.consumers  # the depthwise conv, both sides
