"""How steps run (widthc/precision.py, widthc/loop.py): the host reads the losses every
`log_every` steps yet every step is logged and a NaN still stops at its step; bf16 autocast and
channels-last train, score and retrain; fp16 on a CPU is refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc import loop
from widthc.evaluate import MaxMax
from widthc.precision import Precision
from widthc.run import CONFIG, TRAIN_LOG
from widthc.train import TrainConfig, train_supernet

_DATA = TensorDataset(
    torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
    torch.randint(4, (64,), generator=torch.Generator().manual_seed(1)),
)


def _net(execution: str = "auto"):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, 2, 1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4),
    )  # fmt: skip
    return widthc.supernet(widthc.compile(model, torch.randn(2, 1, 8, 8)), execution=execution)


def _log(path) -> list[dict]:
    return [json.loads(line) for line in (path / TRAIN_LOG).read_text().splitlines()]


def test_reading_losses_every_k_steps_logs_the_same_run(tmp_path):
    """log_every only changes when the host reads the losses: the same log, the same weights."""
    logs, weights = [], []
    for every in (1, 3):
        net = _net()
        cfg = TrainConfig(epochs=2, batch_size=8, checkpoint_every=5, log_every=every, seed=2)
        result = train_supernet(net, _DATA, config=cfg, run_dir=tmp_path / str(every))
        logs.append(_log(tmp_path / str(every)))
        weights.append(net.state_dict())
        assert len(result.losses) == 16 and all(isinstance(v, float) for v in result.losses)
    assert logs[0] == logs[1]
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


def test_the_host_reads_the_losses_once_every_k_steps(monkeypatch):
    """No per-step host read: a min-min step (r=0) hands the loop its loss as a tensor, and the
    loop reads the pending records in one copy every `log_every` steps."""
    reads = []
    to_host = loop.to_host

    def counted(records):
        if records:
            reads.append([torch.is_tensor(r["loss"]) for r in records])
        return to_host(records)

    monkeypatch.setattr(loop, "to_host", counted)
    net = widthc.supernet(_net().program, offset=0)
    cfg = TrainConfig(epochs=1, batch_size=8, checkpoint_every=0, log_every=4)
    result = train_supernet(net, _DATA, config=cfg)
    assert reads == [[True] * 4, [True] * 4]  # 8 steps, 2 reads
    assert len(result.losses) == 8 and all(isinstance(v, float) for v in result.losses)


def test_nan_read_late_still_stops_at_its_step(tmp_path):
    calls = [0]

    def nan_at_step_7(out, y):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls[0] == 7 else loss

    net = widthc.supernet(_net().program, offset=0)
    cfg = TrainConfig(epochs=2, batch_size=8, checkpoint_every=5, log_every=4)
    with pytest.raises(widthc.WidthcError, match=r"became nan at step 7 .*step 5\) is kept"):
        train_supernet(net, _DATA, config=cfg, run_dir=tmp_path, loss_fn=nan_at_step_7)
    ckpt = torch.load(tmp_path / "supernet.pt", weights_only=True)
    assert ckpt["step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [r["step"] for r in _log(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_nan_of_a_sandwich_width_read_late_names_that_width(tmp_path):
    """The trained widths' losses are read with the record: a NaN of the largest width (the
    second loss of a sandwich step: candidate, largest, smallest) stops training at its step
    and names it."""
    calls = [0]

    def nan_at_call_5(out, y):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls[0] == 5 else loss  # step 2's largest width

    net = widthc.supernet(_net().program, offset=0)
    cfg = TrainConfig(epochs=1, batch_size=8, sandwich=True, log_every=4)
    with pytest.raises(widthc.WidthcError, match=r"became nan at step 2 \(candidate largest\)"):
        train_supernet(net, _DATA, config=cfg, run_dir=tmp_path, loss_fn=nan_at_call_5)
    assert [r["step"] for r in _log(tmp_path)] == [1]


@pytest.mark.parametrize("execution", ["sliced", "masked"])
def test_bf16_and_channels_last_train_and_score(tmp_path, execution):
    net = _net(execution)
    cfg = TrainConfig(epochs=1, batch_size=8, amp="bf16", channels_last=True)
    result = train_supernet(net, _DATA, config=cfg, run_dir=tmp_path)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    conv = net.program.gm.get_submodule("0")
    assert conv.weight.dtype == torch.float32  # autocast: the weights stay fp32
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    calib = [_DATA.tensors[0][:8]]
    val = [(_DATA.tensors[0][8:24], _DATA.tensors[1][8:24])]
    half = net.program.uniform(ratio=0.5)
    plain = MaxMax(net, calib, val)(half).value
    fast = MaxMax(net, calib, val, precision=Precision("bf16", True))(half).value
    assert fast == pytest.approx(plain, abs=1 / 16)  # at most one of 16 predictions moves


def test_retraining_step_uses_the_precision():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    cfg = TrainConfig(epochs=1, batch_size=8, amp="bf16")
    opt, schedule = loop.optimizer(list(model.parameters()), cfg, 8)
    seen = []
    model.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    step = loop.PlainStep(model, torch.nn.functional.cross_entropy)
    trainer = loop.Trainer(model, step, _DATA, cfg, opt, schedule)
    records = trainer.run(max_steps=2)
    assert seen == [torch.bfloat16, torch.bfloat16] and len(records) == 2


def test_bad_precision_options_are_one_sentence():
    with pytest.raises(widthc.WidthcError, match="--amp fp16 needs --device cuda"):
        Precision("fp16", device="cpu")
    with pytest.raises(widthc.WidthcError, match="--amp must be one of off, bf16, fp16"):
        TrainConfig(amp="fp8").check()
    with pytest.raises(widthc.WidthcError, match="--execution must be one of auto"):
        TrainConfig(execution="fast").check()
    with pytest.raises(widthc.WidthcError, match="--log-every must be 0"):
        TrainConfig(log_every=-1).check()


def test_slim_end_to_end_masked_bf16_channels_last(tmp_path):
    """The whole pipeline with the GPU options on a CPU: training and scoring masked in bf16,
    the slimmed model still proved against sliced execution."""
    from click.testing import CliRunner

    from widthc.cli import main

    out = tmp_path / "run"
    digits = str(Path(__file__).resolve().parents[1] / "examples" / "mobilenet_digits.py")
    res = CliRunner().invoke(
        main,
        ["slim", digits, "--data", "digits", "--flops", "50%", "--out", str(out),
         "--epochs", "1", "--population", "4", "--generations", "1", "--calib-batches", "2",
         "--retrain-epochs", "0", "--execution", "masked", "--amp", "bf16", "--channels-last",
         "--log-every", "5", "--probes", "batched", *CHEAP_TUNING],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "slimmed and proved" in res.output
    config = json.loads((out / CONFIG).read_text())
    assert (config["execution"], config["amp"], config["channels_last"]) == ("masked", "bf16", True)
    assert config["probes"] == "batched"
    lines = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    steps = [r["step"] for r in lines]
    assert steps[: len(steps) - 1] == list(range(1, len(steps)))  # every step logged, in order
    probed = [r for r in lines if r.get("candidates", 0) > 1]  # (bf16 on a CPU: one forward each)
    assert probed and all(r["candidate"] in range(r["candidates"]) for r in probed)
    assert all(len(r["candidate_losses"]) == r["candidates"] and r["flops"] > 0 for r in probed)
