"""Any task, end to end: a model file with a regression loss and metric(), and a classifier with
a custom metric, both through `widthc slim`. The epoch-end validation, the search, the
retraining and the report use the model file's metric and name it; `--score loss` scores
widths by minus the validation loss."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from widthc.cli import main

TINY = ["--epochs", "2", "--batch-size", "32", "--population", "4", "--generations", "1",
        "--calib-batches", "2", "--retrain-epochs", "1", "--no-onnx"]  # fmt: skip
# the default's tuned finalists made cheap for runs on the digits data (the default: 16 widths
# a budget, 4 passes each; tests/test_score_default.py runs it as it is)
CHEAP_TUNING = ["--score-epochs", "1", "--score-top", "2"]

SPLITS = """
def train_data():
    return _data(192, 0)

def val_data():
    return _data(64, 1)

def test_data():
    return _data(64, 2)
"""

REGRESSION = (
    SPLITS
    + '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

def model():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

input_shape = (2, 6)

def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin(), x[:, 3]], 1))

def loss(output, target):
    return nn.functional.mse_loss(output, target)

def metric(output, target):
    """minus the mean squared error"""
    return -float(nn.functional.mse_loss(output, target))
'''
)

CUSTOM_METRIC = (
    SPLITS
    + '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

def model():
    return nn.Sequential(nn.Linear(8, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 5))

input_shape = (2, 8)

def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, :5] + 0.5 * x[:, 3:]).argmax(1))

def metric(output, target):
    """top-2 accuracy"""
    return float((output.topk(2, dim=1).indices == target[:, None]).any(1).float().mean())
'''
)


def slim_run(root, source: str, *extra: str, flops: str = "50%", out=None) -> tuple:
    """`widthc slim` of the model file `source` (written to `root`/model.py) at `flops` with
    TINY and `extra`, into `out` (default `root`/run); it must succeed: its folder and output.
    The tiny runs of the other test modules are made here."""
    path = root / "model.py"
    path.write_text(source)
    out = out or root / "run"
    res = CliRunner().invoke(
        main, ["slim", str(path), "--flops", flops, "--out", str(out), *TINY, *extra]
    )
    assert res.exit_code == 0, res.output
    return out, res.output


def _test_metric(out, budget_dir: str, metric_fn) -> float:
    """The metric of a run's retrained model on the model file's test split, computed here."""
    import importlib.util

    import widthc

    spec = importlib.util.spec_from_file_location("task_model", out.parent / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = module.test_data().tensors
    model = widthc.load(out / budget_dir / "slim.pt").eval()
    with torch.no_grad():
        return metric_fn(module, model(x), y)


def test_regression_model_file_runs_end_to_end(tmp_path):
    out, output = slim_run(tmp_path, REGRESSION, "--score", "metric")  # the search's too
    log = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    validation = [r for r in log if "val_largest" in r]
    assert len(validation) == 2  # one per epoch, measured with the model's metric: -MSE <= 0
    assert all(r["metric"] == "minus the mean squared error" for r in validation)
    assert all(r["val_largest"] <= 0 and r["val_smallest"] <= 0 for r in validation)
    search = json.loads((out / "search.json").read_text())
    assert search["metric"] == search["score"] == "minus the mean squared error"
    (result,) = search["results"]
    assert all(h["score"] <= 0 for h in result["history"])
    metrics = json.loads((out / "flops-50pct" / "metrics.json").read_text())
    assert metrics["metric"] == "minus the mean squared error"
    expected = _test_metric(out, "flops-50pct", lambda m, o, y: m.metric(o, y))
    assert metrics["test"]["widthc"] == pytest.approx(expected, rel=1e-5)
    report = (out / "report.md").read_text()
    assert "Metric: minus the mean squared error (higher is better)" in report
    assert f"{metrics['test']['widthc']:.4g}" in report  # not shown as a percentage
    assert "validation minus the mean squared error largest" in output


def test_custom_metric_is_what_the_run_measures_and_names(tmp_path):
    out, _ = slim_run(tmp_path, CUSTOM_METRIC)
    log = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in log if "val_largest" in r} == {"top-2 accuracy"}
    metrics = json.loads((out / "flops-50pct" / "metrics.json").read_text())
    for which, folder in (("widthc", "flops-50pct"), ("uniform", "flops-50pct/uniform")):
        expected = _test_metric(out, folder, lambda m, o, y: m.metric(o, y))
        top1 = _test_metric(out, folder, lambda m, o, y: float((o.argmax(1) == y).float().mean()))
        assert metrics["test"][which] == pytest.approx(expected)
        assert expected >= top1  # top-2 is what was measured, not top-1
    assert "Metric: top-2 accuracy (higher is better)" in (out / "report.md").read_text()


def test_score_loss_ranks_widths_by_minus_the_validation_loss(tmp_path):
    out, _ = slim_run(tmp_path, CUSTOM_METRIC, "--score", "loss")
    search = json.loads((out / "search.json").read_text())
    assert search["metric"] == "top-2 accuracy" and search["score"] == "minus the validation loss"
    (result,) = search["results"]
    assert all(h["score"] < 0 for h in result["history"])  # minus a cross-entropy
    report = (out / "report.md").read_text()
    assert "the search maximised minus the validation loss" in report
