"""`--score-again M` (widthc/stages/top.py, issue 16): after `--score-top K`'s finalists are
tuned, each budget's M best tuned widths and its uniform one are tuned again, longer
(`--score-again-steps N2`, default 2N), and scored by that tuning.

- the contenders are the M best tuned widths and uniform; each one's score is a fresh tuned
  scorer's at N2 steps (brute force); the budget takes the best, the uniform width's score is
  its N2-step one;
- exactly the contenders' sub-networks are tuned beyond the finalists, N2 steps each;
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
from widthc.evaluate import MaxMax, measure
from widthc.run import INHERITED, SEARCH
from widthc.stages import refine, rescore, top
from widthc.tuning import Tuning

AGAIN = 1


@pytest.fixture(scope="module")
def again_run(tmp_path_factory):
    """A tiny regression run: 2 finalists + uniform tuned 5 steps, then the best of them and
    uniform tuned again 10 steps."""
    out, said = tuned_run(tmp_path_factory.mktemp("score_again"), "--score-again", str(AGAIN))
    assert "the 1 best tuned widths and uniform tuned again 10 steps" in said
    return out


def _width(result: dict, ids) -> tuple[int, ...]:
    return tuple(result["width"][str(int(g))]["bins"] for g in ids)


def test_the_budget_takes_the_best_mean_of_its_contenders(again_run):
    ctx = Context.open(again_run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    assert data["finalist_tuning"] == {"steps": 5, "lr": 0.05, "top": 2, "again": AGAIN,
                                       "again_steps": 10}  # fmt: skip
    program, ids = ctx.program, ctx.program.space.ids
    rows = result["rescored"]["scores"]
    uniform = refine.bins_of(result["uniform"], ids)
    ranked = sorted((r for r in rows if tuple(r["width"]) != uniform), key=lambda r: -r["score"])
    contenders = [tuple(r["width"]) for r in ranked[:AGAIN]] + [uniform]
    record = result["rescored"]["again"]
    assert [tuple(r["width"]) for r in record["scores"]] == contenders
    assert (record["widths"], record["steps"]) == (AGAIN, 10)
    tuned = {tuple(r["width"]): r["score"] for r in rows}
    assert [r["tuned"]["score"] for r in record["scores"]] == [tuned[w] for w in contenders]
    net = ctx.supernet(trained=True)
    longer = ctx.scorer(net, steps=10)  # fresh: brute force
    scores = [longer(program.space.choice(np.array(w))) for w in contenders]
    assert [r["candidates"] for r in record["scores"]] == [list(s.candidates) for s in scores]
    assert all(s.value != tuned[w] for w, s in zip(contenders, scores))  # not the 5-step score
    best = int(np.argmax([s.value for s in scores]))
    assert record["chosen"] == best
    assert best != int(np.argmax([tuned[w] for w in contenders]))  # it changes the choice here
    assert _width(result, ids) == contenders[best]
    assert (result["score"], result["candidate"]) == (scores[best].value, scores[best].candidate)
    assert result["uniform"]["score"] == scores[-1].value
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
    assert tuned == _bins(ctx.program, finals) + _bins(ctx.program, contenders)


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
    before = {k: v for k, v in stored["rescored"].items() if k not in ("again", "again_steps")}
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


def test_the_longer_tuning_takes_n2_steps_of_the_same_batches(again_run, monkeypatch):
    ctx = Context.open(again_run, progress=False)
    first, longer = ctx.tuning(), ctx.tuning(steps=10)
    assert (first.steps, longer.steps) == (5, 10)
    assert all((a[0] == b[0]).all() for a, b in zip(first.batches, longer.batches))
    assert _with(ctx, score_again_steps=7).config.search.again_steps(5) == 7
    steps = []
    monkeypatch.setattr(Tuning, "tuned", lambda self, net, c: steps.append(self.steps) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        top.run(ctx)  # the contenders' tuning: --score-again-steps
    assert steps == [7]


def test_the_contenders_are_the_m_best_tuned_and_uniform_last():
    def row(width, score):
        return {"width": list(width), "score": score, "candidate": 0, "candidates": [score]}

    uniform = {"width": {"1": {"bins": 2}, "2": {"bins": 2}}}
    rescored = {"scores": [row((3, 1), -0.5), row((2, 2), -0.1), row((1, 3), -0.3)],
                "climb": {"scores": [row((4, 1), -0.2)]}}  # fmt: skip
    r = {"uniform": uniform, "rescored": rescored}
    got = top.contenders(r, [1, 2], 2)
    assert [w for w, _ in got] == [(4, 1), (1, 3), (2, 2)]  # climbed, finalist; uniform last
    assert [s.value for _, s in got] == [-0.2, -0.3, -0.1]


def test_bad_score_again_values_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-again must be at least 0, got -1"):
        SearchConfig(score_again=-1, score_top=4, score_steps=8).check()
    with pytest.raises(WidthcError, match="--score-again-steps must be at least 1, got 0"):
        SearchConfig(score_again=2, score_again_steps=0, score_top=4, score_steps=8).check()
    with pytest.raises(WidthcError, match="tunes tuned finalists: give --score-top K too \\("):
        SearchConfig(score_again=4, score_steps=8).check()
    tuned = SearchConfig(score_top=4, score_steps=8, score_again=4)
    with pytest.raises(WidthcError, match="--score-again tunes one-stage FLOPs or params"):
        RunConfig(model="m.py", latency=("50%",), search=tuned).check()


def test_with_score_candidates_best_only_the_shared_winner_is_tuned_again(tmp_path):
    """The two options compose: the longer tuning of --score-again also tunes each contender's
    shared-weight winner only, and scores it as a fresh best-mode scorer at N2 steps does."""
    out, said = tuned_run(tmp_path, "--score-again", "1", "--score-candidates", "best")
    assert "the 1 best tuned widths and uniform tuned again 10 steps" in said
    ctx = Context.open(out, progress=False)
    data = ctx.run.read_search()
    assert data["finalist_tuning"]["candidates"] == "best"
    (result,) = data["results"]
    rows = result["rescored"]["again"]["scores"]
    net = ctx.supernet(trained=True)
    shared = ctx.scorer(net, tuned=False)
    longer = ctx.scorer(net, steps=10)
    assert longer.shared is not None
    for row in rows:
        choice = ctx.program.space.choice(np.array(row["width"]))
        winner = shared(choice)
        tuned = [j for j, v in enumerate(row["candidates"]) if v is not None]
        assert tuned == [winner.candidate] == [row["candidate"]]  # one tuning: the winner
        assert row["shared_candidates"] == pytest.approx(list(winner.candidates), abs=1e-6)
        assert row["score"] == longer(choice).value  # brute force, N2 steps
