"""`--score-climb M` (widthc/stages/climb.py, issue 16): after `--score-top K`'s finalists are
tuned, a hill climb on tuned scores from the best of them.

- the chosen width is the best tuned score of the finalists, the uniform width and the climbed
  widths, each scored again by a fresh tuned scorer (brute force), and the slimmed model is the
  supernet's weights at it;
- at most M more widths are tuned per budget, each inside [--budget-band, 1] x budget and none
  scored before; the climb follows its rule (brute force over the same moves);
- `--score-climb 0` (the default) is `--score-top` as before, bit for bit;
- a resumed run re-uses the climbed tuned scores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from test_score_top import (
    STEPS,
    TOP,
    _bins,
    _drop_seconds,
    _search_stage,
    _with,
    searched_again,
    tuned_run,
)
from torch import nn

import widthc
from widthc.config import RunConfig, SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, measure
from widthc.run import INHERITED, SEARCH
from widthc.stages import climb, rescore

CLIMB = 4


@pytest.fixture(scope="module")
def climb_run(tmp_path_factory):
    """A tiny regression run: 2 finalists + uniform tuned 5 steps, then 4 widths climbed."""
    out, said = tuned_run(tmp_path_factory.mktemp("score_climb"), "--score-climb", str(CLIMB))
    assert "climbed 4 more widths on tuned scores" in said
    return out


def _width(result: dict, ids) -> tuple[int, ...]:
    return tuple(result["width"][str(int(g))]["bins"] for g in ids)


def test_the_budget_takes_the_best_tuned_of_finalists_uniform_and_climbed_widths(climb_run):
    ctx = Context.open(climb_run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    assert data["finalist_tuning"] == {"steps": STEPS, "lr": 0.05, "top": TOP, "climb": CLIMB}
    program, ids = ctx.program, ctx.program.space.ids
    finals = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    record = result["rescored"]["climb"]
    climbed = [tuple(r["width"]) for r in record["scores"]]
    assert record["widths"] == CLIMB and 0 < len(climbed) <= CLIMB
    assert len(set(climbed)) == len(climbed) and not set(climbed) & set(finals)
    budget = ctx.budgets[result["text"]]
    loads = budget.load(np.array(climbed))
    assert ((0.9 <= loads) & (loads <= 1.0)).all()  # every climbed width in the band
    net = ctx.supernet(trained=True)
    tuned = ctx.scorer(net)  # a fresh tuned scorer: the brute-force scores
    widths = finals + climbed
    scores = [tuned(program.space.choice(np.array(w))) for w in widths]
    got = result["rescored"]["scores"] + record["scores"]
    assert [r["score"] for r in got] == [s.value for s in scores]
    assert [r["candidates"] for r in got] == [list(s.candidates) for s in scores]
    best = int(np.argmax([s.value for s in scores]))
    assert _width(result, ids) == widths[best]
    assert (result["score"], result["candidate"]) == (scores[best].value, scores[best].candidate)
    assert record["chosen"] == (best - len(finals) if best >= len(finals) else None)
    assert record["chosen"] is not None  # this run's climb does win (else the test proves less)
    assert result["flops"] == pytest.approx(float(program.flops_many(np.array([widths[best]]))[0]))
    # the slimmed model is the supernet's weights at the chosen candidate, not the tuned copy
    (folder,) = ctx.run.budget_dirs()
    small = widthc.load(folder / INHERITED)
    plain = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    cand = net.candidates(program.space.choice(np.array(widths[best])))[result["candidate"]]
    assert measure(small, ctx.splits.val, ctx.metric, ctx.device) == pytest.approx(
        plain.candidate(cand), abs=1e-4
    )
    # the climb follows its rule: replayed with the recorded scores, it scores the same widths
    values = dict(zip(widths, (s.value for s in scores)))
    start = max(finals, key=lambda w: values[w])  # rescore's choice (no ties here)
    replayed = []

    def score(w):
        replayed.append(w)
        return values[w]

    known = {w: values[w] for w in finals}
    found = climb.climb(program.space, budget.load, start, known, 0.9, CLIMB, score)
    assert replayed == climbed and found == widths[best]


def test_at_most_m_widths_are_tuned_beyond_the_finalists(climb_run, tmp_path, monkeypatch):
    ctx, stored, again, _, tuned = searched_again(climb_run, tmp_path, monkeypatch)
    run = ctx.run.path
    assert _drop_seconds(again) == _drop_seconds(stored)  # reproducible
    (result,) = again["results"]
    finals = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    climbed = [tuple(r["width"]) for r in result["rescored"]["climb"]["scores"]]
    assert len(climbed) <= CLIMB
    assert tuned == _bins(ctx.program, finals) + _bins(ctx.program, climbed)
    # a smaller M: the climb's first widths, no more
    (run / SEARCH).unlink()
    _with(ctx, score_climb=1)
    _, tuned = _search_stage(ctx, monkeypatch)
    (one,) = json.loads((run / SEARCH).read_text())["results"]
    assert [r["width"] for r in one["rescored"]["climb"]["scores"]] == [list(climbed[0])]
    assert tuned == _bins(ctx.program, finals) + _bins(ctx.program, climbed[:1])


def test_score_climb_0_is_score_top_as_before(climb_run, tmp_path, monkeypatch):
    assert SearchConfig().score_climb == 0  # off by default
    run = tmp_path / "run"
    shutil.copytree(climb_run, run)
    (climbed,) = json.loads((run / SEARCH).read_text())["results"]
    (run / SEARCH).unlink()
    ctx = _with(Context.open(run, progress=False), score_climb=0)
    monkeypatch.setattr(climb, "run", lambda *a: pytest.fail("--score-climb 0 climbed"))
    scored, tuned = _search_stage(ctx, monkeypatch)
    data = json.loads((run / SEARCH).read_text())
    (result,) = data["results"]
    assert data["finalist_tuning"] == {"steps": STEPS, "lr": 0.05, "top": TOP}  # no "climb"
    assert "climb" not in result["rescored"]
    assert tuned == _bins(ctx.program, [tuple(r["width"]) for r in result["rescored"]["scores"]])
    # the climb leaves the search and the finalists' scores as they were; only the width moves
    assert result["history"] == climbed["history"] and result["uniform"] == climbed["uniform"]
    assert {k: v for k, v in climbed["rescored"].items() if k != "climb"} == result["rescored"]


def test_a_resumed_run_reuses_the_climbed_tuned_scores(climb_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(climb_run, run)
    full = json.loads((run / SEARCH).read_text())
    (result,) = full["results"]
    record = result["rescored"]["climb"]
    rows = record["scores"]
    partial = {**result["rescored"], "climb": {**record, "scores": rows[:2], "chosen": None}}
    cut = {**full, "complete": False, "results": [{**result, "rescored": partial}]}
    (run / SEARCH).write_text(json.dumps(cut))  # interrupted after two climbed widths
    ctx = Context.open(run, progress=False)
    scored, tuned = _search_stage(ctx, monkeypatch)
    resumed = json.loads((run / SEARCH).read_text())
    assert _drop_seconds(resumed) == _drop_seconds(full)  # the same result
    left = [tuple(r["width"]) for r in rows[2:]]
    assert tuned == scored == _bins(ctx.program, left)  # the rest: re-used
    assert len(rescore.scored_before(ctx)) == len(result["rescored"]["scores"]) + len(rows)
    # other tuning steps: nothing climbed is re-used
    (run / SEARCH).write_text(json.dumps(cut))
    _with(ctx, score_steps=STEPS + 1)
    assert rescore.scored_before(ctx) == []


def test_the_climb_reaches_a_known_optimum_within_its_budget():
    """On a known score (minus the channels by which a width differs from a bottleneck-shaped
    target at the budget), the climb walks from the uniform width most of the way there,
    scoring only new widths inside the band, at most M of them."""
    layers = [nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)]
    program = widthc.compile(
        nn.Sequential(*layers, nn.ReLU(), nn.Linear(64, 4)), torch.randn(2, 16)
    )
    space, rows = program.space, np.arange(3)
    target = np.array([24, 4, 24])  # bins: 48, 4 and 48 channels of 64
    budget = float(program.flops_many(target[None])[0])
    load = lambda w: program.flops_many(np.atleast_2d(w)) / budget  # noqa: E731

    def value(w) -> float:
        return -float(np.abs(space.channels[rows, list(w)] - space.channels[rows, target]).sum())

    start = tuple(int(b) for b in space.array(program.uniform(flops=budget)))
    calls = []

    def score(w):
        assert w not in calls and w != start and 0.9 <= load(w)[0] <= 1.0
        calls.append(w)
        return value(w)

    found = climb.climb(space, load, start, {start: value(start)}, 0.9, 24, score)
    assert 0 < len(calls) <= 24
    assert value(found) == max(map(value, [start, *calls])) > value(start)
    assert value(found) >= 0.25 * value(start)  # most of the way to the target
    short = []
    climb.climb(
        space, load, start, {start: value(start)}, 0.9, 3, lambda w: short.append(w) or value(w)
    )
    assert short == calls[:3]  # M caps the calls, the same climb


def test_bad_score_climb_values_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-climb must be at least 0, got -1"):
        SearchConfig(score_climb=-1, score_top=4, score_steps=8).check()
    with pytest.raises(
        WidthcError, match="climbs from tuned finalists: give --score-top K too \\("
    ):
        SearchConfig(score_climb=4, score_steps=8).check()
    tuned = SearchConfig(score_top=4, score_steps=8, score_climb=4)
    with pytest.raises(WidthcError, match="one-stage FLOPs or params"):
        RunConfig(model="m.py", flops=("50%",), search=dataclasses.replace(tuned, stages=2)).check()
