"""`--score-candidates best` (widthc/evaluate.py MaxMax `shared`, issue 16): the tuned scorer
fine-tunes, per width, only the candidate that scores best on the supernet's shared weights.

- the tuned candidate is the shared-weight max-max winner, its tuned score the one `all` gives
  that candidate, and the score says which candidate was tuned and that the others were not;
- one fine-tuning per width (with `--score-top` and with `--score-steps` alone);
- `--score-candidates all` (the default) is as before: every candidate tuned, nothing recorded;
- a resumed run never re-uses tuned scores of the other mode.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_score_top import STEPS, TOP, _bins, _drop_seconds, _search_stage, _with, tuned_run

from widthc.config import SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, Score
from widthc.run import SEARCH
from widthc.stages import rescore


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    """A tiny regression run: shared-weight search, then 2 finalists + uniform tuned 5 steps,
    each width's shared-weight winner only."""
    return tuned_run(tmp_path_factory.mktemp("score_best"), "--score-candidates", "best")[0]


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_the_tuned_candidate_is_the_shared_weight_winner(best_run):
    ctx = Context.open(best_run, progress=False)
    data = ctx.run.read_search()
    assert data["finalist_tuning"] == {"steps": STEPS, "lr": 0.05, "top": TOP, "candidates": "best"}
    (result,) = data["results"]
    net, space = ctx.supernet(trained=True), ctx.program.space
    plain = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    every = _with(Context.open(best_run, progress=False), score_candidates="all").scorer(net)
    rows = result["rescored"]["scores"]
    several = 0
    for row in rows:
        choice = space.choice(np.array(row["width"]))
        shared = plain(choice)
        assert row["candidate"] == shared.candidate  # the shared-weight winner
        if len(shared.candidates) == 1:
            continue
        several += 1
        assert row["shared_candidates"] == pytest.approx(list(shared.candidates), abs=1e-6)
        untuned = [None] * len(shared.candidates)
        untuned[shared.candidate] = row["score"]
        assert row["candidates"] == untuned  # only the winner was tuned
        assert row["score"] == every(choice).candidates[shared.candidate]  # as `all` tunes it
    assert several  # the test means something: widths of more than one candidate
    chosen = rows[result["rescored"]["chosen"]]
    assert (result["score"], result["candidate"]) == (chosen["score"], chosen["candidate"])


