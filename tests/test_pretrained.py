"""`widthc slim MODEL --pretrained` (issue 20): a model file whose model() loads its own trained
weights from a file beside it, end to end: the model as given measured, its channels ordered
and proved, a short supernet, fine-tuning, the original metric in the report. Untrained
weights warn in one line and the run continues from scratch; trained weights without the flag
get a hint. The schedule and the chance level, on their own."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from widthc.cli import main
from widthc.config import RunConfig
from widthc.evaluate import against_chance

MODEL_FILE = textwrap.dedent(
    '''
    """A 1-D CNN on four sine frequencies; model() loads weights.pt beside this file when
    it is there (how a user's trained weights arrive)."""
    import math
    from pathlib import Path

    import torch
    from torch import nn

    input_shape = (1, 1, 32)


    def model(num_classes=4):
        net = nn.Sequential(
            nn.Conv1d(1, 12, 3, padding=1), nn.BatchNorm1d(12), nn.ReLU(),
            nn.Conv1d(12, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, num_classes),
        )
        weights = Path(__file__).with_name("weights.pt")
        if weights.exists():
            net.load_state_dict(torch.load(weights, weights_only=True))
        return net


    def _data(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 4, (n,), generator=g)
        t = torch.arange(32) / 32
        phase = torch.rand(n, 1, generator=g) * 2 * math.pi
        x = torch.sin(2 * math.pi * (y[:, None] + 1) * t + phase)
        x = x + 0.3 * torch.randn(n, 32, generator=g)
        return torch.utils.data.TensorDataset(x[:, None, :], y)


    def train_data():
        return _data(512, 1)


    def val_data():
        return _data(256, 2)
    '''
)
RUN = ["--flops", "50%", "--epochs", "5", "--batch-size", "32", "--population", "4",
       "--generations", "1", "--calib-batches", "2", "--no-onnx"]  # fmt: skip


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """The model file, and its weights trained for a few epochs (written beside it)."""
    folder = tmp_path_factory.mktemp("user")
    path = folder / "sines.py"
    path.write_text(MODEL_FILE)
    ns: dict = {"__file__": str(path)}
    exec(compile(MODEL_FILE, str(path), "exec"), ns)  # noqa: S102 - the test's own file
    torch.manual_seed(1)  # the initial weights too: seed 1 trains to 99.6% validation accuracy
    net, data = ns["model"](), ns["train_data"]()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(6):
        for idx in torch.randperm(len(data)).split(32):
            x, y = data[idx]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    torch.save(net.eval().state_dict(), folder / "weights.pt")
    return path


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_pretrained_run_end_to_end(model_file, tmp_path):
    out = tmp_path / "run"
    res = _run("slim", model_file, "--pretrained", *RUN, "--out", out)
    assert res.exit_code == 0, res.output
    assert "started from the model's trained weights" in res.stdout
    assert "warning" not in res.stderr
    pretrained = json.loads((out / "pretrained.json").read_text())
    original = pretrained["original"]
    assert original["val"]["trained"] and original["val"]["value"] > 0.8
    order = pretrained["order"]
    assert order["method"] == "l2" and order["error"] <= 1e-6
    assert order["flops"]["before"] == order["flops"]["after"]
    assert any(g["order"] != sorted(g["order"]) for g in order["groups"].values())
    # the schedule: a fifth of --epochs 5 trains the supernet, the rest fine-tunes each width
    # from the model's trained weights (channels sorted)
    log = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert {r["epoch"] for r in log if "step" in r} == {0}  # one supernet epoch
    metrics = json.loads((out / "flops-50pct" / "metrics.json").read_text())
    assert metrics["retrain"] == {"epochs": 4, "finetune": False}
    assert metrics["test"]["original"] == original["test"]
    report = (out / "report.md").read_text()
    assert "Started from the model's trained weights (`--pretrained`)" in report
    assert (
        "supernet 1 epoch; retrained 4 epochs (fine-tuned from the model's trained weights, "
        "channels sorted)" in report
    )
    assert f"original model {100 * original['test']:.1f}%" in report


def test_the_supernet_starts_from_the_ordered_trained_weights(model_file, tmp_path):
    """One supernet step at a tiny learning rate: its weights are the trained model's, in the
    order pretrained.json records."""
    out = tmp_path / "run"
    res = _run("train", model_file, "--pretrained", "--epochs", "1", "--batch-size", "512",
               "--lr", "1e-9", "--min-lr", "0", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    order = json.loads((out / "pretrained.json").read_text())["order"]
    first = torch.tensor(next(g["order"] for g in order["groups"].values() if g["name"] == "0"))
    trained = torch.load(model_file.with_name("weights.pt"), weights_only=True)
    supernet = torch.load(out / "supernet.pt", weights_only=True)["model"]
    weight = next(v for k, v in supernet.items() if k.endswith("0.weight") and v.ndim == 3)
    assert torch.allclose(weight, trained["0.weight"][first], atol=1e-6)


def test_untrained_weights_warn_once_and_continue_from_scratch(model_file, tmp_path):
    fresh = tmp_path / "sines.py"
    fresh.write_text(model_file.read_text())  # no weights.pt beside it: random weights
    out = tmp_path / "run"
    res = _run("slim", fresh, "--pretrained", *RUN, "--out", out)
    assert res.exit_code == 0, res.output
    warning = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "at chance level" in warning[0], res.stderr
    assert warning[0].endswith("its weights look untrained; continuing from scratch")
    assert json.loads((out / "config.json").read_text())["pretrained"] is False
    assert not (out / "pretrained.json").exists()
    metrics = json.loads((out / "flops-50pct" / "metrics.json").read_text())
    assert (
        metrics["retrain"] == {"epochs": 5, "finetune": False} and "original" not in metrics["test"]
    )


def test_trained_weights_without_the_flag_get_a_hint(model_file, tmp_path):
    res = _run("train", model_file, "--epochs", "1", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "the model's weights look trained (validation accuracy" in res.stdout
    assert "--pretrained starts from them" in res.stdout


def test_schedule_of_a_pretrained_run():
    scratch = RunConfig.from_json({"epochs": 30}).schedule()
    assert (scratch.supernet, scratch.retrain, scratch.finetune) == (30, 30, False)
    pre = RunConfig.from_json({"epochs": 30, "pretrained": True})
    s = pre.schedule()
    assert (s.supernet, s.retrain, s.finetune) == (6, 24, False)  # from the trained weights
    assert pre.supernet_training().epochs == 6 and pre.train.epochs == 30
    options = {"retrain_epochs": 10, "finetune": True, "supernet_share": 0.5}
    given = RunConfig.from_json({"epochs": 30, "pretrained": True, **options}).schedule()
    assert (given.supernet, given.retrain, given.finetune) == (15, 10, True)
    short = RunConfig.from_json({"epochs": 1, "pretrained": True}).schedule()
    assert (short.supernet, short.retrain) == (1, 1)  # at least one epoch each


def test_supernet_learning_rate_scale_applies_to_the_pretrained_supernet_only():
    gentle = {"epochs": 30, "lr": 0.2, "supernet_lr_scale": 0.25}
    pre = RunConfig.from_json({**gentle, "pretrained": True})
    assert pre.supernet_training().lr == pytest.approx(0.05)
    assert pre.train.lr == 0.2  # the fine-tuning keeps --lr
    assert RunConfig.from_json(gentle).supernet_training().lr == 0.2  # from scratch: ignored
    assert RunConfig.from_json({"epochs": 30, "pretrained": True}).supernet_training().lr == 0.1


def test_the_supernet_trains_at_the_scaled_learning_rate(model_file, tmp_path):
    out = tmp_path / "run"
    res = _run("train", model_file, "--pretrained", "--epochs", "1", "--batch-size", "512",
               "--lr", "0.2", "--supernet-lr-scale", "0.25", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    rates = [r["lr"] for r in log if "lr" in r]
    assert rates[0] == pytest.approx(0.05)  # --lr 0.2 x 0.25
    assert max(rates) <= 0.05 + 1e-12


@pytest.mark.parametrize("options, message", [
    ({"supernet_share": 1.0}, "--supernet-share must be in (0, 1)"),
    ({"supernet_lr_scale": 0.0}, "--supernet-lr-scale must be in (0, 1]"),
    ({"supernet_lr_scale": 1.5}, "--supernet-lr-scale must be in (0, 1]"),
    ({"order_by": "size"}, "--order-by size is not one of l1, l2, bn, taylor"),
])  # fmt: skip
def test_bad_pretrained_options(options, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_json({"model": "m.py", **options}).check()


def test_chance_level_tells_trained_from_untrained():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # four classes
    data = [(x[i : i + 128], y[i : i + 128]) for i in range(0, 512, 128)]
    torch.manual_seed(0)
    untrained = torch.nn.Linear(8, 4)
    result = against_chance(untrained, data)
    assert not result.trained and abs(result.value - result.chance) < 0.1
    trained = torch.nn.Linear(8, 4)
    with torch.no_grad():
        trained.weight.zero_()
        trained.bias.zero_()
        trained.weight[:, :2] = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    result = against_chance(trained, data)
    assert result.trained and result.value == 1.0 and 0.15 < result.chance < 0.35
    constant = torch.nn.Linear(8, 4)
    with torch.no_grad():
        constant.weight.zero_()
        constant.bias.copy_(torch.tensor([1.0, 0, 0, 0]))
    result = against_chance(constant, data)  # always class 0: chance exactly, no spread
    assert not result.trained and result.spread == 0 and result.value == result.chance
