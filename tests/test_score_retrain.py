"""`--score-retrain M` (widthc/stages/tournament.py, issue 16): after the search, each budget's
M best widths and its uniform one are retrained with the retrain stage's recipe under the run's
seed + 1 and judged on the validation split; the best becomes the budget's width.

- brute force: every contender retrained afresh here gives the recorded validation score, and
  the budget takes the best of the M + 1;
- exactly M + 1 retrainings per budget, each under seed + 1, never the run's seed; the retrain
  stage's model of the chosen width is another draw than the tournament's;
- a resumed run re-uses the contenders retrained before and retrains only the rest;
- `--score-retrain 0` (the default) runs no tournament and search.json has no trace of one.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_score_top import _drop_seconds, _with
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

import widthc
from widthc.config import RunConfig, SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import measure
from widthc.run import SEARCH, SLIM
from widthc.stages import multistage, refine, retrain, tournament

M = 2


@pytest.fixture(scope="module")
def tournament_run(tmp_path_factory):
    """A tiny regression run (shared-weight search, retraining 1 epoch), then a tournament of
    its 2 best widths and uniform."""
    root = tmp_path_factory.mktemp("score_retrain")
    out, output = slim_run(root, REGRESSION, "--score-epochs", "0", "--score-retrain", str(M))
    assert "the 2 best widths and uniform retrained 1 epoch(s) (seed 1)" in output
    assert output.count("contender ") >= M + 1  # a progress line per retraining
    return out


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, Context.open(copy, progress=False)


def _count(monkeypatch) -> list:
    """Every retraining's (seed of the initial weights, seed of the training) from now on."""
    seeds, fresh, train = [], retrain.fresh, retrain.train

    def counted_fresh(ctx, cand, chain=None, seed=None):
        seeds.append(["fresh", seed])
        return fresh(ctx, cand, chain, seed=seed)

    def counted_train(ctx, model, folder, epochs, label, seed=None):
        seeds.append(["train", seed])
        return train(ctx, model, folder, epochs, label, seed=seed)

    monkeypatch.setattr(tournament, "fresh", counted_fresh)
    monkeypatch.setattr(tournament, "train", counted_train)
    return seeds


def test_the_budget_takes_the_best_validation_score_of_its_contenders(tournament_run, tmp_path):
    ctx = Context.open(tournament_run, progress=False)
    (result,) = ctx.run.read_search()["results"]
    record, ids = result["tournament"], ctx.program.space.ids
    assert (record["contenders"], record["epochs"], record["seed"]) == (M, 1, ctx.config.seed + 1)
    # brute force: the M best distinct widths of the history in the band, the searched first
    history = {tuple(h["width"]): h for h in result["history"]}
    searched = record["scores"][0]["width"]
    pool = refine.finalists({**result, "width": _as_width(result, ids, searched)}, ids, 99, 0.9)
    uniform = refine.bins_of(result["uniform"], ids)
    widths = [w for w in pool if w != uniform][:M] + [uniform]
    assert [tuple(s["width"]) for s in record["scores"]] == widths
    assert [s["score_before"] for s in record["scores"][:M]] == [history[w]["score"] for w in
                                                                 widths[:M]]  # fmt: skip
    net = ctx.supernet(trained=True)
    vals = []
    for k, w in enumerate(widths):
        cand = net.candidates(ctx.program.space.choice(np.array(w)))[history[w]["candidate"]]
        folder = tmp_path / str(k)
        folder.mkdir()
        model = retrain.fresh(ctx, cand, seed=ctx.config.seed + 1)
        model = retrain.train(ctx, model, folder, 1, "brute force", seed=ctx.config.seed + 1)
        vals.append(measure(model, ctx.splits.val, ctx.score_metric, ctx.device))
    assert [s["val"] for s in record["scores"]] == pytest.approx(vals, abs=1e-6)
    best = int(np.argmax(vals))
    assert record["chosen"] == best
    assert refine.bins_of(result, ids) == widths[best]
    assert result["score"] == pytest.approx(vals[best], abs=1e-6)
    assert result["uniform"]["score"] == pytest.approx(vals[-1], abs=1e-6)
    # honest: the retrain stage's model of the chosen width (the run's seed) is another draw
    (folder,) = ctx.run.budget_dirs()
    stage = measure(widthc.load(folder / SLIM), ctx.splits.val, ctx.score_metric, ctx.device)
    assert abs(stage - vals[best]) > 1e-4


def _as_width(result: dict, ids, bins: list) -> dict:
    """`result`'s width field with bins `bins` (refine.bins_of reads it)."""
    return {str(int(g)): {"bins": b} for g, b in zip(ids, bins)}


