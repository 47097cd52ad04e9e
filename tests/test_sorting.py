"""Channels sorted during supernet training (`--sort-every`, widthc/sorting.py; issue 16): a
sort leaves the full width's function unchanged, permutes the momentum with the weights (the
next step is the permuted step), resumes bit for bit, and off it changes nothing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc import loop, sorting
from widthc.train import MinMinStep, TrainConfig, train_supernet
from widthc.verify import relative_error

X = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(4, (64,), generator=torch.Generator().manual_seed(1))
DATA = TensorDataset(X, Y)


class Residual(nn.Module):
    """conv-bn stages with a residual add (one group coupled across it) and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                                  nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8))  # fmt: skip
        self.head = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, 4))  # fmt: skip

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.body(x)))


def _net(seed: int = 0, dtype=torch.float32, offset: int = 1):
    torch.manual_seed(seed)
    model = Residual().to(dtype)
    for m in model.modules():  # running statistics that differ per channel
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.2, 2)
    example = X[:2].to(dtype)  # the same example inputs for any seed (as a resumed run has)
    return widthc.supernet(widthc.compile(model, example), offset)


def _out(net, choice, x, train=False):
    net.set_choice(choice)
    net.train(train)
    with torch.no_grad(), torch.random.fork_rng(), net.probing():  # statistics untouched
        return net(x)


def test_a_sort_leaves_the_full_width_unchanged_and_moves_the_narrow_widths():
    net = _net(dtype=torch.float64)
    program = net.program
    x = X[:16].double()
    small = program.smallest()
    before = [_out(net, program.full(), x), _out(net, program.full(), x, train=True)]
    before_small = _out(net, small, x)
    done = sorting.sort_supernet(net, None, "l1")
    assert done.moved >= 2 and done.groups == len(program.searchable)
    after = [_out(net, program.full(), x), _out(net, program.full(), x, train=True)]
    for a, b in zip(after, before):
        assert relative_error(a, b) <= 1e-6  # eval (running statistics) and training mode
    assert relative_error(_out(net, small, x), before_small) > 1e-3  # other channels kept
    # the narrow width now keeps the largest-L1 channels of each group's producers
    conv = dict(program.gm.named_modules())["body.0"]
    l1 = conv.weight.detach().abs().sum((1, 2, 3))
    assert torch.all(l1[:-1] >= l1[1:])
    assert sorting.sort_supernet(net, None, "l1").moved == 0  # sorted stays sorted


def _full_step(net, opt, x, y):
    net.set_choice(net.program.full())
    net.train()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _trained_pair():
    """Two identical float64 supernets, each with SGD momentum after three steps (two at a
    narrow width, so the momentum is uneven across channels)."""
    pair = []
    for _ in range(2):
        net = _net(dtype=torch.float64)
        opt = loop.sgd([p for p in net.parameters()], 0.05, 0.9, 1e-3)
        for i, choice in enumerate([net.program.smallest(), net.program.full()] * 2):
            net.set_choice(choice)
            net.train()
            F.cross_entropy(net(X[i * 8 : i * 8 + 8].double()), Y[i * 8 : i * 8 + 8]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        pair.append((net, opt))
    return pair


@pytest.mark.parametrize("permute_momentum", [True, False])
def test_a_step_after_a_sort_is_the_permuted_step(permute_momentum):
    (a, opt_a), (b, opt_b) = _trained_pair()
    orders = widthc.order_channels(a.program, method="l1").orders
    x, y = X[32:48].double(), Y[32:48]
    # a: sort (weights and momentum), then step; b: step, then permute everything alike
    sorting.permute_supernet(a, orders, opt_a if permute_momentum else None)
    _full_step(a, opt_a, x, y)
    _full_step(b, opt_b, x, y)
    sorting.permute_supernet(b, orders, opt_b)
    params_b = dict(b.named_parameters())
    worst = max(
        relative_error(p.detach(), params_b[name].detach()) for name, p in a.named_parameters()
    )
    if permute_momentum:
        assert worst <= 1e-9
        for (name, buf), (_, other) in zip(a.named_buffers(), b.named_buffers()):
            assert torch.allclose(buf, other, rtol=0, atol=1e-12), name
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(
                opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"], atol=1e-12
            )
    else:  # the control: momentum left in the old order steps other weights
        assert worst > 1e-4


def test_momentum_is_permuted_through_the_optimizer_state():
    (net, opt), _ = _trained_pair()
    conv = dict(net.program.gm.named_modules())["body.0"]
    old = opt.state[conv.weight]["momentum_buffer"].clone()
    orders = widthc.order_channels(net.program, method="l1").orders
    (out,) = [g.id for g in net.program.searchable if g.n == 12]  # body.0's outputs
    (trunk,) = [g.id for g in net.program.searchable if g.n == 8]  # its inputs: the residual
    sorting.permute_supernet(net, orders, opt)
    expected = old[orders[out]][:, orders[trunk]]
    assert torch.equal(opt.state[conv.weight]["momentum_buffer"], expected)


CFG = TrainConfig(epochs=3, batch_size=8, lr=0.05, checkpoint_every=3, sandwich=True, seed=2)


def test_training_sorts_at_epoch_ends_but_the_last_and_logs_it(tmp_path):
    result = train_supernet(_net(), DATA, DATA, replace_cfg(sort_every=1), tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "train.jsonl").read_text().splitlines()]
    sorts = [r for r in lines if "sorted" in r]
    assert [r["epoch"] for r in sorts] == [0, 1]  # not after the last epoch
    assert all(r["sorted"] == "l1" and r["error"] <= 1e-6 and r["moved"] >= 1 for r in sorts)
    # each sort comes after its epoch's validation and before the next epoch's first step
    at = [i for i, r in enumerate(lines) if "sorted" in r]
    assert all("val_largest" in lines[i - 1] and lines[i + 1]["step"] == 8 * (k + 1) + 1
               for k, i in enumerate(at))  # fmt: skip
    assert result.steps == 24
    assert [sorting.due(e, 2, 3) for e in range(3)] == [False, True, False]
    assert not any(sorting.due(e, 0, 3) for e in range(3))


