"""`--score-top K` on every path a default must take (widthc/stages/rescore.py, issue 16):

- a latency budget (alone or with other limits): the finalists are measured (the fake runtime
  of conftest's `fake_clock`), those over the limit are neither tuned nor chosen, the chosen
  width is the best tuned of the rest and the uniform width (brute force), described with its
  predicted latency, and search.json keeps its latency model for the report;
- `--stages 2`: the last stage's finalists tuned on the last stage's supernet, the uniform
  baseline on the first's; where the uniform width wins, the chain is empty and the slimmed
  model is the original supernet's, proved as always;
- `--refine-epochs`: the refined finalists tuned from the refined supernet's weights.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from test_tasks import REGRESSION, TINY  # the tiny regression model file

from widthc.cli import main
from widthc.context import Context
from widthc.run import SEARCH, SUPERNET
from widthc.stages import multistage, refine, rescore, search

TUNE = ["--score-steps", "5", "--score-lr", "0.05"]
LATENCY = ["--runtime", "torch-cpu", "--latency-samples", "8"]


WIDE = REGRESSION.replace("16", "256")  # its latency (MACs on the fake runtime) well above 0.02 ms


def _slim(root, *options, model=REGRESSION):
    (root / "model.py").write_text(model)
    out = root / "run"
    argv = ["slim", str(root / "model.py"), "--out", str(out), *TINY, *TUNE, *options]
    res = CliRunner().invoke(main, [str(a) for a in argv])
    assert res.exit_code == 0, res.output
    return out, res.output


def _brute_force(result: dict, scorer, program, eligible=None) -> tuple[list, int]:
    """Every tuned row's score recomputed by `scorer`, and the best row among `eligible`."""
    rows = result["rescored"]["scores"]
    scores = [scorer(program.space.choice(np.array(r["width"]))) for r in rows]
    assert [r["score"] for r in rows] == [s.value for s in scores]
    assert [r["candidates"] for r in rows] == [list(s.candidates) for s in scores]
    eligible = range(len(rows)) if eligible is None else eligible
    return rows, max(eligible, key=lambda i: scores[i].value)


def _bins(entry: dict, program) -> tuple[int, ...]:
    return refine.bins_of(entry, program.space.ids)


