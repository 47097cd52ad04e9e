"""`--score-again M` (widthc/stages/top.py, issue 16): after `--score-top K`'s finalists are
tuned, each budget's M best tuned widths and its uniform one are tuned `--score-repeats` R - 1
more times in other batch orders and scored by the mean.

- the contenders are the M best tuned widths and uniform; each one's tunings are the tuned
  score and fresh tuned scorers' in orders 1..R-1 (brute force); the budget takes the best
  mean, the uniform width's score is its mean;
- exactly (R - 1) x the contenders' sub-networks are tuned beyond the finalists;
- `--score-again 0` (the default) is `--score-top` as before; a resumed run re-uses the
  finalists' tuned scores whether or not the earlier run tuned again.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_score_top import _bins, _drop_seconds, _search_stage, _with, searched_again, tuned_run

import widthc
from widthc.config import RunConfig, SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, Score, measure
from widthc.run import INHERITED, SEARCH
from widthc.stages import refine, rescore, top

AGAIN, REPEATS = 1, 3


@pytest.fixture(scope="module")
def again_run(tmp_path_factory):
    """A tiny regression run: 2 finalists + uniform tuned 5 steps, then the best of them and
    uniform tuned twice more."""
    out, said = tuned_run(tmp_path_factory.mktemp("score_again"), "--score-again", str(AGAIN))
    assert "the 1 best tuned widths and uniform tuned 2 more times each" in said
    return out


def _width(result: dict, ids) -> tuple[int, ...]:
    return tuple(result["width"][str(int(g))]["bins"] for g in ids)


def test_the_budget_takes_the_best_mean_of_its_contenders(again_run):
    ctx = Context.open(again_run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    assert data["finalist_tuning"]["again"] == AGAIN
    assert data["finalist_tuning"]["repeats"] == REPEATS
    program, ids = ctx.program, ctx.program.space.ids
    rows = result["rescored"]["scores"]
    uniform = refine.bins_of(result["uniform"], ids)
    ranked = sorted((r for r in rows if tuple(r["width"]) != uniform), key=lambda r: -r["score"])
    contenders = [tuple(r["width"]) for r in ranked[:AGAIN]] + [uniform]
    record = result["rescored"]["again"]
    assert [tuple(r["width"]) for r in record["scores"]] == contenders
    net = ctx.supernet(trained=True)
    scorers = [ctx.scorer(net, repeat=k) for k in range(REPEATS)]  # fresh: brute force
    means = []
    for w, row in zip(contenders, record["scores"]):
        tunings = [s(program.space.choice(np.array(w))) for s in scorers]
        assert [t["candidates"] for t in row["tunings"]] == [list(t.candidates) for t in tunings]
        assert len({t.value for t in tunings}) == REPEATS  # other batch orders, other scores
        values = np.mean([t.candidates for t in tunings], axis=0)
        assert row["candidates"] == pytest.approx(values.tolist(), rel=1e-6)
        assert (row["score"], row["candidate"]) == (max(values), int(np.argmax(values)))
        means.append(max(values))
    best = int(np.argmax(means))
    assert record["chosen"] == best
    assert _width(result, ids) == contenders[best]
    assert result["score"] == pytest.approx(means[best], rel=1e-6)
    assert result["uniform"]["score"] == pytest.approx(means[-1], rel=1e-6)
    # the slimmed model is the supernet's weights at the chosen candidate, not a tuned copy
    (folder,) = ctx.run.budget_dirs()
    plain = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    cand = net.candidates(program.space.choice(np.array(contenders[best])))[result["candidate"]]
    small = widthc.load(folder / INHERITED)
    assert measure(small, ctx.splits.val, ctx.metric, ctx.device) == pytest.approx(
        plain.candidate(cand), abs=1e-4
    )


def test_only_the_contenders_are_tuned_again(again_run, tmp_path, monkeypatch):
    ctx, stored, again, _, tuned = searched_again(again_run, tmp_path, monkeypatch)
    assert _drop_seconds(again) == _drop_seconds(stored)  # reproducible
    (result,) = again["results"]
    finals = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    contenders = [tuple(r["width"]) for r in result["rescored"]["again"]["scores"]]
    assert len(contenders) == AGAIN + 1 < len(finals)  # M cuts the finalists
    extra = (REPEATS - 1) * _bins(ctx.program, contenders)
    assert tuned == _bins(ctx.program, finals) + extra


def test_score_again_0_is_score_top_as_before(again_run, tmp_path, monkeypatch):
    assert SearchConfig().score_again == 0  # off by default
    run = tmp_path / "run"
    shutil.copytree(again_run, run)
    (stored,) = json.loads((run / SEARCH).read_text())["results"]
    (run / SEARCH).unlink()
    ctx = _with(Context.open(run, progress=False), score_again=0)
    monkeypatch.setattr(top, "run", lambda *a: pytest.fail("--score-again 0 tuned again"))
    _, tuned = _search_stage(ctx, monkeypatch)
    data = json.loads((run / SEARCH).read_text())
    (result,) = data["results"]
    assert "again" not in data["finalist_tuning"] and "again" not in result["rescored"]
    assert tuned == _bins(ctx.program, [tuple(r["width"]) for r in result["rescored"]["scores"]])
    before = {k: v for k, v in stored["rescored"].items() if k not in ("again", "repeats")}
    assert before == result["rescored"]  # the finalists' tuned scores as they were
    assert result["history"] == stored["history"]


def test_a_resumed_run_reuses_the_finalists_tuned_scores(again_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(again_run, run)
    (result,) = json.loads((run / SEARCH).read_text())["results"]
    ctx = Context.open(run, progress=False)
    known = rescore.scored_before(ctx)
    assert [s["width"] for s in known] == [r["width"] for r in result["rescored"]["scores"]]
    assert rescore.scored_before(_with(ctx, score_again=0)) == known  # a count, not a way
    assert rescore.scored_before(_with(ctx, score_steps=6)) == []


def test_the_mean_is_taken_candidate_pattern_by_pattern():
    scores = [Score(-1.0, 0, (-1.0, -3.0)), Score(-2.0, 1, (-5.0, -2.0))]
    assert top.mean(scores) == Score(-2.5, 1, (-3.0, -2.5))  # neither tuning's own winner


def test_the_repeats_tune_on_other_batch_orders(again_run):
    ctx = Context.open(again_run, progress=False)
    first, second = ctx.tuning(), ctx.tuning(repeat=1)
    assert first.steps == second.steps and len(first.batches) == len(second.batches)
    assert any(not (a[0] == b[0]).all() for a, b in zip(first.batches, second.batches))


def test_bad_score_again_values_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-again must be at least 0, got -1"):
        SearchConfig(score_again=-1, score_top=4, score_steps=8).check()
    with pytest.raises(WidthcError, match="--score-repeats must be at least 2, got 1"):
        SearchConfig(score_again=2, score_repeats=1, score_top=4, score_steps=8).check()
    with pytest.raises(WidthcError, match="tunes tuned finalists again: give --score-top K too"):
        SearchConfig(score_again=4, score_steps=8).check()
    tuned = SearchConfig(score_top=4, score_steps=8, score_again=4)
    with pytest.raises(WidthcError, match="--score-again tunes one-stage FLOPs or params"):
        RunConfig(model="m.py", latency=("50%",), search=tuned).check()
