"""`--private-bn` (passes/private.py, widthc/private_rows.py): each batch norm whose channels are
one searchable group owns a row of scale and shift per width below full, added to its own. A
row is used at its width only (sliced and masked alike, gradients included), the slimmed model
carries the width's row and equals the supernet there, checkpoints and resume keep the rows,
`--from` and the pipeline's proof use them, and with the flag off nothing changes."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc.cli import main
from widthc.errors import WidthcError
from widthc.ir import WidthChoice
from widthc.passes.private import private_norms
from widthc.private_rows import rows_of
from widthc.train import TrainConfig, train_supernet


def _model(seed: int = 0, concat: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(8, 12), nn.BatchNorm1d(12), nn.ReLU(),
        nn.Linear(12, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4),
    )  # fmt: skip
    with torch.no_grad():  # affine and statistics away from (1, 0): every row matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _net(seed: int = 0, execution: str = "sliced", private_bn: bool = True):
    program = widthc.compile(_model(seed), torch.randn(2, 8))
    return program, widthc.supernet(program, execution=execution, private_bn=private_bn)


def _width(program, *ks: int) -> WidthChoice:
    return program.validate(WidthChoice.of({g.id: k for g, k in zip(program.searchable, ks)}))


def _randomise(net, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.private.tables.values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.5)


def _out(net, choice, x):
    net.set_choice(choice)
    with torch.no_grad():
        return net(x)


def test_every_norm_of_one_group_owns_a_row_per_width_below_full():
    program, net = _net()
    n = [len(g.bins) for g in program.searchable]
    assert n == [12, 12]
    assert net.private.norms == ["1.weight", "1.bias", "4.weight", "4.bias"]
    assert [tuple(t.shape) for t in net.private.tables.values()] == [(11, 12)] * 4
    assert all(not t.any() for t in net.private.tables.values())  # start at the shared values
    assert {k for k in net.state_dict() if k.startswith("private.")} == {
        "private.tables.1/weight", "private.tables.1/bias",
        "private.tables.4/weight", "private.tables.4/bias",
    }  # fmt: skip


def test_a_norm_over_a_concatenation_is_left_out_with_its_reason():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 6), nn.Linear(8, 6)
            self.bn, self.head = nn.BatchNorm1d(12), nn.Linear(12, 4)

        def forward(self, x):
            return self.head(self.bn(torch.cat([self.a(x), self.b(x)], 1)))

    found, skipped = private_norms(widthc.compile(Cat(), torch.randn(2, 8)))
    assert found == [] and skipped == [("bn", "its channels are several groups' (a concatenation)")]


@pytest.mark.parametrize("execution", ["sliced", "masked"])
def test_a_row_changes_only_its_own_width(execution):
    program, net = _net(execution=execution)
    net.eval()
    x = torch.randn(16, 8)
    widths = {k: _width(program, k, 12) for k in (3, 5, 12)}  # the first group at 3, 5, full
    before = {k: _out(net, c, x) for k, c in widths.items()}
    with torch.no_grad():
        net.private.tables["1/weight"][5 - 1] += 0.7  # the row of width 5 of the first norm
        net.private.tables["1/bias"][5 - 1] -= 0.3
    after = {k: _out(net, c, x) for k, c in widths.items()}
    assert not torch.allclose(after[5], before[5], atol=1e-3)
    assert torch.equal(after[3], before[3]) and torch.equal(after[12], before[12])
    # the second norm's rows follow the second group's width, not the first's
    with torch.no_grad():
        net.private.tables["4/weight"][5 - 1] += 0.7
    assert torch.equal(_out(net, widths[5], x), after[5])
    assert not torch.allclose(_out(net, _width(program, 12, 5), x), before[12], atol=1e-3)


def test_masked_equals_sliced_with_rows_gradients_included():
    (_, sliced), (program, masked) = _net(execution="sliced"), _net(execution="masked")
    _randomise(sliced), _randomise(masked)
    x, y = torch.randn(16, 8), torch.randint(4, (16,))
    choice = program.candidates(_width(program, 6, 4), 1)[1]  # a free pattern
    for net in (sliced, masked):
        net.train().set_choice(choice)
        nn.functional.cross_entropy(net(x), y).backward()
    for (name, a), (_, b) in zip(sliced.named_parameters(), masked.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    grad = sliced.private.tables["1/weight"].grad
    assert grad[6 - 1].any() and not grad[torch.arange(11) != 6 - 1].any()  # its row only


def test_slimmed_model_carries_the_rows_and_equals_the_supernet():
    program, net = _net()
    _randomise(net)
    own = {k: v.clone() for k, v in program.gm.state_dict().items()}
    x = torch.randn(16, 8)
    for choice in (_width(program, 4, 9), *program.candidates(_width(program, 7, 2), 1)):
        with rows_of(net.private, choice, written=True):
            small = widthc.slim(program, choice)
        plain = widthc.slim(program, choice)  # without the rows: what a broken slim would give
        with net.isolated(choice, execution="sliced") as gm:
            gm.eval()
            reference = gm(x)
        assert torch.allclose(small(x), reference, atol=1e-5)
        assert not torch.allclose(plain(x), reference, atol=1e-3)
    for k, v in program.gm.state_dict().items():  # the model's own parameters are untouched
        assert torch.equal(v, own[k]), k
    assert all(isinstance(p, nn.Parameter) for p in program.gm.parameters())


def test_flag_off_changes_nothing():
    (_, off), (program, on) = _net(private_bn=False), _net(private_bn=True)
    assert off.private is None and TrainConfig().private_bn is False
    assert not any(k.startswith("private.") for k in off.state_dict())
    x = torch.randn(16, 8)
    for net in (off, on):
        net.train()
    for ks in ((3, 12), (12, 12), (1, 7)):  # untrained rows are zero: bit for bit the same
        assert torch.equal(_out(off, _width(program, *ks), x), _out(on, _width(program, *ks), x))


_DATA = TensorDataset(
    torch.randn(64, 8, generator=torch.Generator().manual_seed(0)),
    torch.randint(4, (64,), generator=torch.Generator().manual_seed(1)),
)
_CFG = TrainConfig(epochs=2, batch_size=8, lr=0.05, checkpoint_every=4, seed=3, private_bn=True)


def test_training_moves_the_rows_and_resume_keeps_them(tmp_path):
    _, straight = _net(0)
    train_supernet(straight, _DATA, config=_CFG, run_dir=tmp_path / "a")
    assert all(t.any() for t in straight.private.tables.values())
    _, first = _net(0)
    train_supernet(first, _DATA, config=_CFG, run_dir=tmp_path / "b", max_steps=4)
    saved = torch.load(tmp_path / "b" / "supernet.pt", weights_only=True)
    assert saved["step"] == 4 and saved["model"]["private.tables.1/weight"].any()
    _, resumed = _net(7)  # other initial weights: everything comes from the checkpoint
    train_supernet(resumed, _DATA, config=_CFG, run_dir=tmp_path / "b", resume=True)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_refused_beside_options_that_read_the_shared_parameters():
    for name, flag in (("compile", "--compile"), ("decay_used", "--decay-used")):
        with pytest.raises(WidthcError, match=f"--private-bn does not run with {flag} "):
            TrainConfig(private_bn=True, **{name: True}).check()
    _, net = _net()
    with pytest.raises(WidthcError, match="--private-bn does not run with --decay-used"):
        train_supernet(net, _DATA, config=TrainConfig(decay_used=True), max_steps=1)


_MODEL_FILE = """
import torch
from torch import nn
from torch.utils.data import TensorDataset