def test_a_latency_budget_tunes_its_finalists_and_describes_the_chosen_with_its_latency(
    fake_clock, tmp_path
):
    run, output = _slim(tmp_path, "--latency", "70%", "--flops", "90%", *LATENCY,
                        "--score-top", "3", model=WIDE)  # fmt: skip
    assert "fine-tuned 5 steps and scored again" in output and "slimmed and proved" in output
    ctx = Context.open(run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    program = ctx.program
    rows, best = _brute_force(result, ctx.scorer(ctx.supernet(trained=True)), program)
    assert result["rescored"]["chosen"] == best and "over_limit" not in result["rescored"]
    assert [r["score"] for r in rows][best] == result["score"]
    chosen = np.array(rows[best]["width"])
    assert _bins(result, program) == tuple(chosen)
    assert result["latency"] == pytest.approx(float(ctx.latency.latency_many(chosen[None])[0]))
    limit = result["limits"]
    kinds = {lim["kind"]: lim["value"] for lim in limit}
    assert result["latency"] <= kinds["latency"] and result["flops"] <= kinds["flops"]
    assert "latency" in result["uniform"] and "latency_model" in data  # what the report reads
    assert "latency.png" in (run / "report.md").read_text()
    (folder,) = ctx.run.budget_dirs()
    measured = json.loads((folder / "metrics.json").read_text())["latency"]
    assert measured["measured_ms"] <= measured["budget_ms"] == kinds["latency"]  # the fake's
    assert measured["predicted_ms"]["widthc"] == result["latency"]


def test_a_finalist_measured_over_the_latency_limit_is_neither_tuned_nor_chosen(
    fake_clock, tmp_path, monkeypatch
):
    run, _ = _slim(tmp_path, "--latency", "70%", *LATENCY, "--score-top", "3", model=WIDE)
    ctx = Context.open(run, progress=False)
    measured, slow = search.measured, []

    def slower(ctx, widths, what, latency):  # a finalist not uniform measures 2x its latency
        ms = measured(ctx, widths, what, latency)
        rows = [tuple(int(k) for k in w) for w in widths]
        if "finalists" in what:  # [*finalists, uniform]
            slow.append(next(w for w in rows[1:-1] if w != rows[-1]))
        return np.array([m * (2 if w in slow else 1) for m, w in zip(ms, rows)])

    monkeypatch.setattr(search, "measured", slower)
    multistage.run(ctx)  # the search again (its scores re-used), then the tuned finalists
    (result,) = ctx.run.read_search()["results"]
    tuned = [tuple(r["width"]) for r in result["rescored"]["scores"]]
    assert result["rescored"]["over_limit"] == [list(slow[0])] and slow[0] not in tuned
    assert len(tuned) >= 2  # the others and the uniform width are still tuned
    _, best = _brute_force(result, ctx.scorer(ctx.supernet(trained=True)), ctx.program)
    assert _bins(result, ctx.program) == tuned[best] != slow[0]


def _last_stage(ctx, result):
    """The last stage's program and trained supernet, through the chain it was searched on."""
    chain = result["rescored"]["searched_before"].get("chain", result["chain"])
    program = ctx.replay(chain, ctx.program)
    return program, ctx.trained_supernet(program, ctx.run.stage_dir(len(chain) + 1) / SUPERNET)


def test_two_stages_tune_the_last_stages_finalists_and_the_uniform_width_on_the_first(tmp_path):
    run, output = _slim(tmp_path, "--flops", "50%", "--stages", "2", "--score-top", "2")
    assert "slimmed and proved" in output
    ctx = Context.open(run, progress=False)
    (result,) = ctx.run.read_search()["results"]
    program, net = _last_stage(ctx, result)
    rows = result["rescored"]["scores"]
    assert [r.get("stage") for r in rows] == [None] * (len(rows) - 1) + [1]  # uniform: stage 1
    first = ctx.scorer(ctx.supernet(trained=True))
    uniform = first(ctx.program.space.choice(np.array(rows[-1]["width"])))
    assert rows[-1]["score"] == uniform.value == result["uniform"]["score"]
    last = {**result, "rescored": {**result["rescored"], "scores": rows[:-1]}}
    _, best = _brute_force(last, ctx.scorer(net), program)
    history = result["history"]  # the last stage's, on shared weights
    assert {tuple(r["width"]) for r in rows[:-1]} <= {tuple(h["width"]) for h in history}
    if uniform.value > rows[best]["score"]:
        assert result["rescored"]["chosen"] == len(rows) - 1 and result["chain"] == []
    else:
        assert result["rescored"]["chosen"] == best and len(result["chain"]) == 1
        assert _bins(result, program) == tuple(rows[best]["width"])


def test_where_the_uniform_width_wins_two_stages_slim_the_original_supernet(tmp_path, monkeypatch):
    tuned = rescore.tuned_scorer

    def favoured(ctx, net):  # the first stage's (the uniform width's) tuned scores lifted
        scorer = tuned(ctx, net)
        return scorer if net.program is not ctx.program else lambda c: _lifted(scorer(c))

    monkeypatch.setattr(rescore, "tuned_scorer", favoured)
    run, output = _slim(tmp_path, "--flops", "50%", "--stages", "2", "--score-top", "2")
    assert "the uniform width scores best" in output and "slimmed and proved" in output
    monkeypatch.undo()
    ctx = Context.open(run, progress=False)
    (result,) = ctx.run.read_search()["results"]
    assert result["chain"] == [] and len(result["rescored"]["searched_before"]["chain"]) == 1
    assert result["width"] == result["uniform"]["width"]
    assert result["candidate_choice"] == result["uniform"]["candidate_choice"]
    (folder,) = ctx.run.budget_dirs()
    widths = json.loads((folder / "widths.json").read_text())
    assert widths["flops"]["after"] == result["flops"] <= result["budget"]


def _lifted(score):
    return type(score)(score.value + 10.0, score.candidate, score.candidates)


def test_refined_finalists_are_tuned_from_the_refined_supernet(tmp_path):
    run, output = _slim(tmp_path, "--flops", "50%", "--refine-epochs", "1", "--refine-top", "3",
                        "--score-top", "2")  # fmt: skip
    assert "refined" in output and "fine-tuned 5 steps and scored again" in output
    ctx = Context.open(run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    assert data["finalist_tuning"]["refine_epochs"] == 1
    refined = result["refined"]["finalists"]
    searched = result["rescored"]["searched_before"]["width"]
    ranked = [tuple(r["width"]) for r in sorted(refined, key=lambda r: -r["score"])]
    program = ctx.program
    first = refine.bins_of({"width": searched}, program.space.ids)
    finals = list(dict.fromkeys([first, *ranked]))[:2]
    uniform = _bins(result["uniform"], program)
    rows = result["rescored"]["scores"]
    assert [tuple(r["width"]) for r in rows] == list(dict.fromkeys([*finals, uniform]))
    by_width = {tuple(r["width"]): r["score"] for r in refined}
    assert [r["score_before"] for r in rows[: len(finals)]] == [by_width[w] for w in finals]
    net = ctx.supernet(trained=True)  # the refined supernet
    assert (ctx.run.refine_dir() / SUPERNET).exists()
    shared = ctx.scorer(net, tuned=False)  # refinement scores on shared weights; rescore tunes
    widths = [tuple(r["width"]) for r in refined]
    assert list(by_width.values()) == [shared(program.space.choice(np.array(w))).value
                                       for w in widths]  # fmt: skip
    rows, best = _brute_force(result, ctx.scorer(net), program)
    assert result["rescored"]["chosen"] == best and _bins(result, program) == tuple(
        rows[best]["width"]
    )
    unrefined = ctx.scorer(ctx.supernet(trained=True, refined=False))
    before = unrefined(program.space.choice(np.array(rows[0]["width"]))).value
    assert before != rows[0]["score"]  # tuned from the refined weights, not the first ones


def test_a_resumed_two_stage_run_tunes_the_same_finalists(tmp_path):
    run, _ = _slim(tmp_path, "--flops", "50%", "--stages", "2", "--score-top", "2")
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / SEARCH).unlink()
    ctx = Context.open(again, progress=False)
    multistage.run(ctx)  # the stages' supernets from their checkpoints, searched and tuned again
    rescored = [
        json.loads((r / SEARCH).read_text())["results"][0]["rescored"] for r in (run, again)
    ]
    assert rescored[0] == rescored[1]
