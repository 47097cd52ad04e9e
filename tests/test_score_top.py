"""`--score-top K` (widthc/stages/rescore.py, issue 16): the search scores on shared weights, then
each budget's K best widths and its uniform one are fine-tuned (`--score-steps`) and scored
again, and the best tuned score wins.

- the chosen width is the best tuned of the finalists and the uniform width, each scored by the
  tuned scorer (brute force over the same finalists), and the slimmed model is the supernet's
  weights at it, not the tuned copy;
- only those K + 1 widths are fine-tuned; the search itself is the shared-weight search, bit
  for bit;
- `--score-top 0` (the default) is `--score-steps` as before: every scored width tuned;
- a resumed run re-uses tuned scores of the same steps, rate and score only.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

import widthc
from widthc.config import RunConfig, SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, measure
from widthc.run import INHERITED, SEARCH
from widthc.stages import multistage, refine, rescore, search
from widthc.tuning import Tuning

STEPS, TOP = 5, 2


def tuned_run(root, *options: str):
    """A tiny regression run in `root`, its search scored on shared weights, then 2 finalists +
    uniform tuned 5 steps (and `options`): its folder and the CLI's output."""
    out, output = slim_run(root, REGRESSION, "--score-steps", str(STEPS), "--score-lr", "0.05",
                           "--score-top", str(TOP), *options)  # fmt: skip
    assert "fine-tuned 5 steps and scored again" in output
    return out, output


@pytest.fixture(scope="module")
def top_run(tmp_path_factory):
    """A tiny regression run: shared-weight search, then 2 finalists + uniform tuned 5 steps."""
    return tuned_run(tmp_path_factory.mktemp("score_top"))[0]


def _with(ctx, **search_options):
    s = dataclasses.replace(ctx.config.search, **search_options)
    ctx.config = dataclasses.replace(ctx.config, search=s)
    return ctx


def _search_stage(ctx, monkeypatch) -> tuple[int, int]:
    """The search stage run again on `ctx`: (sub-networks scored, of them fine-tuned)."""
    scored, tuned = [0], [0]
    candidate, tune = MaxMax.candidate, Tuning.tuned

    def counted(self, choice):
        scored[0] += 1
        return candidate(self, choice)

    def counted_tuning(self, net, choice):
        tuned[0] += 1
        return tune(self, net, choice)

    monkeypatch.setattr(MaxMax, "candidate", counted)
    monkeypatch.setattr(Tuning, "tuned", counted_tuning)
    multistage.run(ctx)
    return scored[0], tuned[0]


def searched_again(source, tmp_path, monkeypatch):
    """A copy of the run `source` whose search stage runs again from nothing: its context,
    search.json before and after, the sub-networks scored and of them fine-tuned."""
    run = tmp_path / "run"
    shutil.copytree(source, run)
    stored = json.loads((run / SEARCH).read_text())
    (run / SEARCH).unlink()
    ctx = Context.open(run, progress=False)
    scored, tuned = _search_stage(ctx, monkeypatch)
    return ctx, stored, json.loads((run / SEARCH).read_text()), scored, tuned


def _bins(program, widths) -> int:
    """Candidate sub-networks of `widths` (bin counts)."""
    return sum(len(program.candidates(program.space.choice(np.array(w)))) for w in widths)