def test_m_plus_1_retrainings_each_under_the_runs_seed_plus_1(tournament_run, tmp_path,
                                                              monkeypatch):  # fmt: skip
    _, ctx = _copy(tournament_run, tmp_path)
    seeds = _count(monkeypatch)
    tournament.run(ctx, {})
    assert seeds == [["fresh", 1], ["train", 1]] * (M + 1)
    assert ctx.config.seed == 0  # the run's own seed is never the tournament's


def test_a_resumed_run_retrains_only_the_unfinished_contenders(tournament_run, tmp_path,
                                                               monkeypatch):  # fmt: skip
    run, ctx = _copy(tournament_run, tmp_path)
    stored = json.loads((run / SEARCH).read_text())
    cut = json.loads(json.dumps(stored))
    cut["results"][0]["tournament"]["scores"].pop()  # interrupted before the last one finished
    cut["results"][0]["tournament"]["chosen"] = None
    (run / SEARCH).write_text(json.dumps(cut))
    seeds = _count(monkeypatch)
    multistage.run(ctx)  # the search stage again, as `--resume` runs it
    assert len(seeds) == 2  # one retraining: the two finished contenders re-used
    assert _drop_seconds(json.loads((run / SEARCH).read_text())) == _drop_seconds(stored)
    # retrained another way (here: more epochs): nothing re-used
    assert tournament.retrained_before(_with(ctx, score_retrain_epochs=3)) == {}


def test_score_retrain_0_runs_no_tournament(tournament_run, tmp_path, monkeypatch):
    assert SearchConfig().score_retrain == 0  # off by default
    run, ctx = _copy(tournament_run, tmp_path)
    stored = json.loads((run / SEARCH).read_text())
    (run / SEARCH).unlink()
    monkeypatch.setattr(tournament, "run", lambda *a: pytest.fail("--score-retrain 0 retrained"))
    multistage.run(_with(ctx, score_retrain=0))
    (result,) = json.loads((run / SEARCH).read_text())["results"]
    assert "tournament" not in result
    assert result["history"] == stored["results"][0]["history"]  # the same search


def test_contenders_follow_the_searchs_final_order():
    def row(width, score):
        return {"width": list(width), "score": score, "candidate": 0, "candidates": [score]}

    ids = [1, 2]
    uniform = {"width": _as_width({}, ids, [2, 2]), "score": -0.4, "candidate": 0}
    searched = {"width": _as_width({}, ids, [3, 1]), "score": -0.5, "candidate": 0}
    history = [{**row(w, s), "load": 0.95} for w, s in [((1, 3), -0.1), ((4, 1), -0.2)]]
    r = {**searched, "uniform": uniform, "history": history}
    got = tournament.contenders(r, ids, 2, 0.9)  # the searched width first, then by score
    assert [w for w, _ in got] == [(3, 1), (1, 3), (2, 2)]
    rescored = {"scores": [row((3, 1), -0.5), row((2, 2), -0.1), row((1, 3), -0.3)],
                "climb": {"scores": [row((4, 1), -0.2)]}}  # fmt: skip
    again = {"scores": [row((1, 3), -0.05), row((4, 1), -0.01), row((2, 2), -0.3)]}
    tuned = {**r, "rescored": rescored, "width": _as_width({}, ids, [4, 1])}
    assert [w for w, _ in tournament.contenders(tuned, ids, 2, 0.9)] == [(4, 1), (1, 3), (2, 2)]
    longer = {**tuned, "rescored": {**rescored, "again": again}, "width": uniform["width"]}
    got = tournament.contenders(longer, ids, 1, 0.9)  # uniform chosen: the best other, uniform
    assert [(w, s.value) for w, s in got] == [((4, 1), -0.01), ((2, 2), -0.3)]


def test_bad_score_retrain_values_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-retrain must be at least 0, got -1"):
        SearchConfig(score_retrain=-1).check()
    with pytest.raises(WidthcError, match="--score-retrain-epochs must be at least 1, got 0"):
        SearchConfig(score_retrain=2, score_retrain_epochs=0).check()
    on = SearchConfig(score_retrain=2)
    with pytest.raises(WidthcError, match="one-stage FLOPs or params searches only"):
        RunConfig(model="m.py", latency=("50%",), search=on).check()
    with pytest.raises(WidthcError, match="one-stage FLOPs or params searches only"):
        RunConfig(
            model="m.py", flops=("50%",), search=SearchConfig(score_retrain=2, stages=2)
        ).check()
