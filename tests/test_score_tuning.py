"""`--score-steps` (widthc/tuning.py, issue 16): every scored width is fine-tuned alone, a private
copy of the supernet's weights at that width, before it is recalibrated and scored.

- the tuned score is the brute-force one: the slimmed sub-network trained by hand with the same
  steps, then recalibrated and measured; it differs from the plain score and is reproducible;
- the supernet (weights, statistics, mode, choice) and the random state are unchanged by it;
- `--score-steps 0` (the default) scores exactly as before: no tuning at all;
- a resumed search re-uses the scores of the same steps (and replays the same history), and
  scores again under other steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

import widthc
from widthc.config import SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, recalibrate, score_choice
from widthc.run import SEARCH
from widthc.stages import search
from widthc.tuning import Tuning

STEPS = 5


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """A tiny regression run whose search fine-tunes every scored width 5 steps."""
    root = tmp_path_factory.mktemp("score_steps")
    return slim_run(root, REGRESSION, "--score-steps", str(STEPS), "--score-lr", "0.05")[0]


def _state(net) -> str:
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _width(ctx, seed: int = 0):
    program = ctx.program
    return program.random(seed, flops=0.5 * program.flops())


def test_the_tuned_score_is_the_slimmed_width_trained_by_hand(tuned_run):
    ctx = Context.open(tuned_run, progress=False)
    tuning = ctx.tuning()
    assert tuning.steps == STEPS and tuning.lr == 0.05
    assert len(tuning.batches) == STEPS  # 6 batches of 32 in the training split: 5 used
    net = ctx.supernet(trained=True)
    calib, val = ctx.calibration(), ctx.validation()
    width = _width(ctx)
    score = ctx.scorer(net)(width)
    plain = MaxMax(net, calib, val, ctx.score_metric, seed=ctx.config.seed)(width)
    brute = []
    for cand in net.candidates(width):
        small = widthc.slim(ctx.program, cand).train()
        opt = torch.optim.SGD(small.parameters(), lr=0.05, momentum=0.9,
                              weight_decay=ctx.config.train.weight_decay)  # fmt: skip
        floor = ctx.config.train.min_lr
        for step, (x, y) in enumerate(tuning.batches):
            lr = floor + (0.05 - floor) * 0.5 * (1 + math.cos(math.pi * step / STEPS))
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            ctx.loss(small(x), y).backward()
            opt.step()
        with torch.no_grad():
            recalibrate(small, calib)
            small.eval()
            brute.append(sum(ctx.score_metric(small(x), y) * len(y) for x, y in val) / 64)
    np.testing.assert_allclose(score.candidates, brute, rtol=1e-5, atol=1e-6)
    assert all(abs(a - b) > 1e-4 for a, b in zip(score.candidates, plain.candidates))
    again = ctx.scorer(ctx.supernet(trained=True))(width)  # a fresh scorer and supernet
    assert again == score


def test_tuned_scoring_leaves_the_supernet_and_random_state_unchanged(tuned_run):
    ctx = Context.open(tuned_run, progress=False)
    net = ctx.supernet(trained=True).train()
    before, rng = _state(net), torch.get_rng_state()
    scorer = ctx.scorer(net)
    first = [scorer(_width(ctx, s)) for s in range(3)]
    assert scorer.scored == sum(len(net.candidates(_width(ctx, s))) for s in range(3))
    assert "tuning" in scorer.clock
    assert _state(net) == before and torch.equal(torch.get_rng_state(), rng)
    assert net.training and net.choice == ctx.program.full()
    reverse = ctx.scorer(net)
    assert [reverse(_width(ctx, s)) for s in (2, 1, 0)][::-1] == first  # order-independent


def test_score_steps_0_scores_as_before(tuned_run):
    ctx = Context.open(tuned_run, progress=False)
    ctx.config = dataclasses.replace(
        ctx.config, search=dataclasses.replace(ctx.config.search, score_steps=0)
    )
    assert ctx.tuning() is None and not SearchConfig(score_steps=0).tuned  # 0: off
    net = ctx.supernet(trained=True)
    scorer = ctx.scorer(net)
    assert scorer.tuning is None and "score_tuning" not in search.scoring(ctx)
    width = _width(ctx)
    calib, val = ctx.calibration(), ctx.validation()
    today = []  # scored as before --score-steps: the supernet's own isolated sub-network
    for cand in net.candidates(width):
        with torch.random.fork_rng(), net.isolated(cand) as gm:
            torch.manual_seed(ctx.config.seed)
            recalibrate(gm, calib)
            gm.eval()
            total = sum(ctx.score_metric(gm(x), y) * len(y) for x, y in val)
            today.append(float(total) / sum(len(y) for _, y in val))
    assert list(scorer(width).candidates) == today  # bit-identical
    assert [score_choice(net, c, calib, val, ctx.score_metric, ctx.config.seed)
            for c in net.candidates(width)] == today  # fmt: skip
    assert "tuning" not in scorer.clock


def _search_again(ctx, monkeypatch) -> int:
    """The search stage run again on `ctx`; returns the sub-networks it scored."""
    counted = [0]
    original = MaxMax.candidate

    def candidate(self, choice):
        counted[0] += 1
        return original(self, choice)

    monkeypatch.setattr(MaxMax, "candidate", candidate)
    search.run(ctx)
    return counted[0]


def _candidates(ctx, widths) -> int:
    space = ctx.program.space
    return sum(len(ctx.program.candidates(space.choice(np.array(w)))) for w in widths)


def test_a_resumed_search_reuses_the_same_steps_scores_only(tuned_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tuned_run, run)
    full = json.loads((run / SEARCH).read_text())
    assert full["score_tuning"] == {"steps": STEPS, "lr": 0.05}
    (result,) = full["results"]
    cut = dict(full, complete=False, results=[dict(result, history=result["history"][:3])])
    (run / SEARCH).write_text(json.dumps(cut))  # interrupted after 3 widths
    ctx = Context.open(run, progress=False)
    scored = _search_again(ctx, monkeypatch)
    resumed = json.loads((run / SEARCH).read_text())
    assert resumed["results"][0]["history"] == result["history"]  # the same scores, same steps
    assert resumed["results"][0]["score"] == result["score"]
    widths = {tuple(h["width"]) for h in result["history"]}
    preloaded = {tuple(h["width"]) for h in result["history"][:3]}
    assert scored == _candidates(ctx, widths - preloaded) > 0
    # other steps: nothing preloaded, every width scored again, other scores
    ctx.config = dataclasses.replace(
        ctx.config, search=dataclasses.replace(ctx.config.search, score_steps=STEPS + 1)
    )
    scored = _search_again(ctx, monkeypatch)
    other = json.loads((run / SEARCH).read_text())
    assert other["score_tuning"]["steps"] == STEPS + 1
    assert scored == _candidates(ctx, {tuple(h["width"]) for h in other["results"][0]["history"]})
    assert other["results"][0]["uniform"]["score"] != result["uniform"]["score"]


def test_a_private_bn_supernet_is_tuned_from_its_widths_own_rows():
    from test_private_bn import _net, _out, _randomise, _width

    program, net = _net()
    _randomise(net)  # every width's batch-norm rows differ from the shared parameters
    x = torch.randn(16, 8)
    choice = _width(program, 5, 7)
    tuning = Tuning(1, 1e-30, [(x, torch.randn(16, 4))], torch.nn.functional.mse_loss)
    small = tuning.tuned(net, choice)  # one step at a negligible rate: the copy as taken
    net.train()  # both on the batch's statistics (the step moved the copy's running ones)
    with torch.no_grad():
        torch.testing.assert_close(small(x), _out(net, choice, x), rtol=1e-5, atol=1e-5)


def test_bad_score_steps_are_refused_and_a_diverging_tuning_says_so():
    with pytest.raises(WidthcError, match="--score-steps must be at least 0"):
        SearchConfig(score_steps=-1).check()
    with pytest.raises(WidthcError, match="--score-lr must be positive"):
        SearchConfig(score_lr=0.0).check()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    program = widthc.compile(model, torch.randn(2, 3))
    net = widthc.supernet(program)
    batch = (torch.randn(8, 3) * 1e3, torch.randn(8, 1) * 1e3)
    loss = torch.nn.functional.mse_loss
    with pytest.raises(WidthcError, match="diverged .* lower --score-lr"):
        Tuning(20, 10.0, [batch], loss).tuned(net, program.full())
