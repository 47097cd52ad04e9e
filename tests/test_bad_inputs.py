"""The catalogue of bad inputs (README.md, "Bad inputs"): one case per row, every command.

Each case ends in exit code 2 and one sentence on stderr that names what is wrong, and leaves
what an earlier run wrote unchanged. The README's table and CASES below list the same rows (a
test checks it), so the documentation cannot drift from what widthc says. `--debug` adds the
traceback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap

from widthc.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "examples" / "mobilenet_digits.py")
TINY = ["--epochs", "1", "--population", "4", "--generations", "1", "--calib-batches", "2",
        "--retrain-epochs", "0", *CHEAP_TUNING]  # fmt: skip

FIVE_CLASSES = """
from torch import nn
def model():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
input_shape = (1, 1, 8, 8)
"""

WRONG_DATA = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
def model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
input_shape = (1, 3, 8, 8)
def _data():
    return TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
def train_data():
    return _data()
def val_data():
    return _data()
"""

DICT_OUTPUT = """
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 10)
    def forward(self, x):
        return {"logits": self.fc(self.conv(x).mean((2, 3)))}
def model():
    return Net()
input_shape = (1, 1, 8, 8)
"""

# (row: what the user did, command (RUN = a finished run, OUT = a fresh folder, FILE = a model
#  file written from the text given), the words of the error)
CASES = [
    ("a model file that does not exist", ["analyze", "nope.py"], "does not exist"),
    ("an unknown torchvision model", ["analyze", "torchvision:resnet"], "did you mean"),
    ("an input shape that is not one", ["analyze", DIGITS, "--input-shape", "1,x"], "is not a shape"),
    ("a budget that is not one", ["slim", DIGITS, "--flops", "12X", "--out", "OUT"], "is not a FLOPs budget"),
    ("a budget out of reach", ["slim", DIGITS, "--data", "digits", "--flops", "1K", "--out", "OUT"], "out of reach"),
    ("training without data", ["slim", DIGITS, "--flops", "50%", "--out", "OUT"], "--data is missing"),
    ("an unknown data source", ["train", DIGITS, "--data", "cifar100", "--out", "OUT"], "unknown data source"),
    ("an image folder that does not exist", ["train", DIGITS, "--data", "imagefolder:/no/such", "--out", "OUT"], "imagefolder"),
    ("a CIFAR-10 folder without its files", ["train", DIGITS, "--data", "cifar10:EMPTY", "--out", "OUT"], "cifar10"),
    ("labels the model's output cannot hold", ["train", ("FILE", FIVE_CLASSES), "--data", "digits", "--out", "OUT"], "outputs 5 classes"),
    ("data the model rejects", ["train", ("FILE", WRONG_DATA), "--out", "OUT", "--batch-size", "16"], "which layer `0` rejects"),
    ("a dict output without loss() and metric()", ["train", ("FILE", DICT_OUTPUT), "--data", "digits", "--out", "OUT"], "loss(output, target)"),
    ("a negative offset", ["train", DIGITS, "--data", "digits", "--offset", "-1", "--out", "OUT"], "--offset must be 0 or more"),
    ("a negative sort interval", ["train", DIGITS, "--data", "digits", "--sort-every", "-1", "--out", "OUT"], "--sort-every must be 0 (never) or more, got -1"),
    ("zero epochs", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--epochs", "0", "--out", "OUT"], "--epochs must be at least 1"),
    ("an unknown searcher", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--search", "annealing", "--out", "OUT"], "not a searcher"),
    ("an output folder that cannot be written", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", "BLOCKED/run"], "cannot write to --out"),
    ("a finished run without --resume or --force", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", "RUN", *TINY], "holds a finished run"),
    ("--resume with other options", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", "RUN", "--resume", "--lr", "0.5"], "cannot resume with --lr 0.5"),
    ("--resume with another model", ["slim", "torchvision:resnet18", "--data", "digits", "--flops", "50%", "--out", "RUN", "--resume"], "cannot resume"),
    ("a search over a folder with no run", ["search", "OUT", "--flops", "50%"], "holds no widthc run"),
    ("a search without a budget", ["search", "TRAINED"], "no budget: give --flops"),
    ("an export before the search", ["export", "TRAINED"], "has not finished its search stage"),
    ("--sync-bn on a CPU", ["train", DIGITS, "--data", "digits", "--sync-bn", "--out", "OUT"], "--sync-bn needs --device cuda"),
    ("an unknown runtime", ["slim", DIGITS, "--flops", "50%", "--search", "uniform", "--runtime", "tensorrt", "--out", "OUT"], "--runtime tensorrt is not a runtime"),
    ("a runtime that is not installed", ["slim", DIGITS, "--latency", "50%", "--search", "uniform", "--out", "OUT", "@no-onnxruntime"], "needs onnxruntime"),
    ("a latency below the smallest width's", ["slim", DIGITS, "--latency", "1us", "--search", "uniform", "--align", "1", "--out", "OUT"], "a latency budget of 0.001 ms is out of reach"),
    ("a GPU runtime without a GPU", ["slim", DIGITS, "--latency", "50%", "--search", "uniform", "--runtime", "torch-cuda", "--out", "OUT", "@no-gpu"], "needs a CUDA GPU"),
    ("an unknown channel importance", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--pretrained", "--order-by", "size", "--out", "OUT"], "--order-by size is not one of l1, l2, bn, taylor"),
    ("a supernet share outside (0, 1)", ["train", DIGITS, "--data", "digits", "--pretrained", "--supernet-share", "1", "--out", "OUT"], "--supernet-share must be in (0, 1)"),
    ("a supernet learning-rate scale outside (0, 1]", ["train", DIGITS, "--data", "digits", "--pretrained", "--supernet-lr-scale", "2", "--out", "OUT"], "--supernet-lr-scale must be in (0, 1]"),
    ("--amp fp16 on a CPU", ["train", DIGITS, "--data", "digits", "--amp", "fp16", "--out", "OUT"], "--amp fp16 needs --device cuda"),
    ("batched probes on a sliced supernet", ["train", DIGITS, "--data", "digits", "--probes", "batched", "--out", "OUT"], "--probes batched needs masked execution"),
    ("--compile on a sliced supernet", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--compile", "--out", "OUT"], "--compile needs masked execution"),
    ("a negative number of refinement epochs", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--refine-epochs", "-1", "--out", "OUT"], "--refine-epochs must be at least 0"),
    ("no finalists to refine", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--refine-epochs", "2", "--refine-top", "0", "--out", "OUT"], "--refine-top must be at least 1"),
    ("refining a multi-stage search", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--refine-epochs", "2", "--stages", "2", "--out", "OUT"], "--refine-epochs refines one-stage FLOPs or params searches only"),
    ("refining a latency search", ["slim", DIGITS, "--data", "digits", "--latency", "50%", "--refine-epochs", "2", "--out", "OUT"], "--refine-epochs refines one-stage FLOPs or params searches only"),
    ("a negative number of scoring steps", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "-1", "--out", "OUT"], "--score-steps must be at least 0"),
    ("a scoring learning rate of 0", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-lr", "0", "--out", "OUT"], "--score-lr must be positive"),
    ("a negative number of tuned finalists", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "-1", "--out", "OUT"], "--score-top must be at least 0"),
    ("a negative number of scoring passes", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-epochs", "-1", "--out", "OUT"], "--score-epochs must be at least 0"),
    ("scoring steps and passes both", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-epochs", "2", "--out", "OUT"], "--score-steps and --score-epochs both set the fine-tuning's length: give one"),
    ("tuned finalists with the tuning off", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-epochs", "0", "--score-top", "4", "--out", "OUT"], "--score-top works on fine-tuned widths, and --score-steps 0 or --score-epochs 0 turned the fine-tuning off"),
    ("a negative number of climbed widths", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-climb", "-1", "--out", "OUT"], "--score-climb must be at least 0"),
    ("a climb without tuned finalists", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-climb", "4", "--out", "OUT"], "--score-climb M climbs from tuned finalists: give --score-top K too (with --score-steps or --score-epochs alone every scored width is tuned, and there are no finalists)"),
    ("a climb of a latency search", ["slim", DIGITS, "--data", "digits", "--latency", "50%", "--score-steps", "8", "--score-top", "4", "--score-climb", "4", "--out", "OUT"], "--score-climb climbs one-stage FLOPs or params searches only"),
    ("a climb of a multi-stage search", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-climb", "4", "--stages", "2", "--out", "OUT"], "--score-climb climbs one-stage FLOPs or params searches only"),
    ("a climb of a refinement", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-climb", "4", "--refine-epochs", "2", "--out", "OUT"], "--score-climb climbs one-stage FLOPs or params searches only"),
    ("the best candidate tuned with the tuning off", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "0", "--score-candidates", "best", "--out", "OUT"], "--score-candidates works on fine-tuned widths, and --score-steps 0 or --score-epochs 0 turned the fine-tuning off"),
    ("a negative number of widths tuned again", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-again", "-1", "--out", "OUT"], "--score-again must be at least 0"),
    ("no steps for the widths tuned again", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-again", "2", "--score-again-steps", "0", "--out", "OUT"], "--score-again-steps must be at least 1"),
    ("tuning again without tuned finalists", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-again", "2", "--out", "OUT"], "--score-again M tunes tuned finalists: give --score-top K too (with --score-steps or --score-epochs alone every scored width is tuned, and there are no finalists)"),
    ("tuning again in a latency search", ["slim", DIGITS, "--data", "digits", "--latency", "50%", "--score-steps", "8", "--score-top", "4", "--score-again", "2", "--out", "OUT"], "--score-again tunes one-stage FLOPs or params searches only"),
    ("tuning again in a multi-stage search", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-again", "2", "--stages", "2", "--out", "OUT"], "--score-again tunes one-stage FLOPs or params searches only"),
    ("tuning again after a refinement", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-steps", "8", "--score-top", "4", "--score-again", "2", "--refine-epochs", "2", "--out", "OUT"], "--score-again tunes one-stage FLOPs or params searches only"),
    ("a negative number of widths retrained", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-retrain", "-1", "--out", "OUT"], "--score-retrain must be at least 0"),
    ("no epochs for the widths retrained", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-retrain", "2", "--score-retrain-epochs", "0", "--out", "OUT"], "--score-retrain-epochs must be at least 1"),
    ("retraining contenders without retraining epochs", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-retrain", "2", "--retrain-epochs", "0", "--out", "OUT"], "--score-retrain needs retraining epochs: give --score-retrain-epochs E (--retrain-epochs is 0)"),
    ("retraining contenders of a latency search", ["slim", DIGITS, "--data", "digits", "--latency", "50%", "--score-retrain", "2", "--out", "OUT"], "--score-retrain retrains one-stage FLOPs or params searches only"),
    ("retraining contenders of a multi-stage search", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-retrain", "2", "--stages", "2", "--out", "OUT"], "--score-retrain retrains one-stage FLOPs or params searches only"),
    ("retraining contenders from the supernet's weights", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--score-retrain", "2", "--finetune", "--out", "OUT"], "--score-retrain retrains from scratch or --pretrained: drop --finetune"),
    ("refining a params search in the band", ["slim", DIGITS, "--data", "digits", "--params", "50%", "--refine-epochs", "2", "--refine-widths", "band", "--out", "OUT"], "--refine-widths band draws widths in FLOPs bands: give --flops"),
    ("private batch norms with --decay-used", ["train", DIGITS, "--data", "digits", "--private-bn", "--decay-used", "--out", "OUT"], "--private-bn does not run with --decay-used"),
    ("private batch norms with --compile", ["train", DIGITS, "--data", "digits", "--private-bn", "--compile", "--execution", "masked", "--out", "OUT"], "--private-bn does not run with --compile"),
    ("private batch norms with sorted channels", ["train", DIGITS, "--data", "digits", "--private-bn", "--sort-every", "1", "--out", "OUT"], "--private-bn does not run with --sort-every"),
    ("private batch norms in a multi-stage search", ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--private-bn", "--stages", "2", "--out", "OUT"], "--private-bn does not run with --stages above 1"),
]  # fmt: skip
PATCHES = {  # what a case's `@name` changes for its run
    "@no-onnxruntime": lambda mp: mp.setitem(sys.modules, "onnxruntime", None),
    "@no-gpu": lambda mp: mp.setattr(torch.cuda, "is_available", lambda: False),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    res = CliRunner().invoke(
        main, ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", str(run), *TINY]
    )
    assert res.exit_code == 0, res.output
    trained = root / "trained"
    res = CliRunner().invoke(
        main, ["train", DIGITS, "--data", "digits", "--out", str(trained), "--batch-size", "256"]
    )
    assert res.exit_code == 0, res.output
    return run, trained


def _args(args: list, tmp_path: Path, finished) -> list[str]:
    run, trained = finished
    out = []
    for a in args:
        if isinstance(a, tuple):  # a model file
            path = tmp_path / "model_file.py"
            path.write_text(a[1])
            a = str(path)
        elif a == "RUN":
            a = str(tmp_path / "run")
            if not Path(a).exists():
                shutil.copytree(run, a)
        elif a == "TRAINED":
            a = str(tmp_path / "trained")
            if not Path(a).exists():
                shutil.copytree(trained, a)
        elif a == "OUT":
            a = str(tmp_path / "out")
        elif a.startswith("BLOCKED"):
            (tmp_path / "blocker").write_text("a file, not a folder")
            a = a.replace("BLOCKED", str(tmp_path / "blocker"))
        elif a.endswith(":EMPTY"):
            (tmp_path / "empty").mkdir(exist_ok=True)
            a = a.replace("EMPTY", str(tmp_path / "empty"))
        out.append(a)
    return out


def _snapshot(tmp_path: Path) -> dict:
    return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".py"}


@pytest.mark.parametrize(("row", "args", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(row, args, words, tmp_path, finished, monkeypatch):
    for patch in [a for a in args if a in PATCHES]:
        PATCHES[patch](monkeypatch)
    argv = _args([a for a in args if a not in PATCHES], tmp_path, finished)
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("widthc: error: "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert words in res.stderr, res.stderr
    assert _snapshot(tmp_path) == before  # nothing of an earlier run changed
    assert not (tmp_path / "out").exists()


def test_readme_lists_every_case():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Bad inputs") :]
    for row, _, words in CASES:
        assert f"| {row} |" in table, row
        assert words in table, words


def test_debug_shows_the_traceback(tmp_path):
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "nope.py"), "--debug"])
    assert res.exit_code == 2 and "Traceback" in res.stderr and "does not exist" in res.stderr