input_shape = (2, 8)


def model():
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3),
    )


def _split(seed):
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def train_data():
    return _split(0)


def val_data():
    return _split(1)


def test_data():
    return _split(2)
"""
_TINY = ["--epochs", "2", "--batch-size", "16", "--population", "4", "--generations", "1",
         "--calib-batches", "2", "--no-onnx"]  # fmt: skip


def test_pipeline_slims_proves_and_reuses_the_rows(tmp_path):
    path = tmp_path / "mlp.py"
    path.write_text(_MODEL_FILE)
    run = tmp_path / "run"
    args = ["slim", str(path), "--flops", "40%", "--out", str(run), *_TINY]
    res = CliRunner().invoke(main, [*args, "--private-bn", "--finetune", "--retrain-epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "slimmed and proved" in res.output
    assert json.loads((run / "config.json").read_text())["private_bn"] is True
    model = torch.load(run / "supernet.pt", weights_only=True)["model"]
    assert model["private.tables.1/weight"].any()
    again = tmp_path / "again"  # --from: the rows come with the supernet
    res = CliRunner().invoke(main, ["slim", str(path), "--from", str(run), "--flops", "60%",
                                    "--out", str(again), "--retrain-epochs", "0", "--no-onnx"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "slimmed and proved" in res.output