def replace_cfg(**kw) -> TrainConfig:
    from dataclasses import replace

    return replace(CFG, **kw)


@pytest.mark.parametrize(  # mid-epoch, an epoch end (sorted), after 2 sorts; in a warm-up
    ("stop", "warmup"), [(5, 0), (8, 0), (16, 0), (5, 1)]
)
def test_a_resumed_run_sorts_as_the_straight_run(tmp_path, stop, warmup):
    cfg = replace_cfg(sort_every=1, sort_by="bn", sort_warmup=warmup)
    straight = _net()
    full = train_supernet(straight, DATA, DATA, cfg, tmp_path / "a")
    train_supernet(_net(), DATA, DATA, cfg, tmp_path / "b", max_steps=stop)
    resumed = _net(seed=7)  # other weights: everything must come from the checkpoint
    rest = train_supernet(resumed, DATA, DATA, cfg, tmp_path / "b", resume=True)
    assert rest.losses == full.losses[stop:] and rest.validation == full.validation
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert (tmp_path / "a" / "train.jsonl").read_text() == (
        tmp_path / "b" / "train.jsonl"
    ).read_text()


def test_a_warmup_trains_the_full_width_alone_then_sorts(tmp_path):
    net = _net()
    full_bins = [len(g.bins) for g in net.program.searchable]
    train_supernet(net, DATA, DATA, replace_cfg(sort_warmup=1), tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "train.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    warm, rest = steps[:8], steps[8:]
    assert all(r["width"] == full_bins and r["candidates"] == 1 for r in warm)
    assert sum(r["width"] != full_bins for r in rest) >= 8  # then min-min over all widths
    assert [r["epoch"] for r in lines if "sorted" in r] == [0]  # once, at the warm-up's end
    with pytest.raises(widthc.WidthcError, match="--sort-warmup must be .* fewer than the su"):
        replace_cfg(sort_warmup=3).check()


def test_off_is_bit_identical_to_training_without_the_hook(tmp_path, monkeypatch):
    result_sorted = train_supernet(_net(), DATA, DATA, replace_cfg(sort_every=1), tmp_path / "s")
    monkeypatch.setattr(sorting, "sort_supernet", None)  # off never sorts
    off = _net()
    result_off = train_supernet(off, DATA, DATA, CFG, tmp_path / "off")
    assert result_sorted.losses != result_off.losses  # the comparison below can fail
    monkeypatch.delattr(MinMinStep, "epoch_end")  # the loop as it was before the flag
    before = _net()
    result_before = train_supernet(before, DATA, DATA, CFG, tmp_path / "before")
    assert result_off.losses == result_before.losses
    assert result_off.validation == result_before.validation
    for (k, a), (_, b) in zip(off.state_dict().items(), before.state_dict().items()):
        assert torch.equal(a, b), k
    assert (tmp_path / "off" / "train.jsonl").read_text() == (
        tmp_path / "before" / "train.jsonl"
    ).read_text()


def test_bad_sort_options_are_one_sentence():
    with pytest.raises(widthc.WidthcError, match="--sort-every must be 0 .never. or more, got -1"):
        TrainConfig(sort_every=-1).check()
    with pytest.raises(widthc.WidthcError, match="--sort-by must be one of l1, l2, bn, got taylor"):
        TrainConfig(sort_by="taylor").check()
    for flag in ("sort_every", "sort_warmup"):  # the private rows would not follow a sort
        with pytest.raises(widthc.WidthcError, match="--private-bn does not run with --sort-"):
            TrainConfig(epochs=3, private_bn=True, **{flag: 1}).check()


def test_slim_sorts_proves_and_reuses_the_sorted_supernet(tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from widthc.cli import main

    digits = str(Path(__file__).resolve().parents[1] / "examples" / "mobilenet_digits.py")
    tiny = ["--population", "4", "--generations", "1", "--calib-batches", "2", *CHEAP_TUNING]
    out = tmp_path / "sorted"
    res = CliRunner().invoke(main, ["slim", digits, "--data", "digits", "--flops", "50%",
                                    "--epochs", "2", "--sort-every", "1", "--sort-by", "l2",
                                    "--retrain-epochs", "0", "--out", str(out), *tiny])  # fmt: skip
    assert res.exit_code == 0, res.output  # slimmed and proved equal to the sorted supernet
    log = [json.loads(s) for s in (out / "train.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["sorted"]) for r in log if "sorted" in r] == [(0, "l2")]
    again = tmp_path / "again"
    res = CliRunner().invoke(main, ["slim", digits, "--from", str(out), "--flops", "30%",
                                    "--retrain-epochs", "0", "--out", str(again), *tiny])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (again / "supernet.pt").read_bytes() == (out / "supernet.pt").read_bytes()
    assert json.loads((again / "config.json").read_text())["sort_every"] == 1
    assert (again / "flops-30pct" / "slim.pt").is_file()