def test_the_budget_takes_the_best_tuned_of_its_finalists_and_uniform(top_run):
    ctx = Context.open(top_run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    assert data["finalist_tuning"] == {"steps": STEPS, "lr": 0.05, "top": TOP}
    assert "score_tuning" not in data  # the search's own scores are shared-weight ones
    program, ids = ctx.program, ctx.program.space.ids
    # brute force: the K best distinct widths of the history in the band, the searched first
    pool = [h for h in result["history"] if 0.9 <= h["load"] <= 1.0]
    ranked = sorted(pool, key=lambda h: -h["score"])
    searched = result["rescored"]["searched_before"]
    first = tuple(searched["width"][str(g)]["bins"] for g in ids)
    assert searched["score"] == ranked[0]["score"]  # the searched width: the best shared score
    finals = list(dict.fromkeys([first, *(tuple(h["width"]) for h in ranked)]))[:TOP]
    uniform = refine.bins_of(result["uniform"], ids)
    widths = list(dict.fromkeys([*finals, uniform]))
    rows = result["rescored"]["scores"]
    assert [tuple(r["width"]) for r in rows] == widths and len(widths) <= TOP + 1
    net = ctx.supernet(trained=True)
    tuned = ctx.scorer(net)  # a fresh tuned scorer: the brute-force scores
    plain = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    scores = [tuned(program.space.choice(np.array(w))) for w in widths]
    assert [r["score"] for r in rows] == [s.value for s in scores]
    assert [r["candidates"] for r in rows] == [list(s.candidates) for s in scores]
    shared = [plain(program.space.choice(np.array(w))).value for w in widths]
    assert [r["score_before"] for r in rows] == pytest.approx(shared, abs=1e-6)
    assert all(abs(a.value - b) > 1e-4 for a, b in zip(scores, shared))  # tuned != shared
    best = int(np.argmax([s.value for s in scores]))
    assert result["rescored"]["chosen"] == best
    assert tuple(result["width"][str(g)]["bins"] for g in ids) == widths[best]
    assert (result["score"], result["candidate"]) == (scores[best].value, scores[best].candidate)
    assert result["uniform"]["score"] == scores[widths.index(uniform)].value
    # the slimmed model is the supernet's weights at the chosen candidate, not the tuned copy
    (folder,) = ctx.run.budget_dirs()
    small = widthc.load(folder / INHERITED)
    cand = net.candidates(program.space.choice(np.array(widths[best])))[result["candidate"]]
    got = measure(small, ctx.splits.val, ctx.metric, ctx.device)
    assert got == pytest.approx(plain.candidate(cand), abs=1e-4)
    assert abs(got - scores[best].value) > 1e-4


def test_only_the_finalists_and_uniform_are_tuned_after_a_shared_weight_search(
    top_run, tmp_path, monkeypatch
):
    ctx, stored, again, scored, tuned = searched_again(top_run, tmp_path, monkeypatch)
    run = ctx.run.path
    (result,) = again["results"]
    widths = {tuple(h["width"]) for h in result["history"]}
    rescored = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    assert len(widths) > TOP + 1 and len(rescored) <= TOP + 1
    assert tuned == _bins(ctx.program, rescored)  # K + 1 widths tuned, each candidate once
    assert scored == _bins(ctx.program, widths) + tuned  # the rest scored on shared weights
    assert _drop_seconds(again) == _drop_seconds(stored)  # reproducible
    # the search is the plain shared-weight search, bit for bit
    plain = Context.open(run, progress=False)
    _with(plain, score_steps=0, score_top=0)
    (run / SEARCH).unlink()
    _, tuned_plain = _search_stage(plain, monkeypatch)
    (base,) = json.loads((run / SEARCH).read_text())["results"]
    assert tuned_plain == 0 and base["history"] == result["history"]
    assert base["width"] == result["rescored"]["searched_before"]["width"]


def _drop_seconds(data: dict) -> dict:
    return {**data, "results": [{**r, "seconds": 0} for r in data["results"]]}


def test_score_top_0_tunes_every_scored_width_as_before(top_run, tmp_path, monkeypatch):
    assert SearchConfig(score_steps=STEPS).tune_top == 0  # --score-steps alone: every width
    run = tmp_path / "run"
    shutil.copytree(top_run, run)
    (run / SEARCH).unlink()
    ctx = _with(Context.open(run, progress=False), score_top=0)
    monkeypatch.setattr(rescore, "run", lambda *a: pytest.fail("--score-top 0 rescored"))
    scored, tuned = _search_stage(ctx, monkeypatch)
    data = json.loads((run / SEARCH).read_text())
    (result,) = data["results"]
    assert data["score_tuning"] == {"steps": STEPS, "lr": 0.05} and "finalist_tuning" not in data
    assert "rescored" not in result and tuned == scored  # every scored sub-network tuned
    scorer = ctx.scorer(ctx.supernet(trained=True))
    for h in result["history"]:
        assert h["score"] == scorer(ctx.program.space.choice(np.array(h["width"]))).value
    assert search.scoring(ctx) == {"score": ctx.score_name, "score_tuning": data["score_tuning"]}


def test_a_resumed_run_reuses_tuned_scores_of_the_same_steps_only(top_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(top_run, run)
    full = json.loads((run / SEARCH).read_text())
    (result,) = full["results"]
    rows = result["rescored"]["scores"]
    partial = {**result["rescored"], "scores": rows[:1]}  # as the snapshot after one width
    cut = {**full, "complete": False, "results": [{**result, "rescored": partial}]}
    (run / SEARCH).write_text(json.dumps(cut))  # interrupted after the first tuned width
    ctx = Context.open(run, progress=False)
    scored, tuned = _search_stage(ctx, monkeypatch)
    resumed = json.loads((run / SEARCH).read_text())
    assert _drop_seconds(resumed) == _drop_seconds(full)  # the same result
    left = [tuple(r["width"]) for r in rows[1:]]
    assert tuned == scored == _bins(ctx.program, left)  # the history and the first: re-used
    # another K re-uses every tuned score of the same steps
    (run / SEARCH).write_text(json.dumps(cut))
    _with(ctx, score_top=TOP + 1)
    _, tuned = _search_stage(ctx, monkeypatch)
    redone = json.loads((run / SEARCH).read_text())["results"][0]["rescored"]["scores"]
    assert tuned == _bins(ctx.program, [tuple(r["width"]) for r in redone[1:]])
    # other steps: every finalist tuned again, the shared-weight history still re-used
    (run / SEARCH).write_text(json.dumps(cut))
    _with(ctx, score_top=TOP, score_steps=STEPS + 1)
    scored, tuned = _search_stage(ctx, monkeypatch)
    other = json.loads((run / SEARCH).read_text())
    assert other["finalist_tuning"]["steps"] == STEPS + 1
    widths = [tuple(r["width"]) for r in other["results"][0]["rescored"]["scores"]]
    assert tuned == scored == _bins(ctx.program, widths)
    assert other["results"][0]["rescored"]["scores"][0]["score"] != rows[0]["score"]


def test_bad_score_top_values_are_refused_in_one_sentence():
    with pytest.raises(WidthcError, match="--score-top must be at least 0, got -1"):
        SearchConfig(score_top=-1, score_steps=8).check()
    with pytest.raises(WidthcError, match="--score-top works on fine-tuned widths, and"):
        SearchConfig(score_top=4, score_epochs=0).check()
    tuned = SearchConfig(score_top=4, score_steps=8)
    with pytest.raises(WidthcError, match="--refine-epochs refines one-stage FLOPs or params"):
        latency = dataclasses.replace(tuned, refine_epochs=2)
        RunConfig(model="m.py", latency=("50%",), search=latency).check()  # refine's own rule
    for options in (  # tests/test_score_top_paths.py runs each
        dict(search=dataclasses.replace(tuned, refine_epochs=2), flops=("50%",)),
        dict(search=dataclasses.replace(tuned, stages=2), flops=("50%",)),
        dict(search=tuned, latency=("85%", "75%"), flops=("90%",)),
    ):
        RunConfig(model="m.py", **options).check()
