"""Min-min training (widthc/train.py): it trains exactly the min-loss candidate, reduces the loss
on a real dataset, resumes bit-for-bit, stops cleanly on NaN; and the `widthc train` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc.cli import main
from widthc.frontends.data import load_splits
from widthc.train import MinMinStep, TrainConfig, sample_width, train_supernet

# --- a supernet whose candidates' losses are known in closed form ----------------------------------


_A = 0.05


def _ramp_mlp() -> nn.Sequential:
    """x (4 ones) -> 6 hidden channels, all equal to 2 -> 2 logits. Hidden channel i adds 2ai to
    logit 0 and -2ai to logit 1, so with label 0 the loss of a set A of active channels is
    softplus(-4a * sum(A)): the candidate with the highest channels has the smallest loss."""
    m = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 2, bias=False))
    with torch.no_grad():
        m[0].weight.fill_(0.5)
        m[2].weight[0] = _A * torch.arange(6.0)
        m[2].weight[1] = -_A * torch.arange(6.0)
    return m


def _ramp_setup(want: int = 3):
    model = _ramp_mlp()
    program = widthc.compile(model, torch.ones(2, 4))
    (group,) = program.searchable
    assert group.bins == (1,) * 6  # one channel per bin
    net = widthc.supernet(program, offset=1)
    for seed in range(50):  # a seed whose first width has an unclipped zone
        width = sample_width(net, torch.Generator().manual_seed(seed))
        if len(net.candidates(width)) == want:
            return model, program, net, group, seed
    raise AssertionError("no seed gives an unclipped zone")


_RAMP_DATA = TensorDataset(torch.ones(8, 4), torch.zeros(8, dtype=torch.long))
_PLAIN_SGD = dict(epochs=1, batch_size=8, lr=0.1, momentum=0.0, weight_decay=0.0)


def test_min_min_trains_exactly_the_min_loss_candidate(tmp_path):
    model, program, net, group, seed = _ramp_setup()
    w1, w2 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    cfg = TrainConfig(**_PLAIN_SGD, seed=seed)
    result = train_supernet(net, _RAMP_DATA, config=cfg, run_dir=tmp_path)
    (record,) = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]

    cands = net.candidates(sample_width(net, torch.Generator().manual_seed(seed)))
    active = [c.indices(group).tolist() for c in cands]
    known = [math.log1p(math.exp(-4 * _A * sum(a))) for a in active]
    assert record["candidate_losses"] == pytest.approx(known, abs=1e-6)
    best = min(range(len(known)), key=known.__getitem__)
    assert best == len(cands) - 1  # the right-most pattern: not the default left-most one
    assert result.candidates == [best] and record["candidate"] == best

    chosen = active[best]
    others = sorted(set(range(6)) - set(chosen))
    assert others and any(i in others for a in active for i in a)  # exclusive channels exist
    # the unselected channels got exactly zero gradient: plain SGD leaves them bit-identical
    assert torch.equal(model[0].weight[others], w1[others])
    assert torch.equal(model[2].weight[:, others], w2[:, others])
    # the selected ones moved by exactly one SGD step on the selected candidate's loss
    # (dL/dz0 = p0 - 1 = -dL/dz1, hidden units are 2, dL/dh_i = -2a(1 - p0) i)
    p0 = 1 / (1 + math.exp(-4 * _A * sum(chosen)))
    lr = cfg.lr
    i = torch.tensor(chosen, dtype=torch.float32)
    expected_w1 = 0.5 + lr * 2 * _A * (1 - p0) * i[:, None].expand(-1, 4)
    assert torch.allclose(model[0].weight[chosen], expected_w1, atol=1e-6)
    assert torch.allclose(model[2].weight[0, chosen], _A * i + 2 * lr * (1 - p0), atol=1e-6)
    assert torch.allclose(model[2].weight[1, chosen], -_A * i - 2 * lr * (1 - p0), atol=1e-6)


def test_sandwich_also_trains_largest_and_smallest():
    model, _, net, group, seed = _ramp_setup()
    w2 = model[2].weight.detach().clone()
    train_supernet(net, _RAMP_DATA, config=TrainConfig(**_PLAIN_SGD, seed=seed, sandwich=True))
    assert (model[2].weight != w2).all()  # the full width touched every channel


def test_decay_used_decays_only_the_trained_candidates_channels():
    model, _, net, group, seed = _ramp_setup()
    w1, w2 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    sgd = dict(_PLAIN_SGD, weight_decay=0.1)
    train_supernet(net, _RAMP_DATA, config=TrainConfig(**sgd, seed=seed, decay_used=True))
    cands = net.candidates(sample_width(net, torch.Generator().manual_seed(seed)))
    chosen = cands[-1].indices(group).tolist()  # the min-loss candidate (test above)
    others = sorted(set(range(6)) - set(chosen))
    assert torch.equal(model[0].weight[others], w1[others])  # neither trained nor decayed
    assert torch.equal(model[2].weight[:, others], w2[:, others])

    # the same step with the optimizer's decay: every channel shrinks, trained or not
    model, _, net, group, seed = _ramp_setup()
    train_supernet(net, _RAMP_DATA, config=TrainConfig(**sgd, seed=seed))
    assert torch.allclose(model[0].weight[others], w1[others] * (1 - 0.1 * 0.1))
    # and on the trained channels the two agree: the decay there is the optimizer's
    decayed = model[0].weight[chosen].detach().clone()
    model, _, net, group, seed = _ramp_setup()
    train_supernet(net, _RAMP_DATA, config=TrainConfig(**sgd, seed=seed, decay_used=True))
    assert torch.allclose(model[0].weight[chosen], decayed, atol=1e-7)


def test_every_probe_sees_the_same_dropout_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3))
    program = widthc.compile(model, torch.ones(2, 4))
    net = widthc.supernet(program, offset=1)
    net.train()
    width = next(
        w for s in range(50)
        if len(net.candidates(w := sample_width(net, torch.Generator().manual_seed(s)))) > 1
    )  # fmt: skip
    cands = net.candidates(width)
    step = MinMinStep(net, net, TrainConfig(), F.cross_entropy)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    state = torch.get_rng_state()
    probed = step._probe(cands, x, y)
    assert torch.equal(torch.get_rng_state(), state)  # the trained forward draws the same
    expected = []
    with torch.no_grad(), net.probing():
        for c in cands:
            torch.set_rng_state(state)
            net.set_choice(c)
            expected.append(F.cross_entropy(net(x), y))
    assert torch.allclose(probed, torch.stack(expected))


def test_random_candidate_and_fixed_pattern_baselines():
    model, program, net, _, _ = _ramp_setup()
    data = TensorDataset(torch.ones(40, 4), torch.zeros(40, dtype=torch.long))
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.01, seed=1, minmin_start=1.0)
    result = train_supernet(net, data, config=cfg)
    assert sum(h > 0 for h in result.histogram) >= 2  # random candidates, not always the min
    fixed = train_supernet(widthc.supernet(program, offset=0), data, config=cfg)
    assert fixed.histogram == [20]  # r=0: one (left-most) candidate per width


def test_min_min_choice_is_the_logged_argmin_every_step(tmp_path):
    _, _, net, _, _ = _ramp_setup()
    data = TensorDataset(torch.ones(40, 4), torch.zeros(40, dtype=torch.long))
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.01, seed=3)
    train_supernet(net, data, config=cfg, run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(records) == 20
    for r in records:
        losses = r["candidate_losses"]
        assert len(losses) == (r["candidates"] if r["candidates"] > 1 else 0)
        if losses:
            assert r["candidate"] == losses.index(min(losses))


# --- real data --------------------------------------------------------------------------------


def _digits_cnn() -> nn.Sequential:
    def cbr(i, o, s=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(
        cbr(1, 16), cbr(16, 32, 2), cbr(32, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip


@pytest.mark.parametrize("offset", [0, 1])
def test_training_reduces_the_loss_on_digits(offset):
    s = load_splits("digits", (1, 1, 16, 16), seed=0)
    train_set, val_set, classes = s.train, s.val, s.classes
    assert classes == 10 and len(train_set) + len(val_set) + len(s.test) == 1797
    torch.manual_seed(0)
    program = widthc.compile(_digits_cnn(), torch.randn(2, 1, 16, 16), beta=4)
    net = widthc.supernet(program, offset=offset)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.1)
    result = train_supernet(net, train_set, val_set, cfg)
    per_epoch = len(result.losses) // 3
    first = sum(result.losses[:10]) / 10
    last = sum(result.losses[-per_epoch:]) / per_epoch
    assert first > 2.0 and last < 0.7 * first
    assert result.validation[-1]["val_largest"] > 0.5  # chance is 0.1
    if offset == 1:
        assert sum(h > 0 for h in result.histogram) >= 2


def test_select_batch_fraction_reports_agreement():
    train_set = load_splits("digits", (1, 1, 8, 8), seed=0).train
    torch.manual_seed(0)
    net = widthc.supernet(widthc.compile(_digits_cnn(), torch.randn(2, 1, 8, 8), beta=4))
    cfg = TrainConfig(batch_size=64, select_batch_fraction=0.25, measure_agreement=True)
    result = train_supernet(net, train_set, config=cfg)
    assert result.agreement is not None and 0.0 <= result.agreement <= 1.0
    cfg = TrainConfig(batch_size=64, select_batch_fraction=1.0, measure_agreement=True)
    assert train_supernet(net, train_set, config=cfg).agreement is None  # nothing to compare


# --- checkpoints --------------------------------------------------------------------------------


def _resume_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv2d(8, 12, 3, 2, 1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4),
    )  # fmt: skip


_RESUME_DATA = TensorDataset(
    torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
    torch.randint(4, (64,), generator=torch.Generator().manual_seed(1)),
)
_RESUME_CFG = TrainConfig(
    epochs=2, batch_size=8, lr=0.05, checkpoint_every=4, minmin_start=0.25,
    select_batch_fraction=0.5, measure_agreement=True, sandwich=True, seed=5,
)  # fmt: skip


def _resume_net(seed: int):
    return widthc.supernet(widthc.compile(_resume_model(seed), torch.randn(2, 1, 8, 8)), offset=1)


class _Crash(Exception):
    pass


def test_resume_is_bit_for_bit(tmp_path):
    straight = _resume_net(0)
    full = train_supernet(straight, _RESUME_DATA, _RESUME_DATA, _RESUME_CFG, tmp_path / "a")
    assert full.steps == 16

    calls = [0]

    def crash_mid_run(out, y):
        # steps 1-4 make 3 calls each (random candidate + sandwich), later ones 3 to 9:
        # call 31 falls in step 6 or 7, after the step-4 checkpoint and before the next one
        calls[0] += 1
        if calls[0] > 30:
            raise _Crash
        return torch.nn.functional.cross_entropy(out, y)

    first = _resume_net(0)
    with pytest.raises(_Crash):
        train_supernet(first, _RESUME_DATA, _RESUME_DATA, _RESUME_CFG, tmp_path / "b",
                       loss_fn=crash_mid_run)  # fmt: skip
    saved = torch.load(tmp_path / "b" / "supernet.pt", weights_only=True)
    assert saved["step"] == 4
    assert len((tmp_path / "b" / "train.jsonl").read_text().splitlines()) > 4  # steps to redo

    resumed_net = _resume_net(123)  # other initial weights: everything must come from the file
    rest = train_supernet(
        resumed_net, _RESUME_DATA, _RESUME_DATA, _RESUME_CFG, tmp_path / "b", resume=True
    )
    assert rest.steps == 16 and rest.losses == full.losses[saved["step"] :]
    assert rest.candidates == full.candidates[saved["step"] :]
    assert rest.histogram == full.histogram and rest.agreement == full.agreement
    assert rest.validation == full.validation
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed_net.state_dict().items()):
        assert torch.equal(a, b), k
    log_a = (tmp_path / "a" / "train.jsonl").read_text()
    assert (tmp_path / "b" / "train.jsonl").read_text() == log_a


def test_checkpoint_holds_everything_as_plain_data(tmp_path):
    net = _resume_net(0)
    cfg = TrainConfig(epochs=1, batch_size=16, checkpoint_every=0, seed=2)
    train_supernet(net, _RESUME_DATA, config=cfg, run_dir=tmp_path)
    ckpt = torch.load(tmp_path / "supernet.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["epoch"] == 1 and ckpt["world_size"] == 1
    assert set(ckpt["rng"][0]) >= {"python", "numpy", "torch"}
    assert isinstance(ckpt["step_state"]["sampler"], torch.Tensor)
    assert ckpt["config"]["seed"] == 2 and len(ckpt["order"]) == 64
    assert ckpt["model"].keys() == net.state_dict().keys()
    assert ckpt["optimizer"]["state"] and "base_lrs" in ckpt["scheduler"]
    assert not (tmp_path / "supernet.pt.tmp").exists()


def test_resume_with_other_options_names_the_option(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16)
    train_supernet(_resume_net(0), _RESUME_DATA, config=cfg, run_dir=tmp_path, max_steps=2)
    other = TrainConfig(epochs=1, batch_size=16, lr=0.5)
    with pytest.raises(widthc.WidthcError, match="--lr 0.5"):
        train_supernet(_resume_net(0), _RESUME_DATA, config=other, run_dir=tmp_path, resume=True)
    with pytest.raises(widthc.WidthcError, match="no checkpoint"):
        train_supernet(
            _resume_net(0), _RESUME_DATA, config=cfg, run_dir=tmp_path / "x", resume=True
        )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    calls = [0]

    def nan_at_step_7(out, y):
        calls[0] += 1  # offset 0: exactly one loss per step
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls[0] == 7 else loss

    net = widthc.supernet(widthc.compile(_resume_model(0), torch.randn(2, 1, 8, 8)), offset=0)
    cfg = TrainConfig(epochs=2, batch_size=8, checkpoint_every=2)
    with pytest.raises(widthc.WidthcError, match=r"became nan at step 7 .*step 6\) is kept"):
        train_supernet(net, _RESUME_DATA, config=cfg, run_dir=tmp_path, loss_fn=nan_at_step_7)
    ckpt = torch.load(tmp_path / "supernet.pt", weights_only=True)
    assert ckpt["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 6


def test_config_errors_name_the_option():
    with pytest.raises(widthc.WidthcError, match="--select-batch-fraction"):
        TrainConfig(select_batch_fraction=0).check()
    with pytest.raises(widthc.WidthcError, match="--minmin-start"):
        TrainConfig(minmin_start=2).check()
    with pytest.raises(widthc.WidthcError, match="--label-smoothing must be in"):
        TrainConfig(label_smoothing=1.5).check()
    with pytest.raises(widthc.WidthcError, match="--weight-decay must be 0 or more"):
        TrainConfig(weight_decay=-1).check()
    net = _resume_net(0)
    with pytest.raises(widthc.WidthcError, match="fewer than one batch"):
        train_supernet(net, _RESUME_DATA, config=TrainConfig(batch_size=1000))


# --- the command line ---------------------------------------------------------------------------

MODEL_PY = """
import torch
from torch import nn