def test_one_fine_tuning_per_width(best_run, tmp_path, monkeypatch):
    run = _copy(best_run, tmp_path)
    stored = json.loads((run / SEARCH).read_text())
    (run / SEARCH).unlink()
    ctx = Context.open(run, progress=False)
    made, tuned_scorer = [], rescore.tuned_scorer
    monkeypatch.setattr(
        rescore, "tuned_scorer", lambda *a: made.append(tuned_scorer(*a)) or made[-1]
    )
    scored, tuned = _search_stage(ctx, monkeypatch)
    again = json.loads((run / SEARCH).read_text())
    assert _drop_seconds(again) == _drop_seconds(stored)  # reproducible
    (result,) = again["results"]
    widths = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    assert tuned == len(widths) < _bins(ctx.program, widths)
    # the search's own shared-weight scores are re-used: at most the uniform width scored again
    history = {tuple(h["width"]) for h in result["history"]}
    assert scored - tuned - _bins(ctx.program, history) <= _bins(ctx.program, widths[-1:])
    (scorer,) = made
    plain = MaxMax(scorer.net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    space = ctx.program.space
    for h in result["history"]:  # the re-used shared scores are the shared scorer's own
        choice = space.choice(np.array(h["width"]))
        assert scorer.shared(choice) == plain(choice)
    # --score-steps alone: every scored width tuned once
    (run / SEARCH).unlink()
    _with(ctx, score_top=0)
    scored, tuned = _search_stage(ctx, monkeypatch)
    data = json.loads((run / SEARCH).read_text())
    assert data["score_tuning"] == {"steps": STEPS, "lr": 0.05, "candidates": "best"}
    (result,) = data["results"]
    history = {tuple(h["width"]) for h in result["history"]}
    assert tuned == len(history) < _bins(ctx.program, history)
    every = _with(Context.open(run, progress=False), score_candidates="all").scorer(scorer.net)
    for h in result["history"]:  # each the tuned score of its shared-weight winner
        choice = space.choice(np.array(h["width"]))
        assert h["candidate"] == plain(choice).candidate
        assert h["score"] == every(choice).candidates[h["candidate"]]
    assert any(h["candidate"] > 0 for h in result["history"])  # not always the first candidate


def test_only_the_shared_winner_is_tuned(best_run, monkeypatch):
    ctx = Context.open(best_run, progress=False)
    net = ctx.supernet(trained=True)
    scorer, rows = ctx.scorer(net), ctx.run.read_search()["results"][0]["rescored"]["scores"]
    choice = ctx.program.space.choice(np.array(rows[0]["width"]))
    cands = net.candidates(choice)
    last = len(cands) - 1  # a shared-weight winner other than the first
    shared = Score(1.0, last, tuple(float(j == last) for j in range(len(cands))))
    scorer.shared = lambda width: shared
    seen = []
    monkeypatch.setattr(MaxMax, "candidate", lambda self, c: seen.append(c) or 0.25)
    assert scorer(choice) == Score(0.25, last, (*[None] * last, 0.25), shared.candidates)
    assert last > 0 and seen == [cands[last]]  # one fine-tuning, of the shared winner


def test_score_candidates_all_is_as_before(best_run, tmp_path, monkeypatch):
    assert SearchConfig().score_candidates == "all"  # the default
    run = _copy(best_run, tmp_path)
    (run / SEARCH).unlink()
    ctx = _with(Context.open(run, progress=False), score_candidates="all")
    assert ctx.scorer(ctx.supernet(trained=True)).shared is None
    _, tuned = _search_stage(ctx, monkeypatch)
    data = json.loads((run / SEARCH).read_text())
    assert data["finalist_tuning"] == {"steps": STEPS, "lr": 0.05, "top": TOP}
    rows = data["results"][0]["rescored"]["scores"]
    assert tuned == _bins(ctx.program, [tuple(r["width"]) for r in rows])
    assert not any("shared_candidates" in r or None in r["candidates"] for r in rows)


def test_a_resumed_run_reuses_tuned_scores_of_the_same_mode_only(best_run, tmp_path, monkeypatch):
    run = _copy(best_run, tmp_path)
    full = json.loads((run / SEARCH).read_text())
    (result,) = full["results"]
    rows = result["rescored"]["scores"]
    partial = {**result["rescored"], "scores": rows[:1]}  # as the snapshot after one width
    cut = {**full, "complete": False, "results": [{**result, "rescored": partial}]}
    (run / SEARCH).write_text(json.dumps(cut))
    ctx = Context.open(run, progress=False)
    _, tuned = _search_stage(ctx, monkeypatch)
    assert tuned == len(rows) - 1  # the first re-used
    assert _drop_seconds(json.loads((run / SEARCH).read_text())) == _drop_seconds(full)
    (run / SEARCH).write_text(json.dumps(cut))
    _with(ctx, score_candidates="all")
    _, tuned = _search_stage(ctx, monkeypatch)
    redone = json.loads((run / SEARCH).read_text())["results"][0]["rescored"]["scores"]
    widths = [tuple(r["width"]) for r in redone]
    assert tuned == _bins(ctx.program, widths)  # none re-used: every candidate tuned


def test_a_score_keeps_its_untuned_candidates_through_json():
    s = Score(0.5, 1, (None, 0.5, None), (0.1, 0.3, 0.2))
    assert Score.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert "shared_candidates" not in Score(0.5, 0, (0.5, 0.4)).to_json()


def test_bad_score_candidates_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-candidates works on fine-tuned widths"):
        SearchConfig(score_candidates="best", score_steps=0).check()
    with pytest.raises(WidthcError, match="--score-candidates must be one of all, best"):
        SearchConfig(score_candidates="first", score_steps=8).check()
    SearchConfig(score_candidates="best", score_steps=8).check()
