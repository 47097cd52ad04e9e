"""The supernet training levers (widthc/sampling.py, widthc/train.py): the width laws draw what
they promise (the default draws exactly eq. 1's widths), budget-aware sampling stays in the
budgets' FLOPs bands, and in-place distillation backpropagates the largest width's label loss
plus the candidate's loss against the largest width's outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import widthc
from widthc.errors import WidthcError
from widthc.sampling import WidthSampler, sample_width
from widthc.train import TrainConfig, soft_cross_entropy, train_supernet


@pytest.fixture(scope="module")
def program():
    torch.manual_seed(0)
    layers = []
    for a, b in ((8, 32), (32, 32), (32, 32)):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(32, 4))
    program = widthc.compile(model, torch.randn(2, 8))
    assert len(program.searchable) == 3
    return program


def _draws(program, n: int = 2000, **kwargs) -> np.ndarray:
    sampler, gen = WidthSampler(program, **kwargs), torch.Generator().manual_seed(0)
    return np.stack([program.space.array(sampler(gen)) for _ in range(n)])


def test_the_default_law_draws_exactly_eq_1s_widths(program):
    sampler = WidthSampler(program)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(50):
        assert sampler(a) == sample_width(program, b)


def test_extremes_draw_lopsided_widths_more_often(program):
    share = {
        law: _draws(program, 4000, law=law) / program.space.n_bins
        for law in ("uniform", "extremes")
    }
    lopsided = {  # the middle group in its lowest tenth, its neighbours in their highest
        law: float(np.mean((s[:, 1] <= 0.1) & (s[:, 0] > 0.9) & (s[:, 2] > 0.9)))
        for law, s in share.items()
    }
    assert lopsided["uniform"] == pytest.approx(0.1**3, abs=0.002)
    # the arcsine law: P(share <= 0.1) = 2/pi asin(sqrt(0.1)) = 0.205; 0.205^3 = 0.0086
    assert lopsided["extremes"] == pytest.approx(0.0086, abs=0.005)
    assert lopsided["extremes"] > 5 * lopsided["uniform"]
    assert (share["extremes"] > 0).all() and (share["extremes"] <= 1).all()


def test_log_law_draws_each_groups_bins_log_uniformly(program):
    n = program.space.n_bins
    draws = {law: _draws(program, 4000, law=law) for law in ("uniform", "log")}
    k = draws["log"]
    assert (k >= 1).all() and (k <= n).all() and (k == n).any(axis=0).all()
    for i, ni in enumerate(n):  # P(k <= m) = log(m + 1) / log(n + 1): each octave alike
        m = ni // 8
        expected = np.log(m + 1) / np.log(ni + 1)
        assert np.mean(k[:, i] <= m) == pytest.approx(expected, abs=0.03)
        assert np.mean(draws["uniform"][:, i] <= m) == pytest.approx(m / ni, abs=0.03)
    # the narrowest bin: log 2 / log(n + 1) of the draws (32 bins: 20%, uniform 3%)
    assert np.mean(k[:, 1] == 1) == pytest.approx(np.log(2) / np.log(n[1] + 1), abs=0.03)


def test_the_law_reaches_the_training_steps(program, tmp_path):
    """--sampling log trains the widths its law draws (the step's generator, seeded by the
    run's seed), not the default's."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 8), torch.randint(0, 4, (256,)))
    cfg = TrainConfig(epochs=1, batch_size=16, sampling="log", seed=0)
    train_supernet(widthc.supernet(program, offset=1), data, config=cfg, run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    trained = [r["width"] for r in records if "width" in r]
    assert len(trained) == 16
    gen = torch.Generator().manual_seed(0)
    sampler = WidthSampler(program, law="log")
    assert trained == [[k for _, k in sampler(gen).ks()] for _ in trained]
    gen.manual_seed(0)
    uniform = [[k for _, k in sample_width(program, gen).ks()] for _ in trained]
    assert trained != uniform


def test_flops_law_spreads_the_flops_evenly(program):
    lo, hi = program.flops_many(np.stack([program.space.smallest(), program.space.full()]))
    for law, expected in (("flops", 0.25), ("uniform", None)):
        flops = program.flops_many(_draws(program, law=law))
        low_quarter = float(np.mean(flops < lo + 0.25 * (hi - lo)))
        if expected is not None:
            assert low_quarter == pytest.approx(expected, abs=0.05)
        else:  # per-group sampling: a product of shares, mostly cheap widths
            assert low_quarter > 0.35


def test_budget_sampling_draws_inside_the_bands(program):
    full = program.flops()
    bands = [(0.9 * 0.25 * full, 0.25 * full), (0.9 * 0.5 * full, 0.5 * full)]
    flops = program.flops_many(_draws(program, 1000, budget_share=1.0, bands=bands))
    assert (flops <= 0.5 * full).all()
    inside = [(flops >= lo) & (flops <= hi) for lo, hi in bands]
    assert np.mean(inside[0] | inside[1]) > 0.9
    assert 0.35 < np.mean(inside[0]) < 0.65  # both budgets, alike
    mixed = program.flops_many(_draws(program, 1000, budget_share=0.5, bands=bands))
    in_mixed = np.mean([any(lo <= f <= hi for lo, hi in bands) for f in mixed])
    assert 0.4 < in_mixed < 0.7  # half of the draws, and the uniform ones that fall in by chance


def test_budget_sampling_needs_the_budgets(program):
    with pytest.raises(WidthcError, match="--budget-sampling needs the budgets"):
        WidthSampler(program, budget_share=0.5)
    with pytest.raises(
        WidthcError, match="--sampling must be one of uniform, extremes, flops, log"
    ):
        TrainConfig(sampling="both ends").check()


def test_distillation_trains_the_largest_on_labels_and_the_candidate_on_its_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    reference = copy.deepcopy(model)
    program = widthc.compile(model, torch.ones(2, 4))
    net = widthc.supernet(program, offset=1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, momentum=0.0, weight_decay=0.0, distill=True)
    result = train_supernet(net, TensorDataset(x, y), config=cfg)
    (record,) = [r for r in _log(result)]

    # the same step by hand: the largest width on the labels, the trained candidate on the
    # largest width's class probabilities, one plain SGD step on the sum of the gradients
    ref_program = widthc.compile(reference, torch.ones(2, 4))
    ref = widthc.supernet(ref_program, offset=1)
    width = sample_width(ref_program, torch.Generator().manual_seed(0))
    cand = ref.candidates(width)[record["candidate"]]
    ref.set_choice(ref_program.full())
    teacher = ref(x)
    loss = F.cross_entropy(teacher, y)
    ref.set_choice(cand)
    distilled = soft_cross_entropy(ref(x), teacher.detach())
    (loss + distilled).backward()
    assert record["loss"] == pytest.approx(float(distilled), abs=1e-6)
    with torch.no_grad():
        for p, q in zip(model.parameters(), reference.parameters()):
            assert torch.allclose(p, q - 0.1 * q.grad, atol=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))


def _log(result) -> list[dict]:
    return [{"loss": loss, "candidate": c} for loss, c in zip(result.losses, result.candidates)]


def test_budget_sampling_without_budgets_is_refused_before_anything_is_written(tmp_path):
    from click.testing import CliRunner

    from widthc.cli import main

    model = str(Path(__file__).resolve().parents[1] / "examples" / "mobilenet_digits.py")
    out = tmp_path / "run"
    res = CliRunner().invoke(
        main, ["train", model, "--data", "digits", "--out", str(out), "--budget-sampling", "0.5"]
    )
    assert res.exit_code == 2 and "--budget-sampling needs the budgets" in res.stderr
    assert not out.exists()


def test_an_unknown_sampling_law_is_refused_in_one_sentence(tmp_path):
    from click.testing import CliRunner

    from widthc.cli import main

    model = str(Path(__file__).resolve().parents[1] / "examples" / "mobilenet_digits.py")
    out = tmp_path / "run"
    res = CliRunner().invoke(
        main, ["train", model, "--data", "digits", "--out", str(out), "--sampling", "logs"]
    )
    assert res.exit_code == 2 and not out.exists()
    assert "'logs' is not one of 'uniform', 'extremes', 'flops', 'log'" in res.stderr