input_shape = (1, 1, 12, 12)


def model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
"""

HOOK = """

def data():
    from torch.utils.data import TensorDataset
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 12, 12, generator=g)
    y = torch.randint(10, (40,), generator=g)
    return TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])
"""


def _invoke(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def test_cli_train_writes_the_run_directory(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(MODEL_PY)
    run = tmp_path / "run"
    res = _invoke(model, "--data", "digits", "--out", run, "--batch-size", 256, "--epochs", 2,
                  "--select-batch-fraction", 0.5, "--measure-agreement")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        "trained 8 steps" in res.output and "selection agreement" in res.output
    )  # 1257 // 256 x 2
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == "digits" and config["offset"] == 1 and config["epochs"] == 2
    assert config["input_shape"] == "1,1,12,12" and config["world_size"] == 1
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["searchable_groups"] >= 2
    lines = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == list(range(1, 9))
    assert {"step", "loss", "candidate", "lr"} <= steps[0].keys()
    assert sum("val_largest" in x for x in lines) == 2
    assert torch.load(run / "supernet.pt", weights_only=True)["step"] == 8

    again = _invoke(model, "--data", "digits", "--out", run)
    assert again.exit_code == 2 and "pass --resume" in again.output
    other = _invoke(model, "--out", run, "--resume", "--lr", 0.5)
    assert other.exit_code == 2 and "cannot resume with --lr 0.5" in other.output
    done = _invoke(model, "--out", run, "--resume")
    assert done.exit_code == 0 and "nothing to resume" in done.output
    assert (run / "train.jsonl").read_text().count("\n") == len(lines)  # nothing lost


def test_cli_train_bad_inputs_exit_2(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(MODEL_PY)
    res = _invoke(model, "--data", "cifar100", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "unknown data source 'cifar100'" in res.output
    res = _invoke(model, "--data", "cifar10", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--data cifar10 needs a folder" in res.output
    res = _invoke(model, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--data is missing" in res.output
    res = _invoke(model, "--data", "digits", "--out", tmp_path / "r", "--resume")
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = _invoke(model, "--data", "digits", "--out", tmp_path / "r", "--num-classes", 10)
    assert res.exit_code == 2 and "takes no num_classes" in res.output
    res = _invoke(model, "--data", "digits", "--out", tmp_path / "r", "--distributed")
    assert res.exit_code == 2 and "torchrun" in res.output
    res = _invoke(model, "--data", "digits", "--out", tmp_path / "r", "--select-batch-fraction", 2)
    assert res.exit_code == 2 and "--select-batch-fraction must be in (0, 1], got 2" in res.output
    res = _invoke(model, "--data", "digits", "--out", tmp_path / "r", "--offset", -1)
    assert res.exit_code == 2 and "--offset must be 0 or more" in res.output
    assert not (tmp_path / "r").exists()


def test_cli_train_data_hook(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(MODEL_PY + HOOK)
    res = _invoke(model, "--out", tmp_path / "run", "--batch-size", 8, "--offset", 0)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == "data()"
    assert "trained 4 steps" in res.output


def test_cli_train_torchvision_num_classes(tmp_path):
    run = tmp_path / "run"
    res = _invoke("torchvision:resnet18", "--input-shape", "1,3,16,16", "--data", "digits",
                  "--out", run, "--batch-size", 512, "--beta", 4)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["num_classes"] == 10
    analysis = json.loads((run / "analysis.json").read_text())
    assert any(g["producers"] == ["fc"] and g["channels"] == 10 for g in analysis["groups"])


def test_data_split_is_seeded():
    a = load_splits("digits", (1, 1, 8, 8), seed=3).train
    b = load_splits("digits", (1, 1, 8, 8), seed=3).train
    c = load_splits("digits", (1, 1, 8, 8), seed=4).train
    assert torch.equal(a.tensors[1], b.tensors[1]) and not torch.equal(a.tensors[1], c.tensors[1])
