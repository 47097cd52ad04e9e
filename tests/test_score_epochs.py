"""`--score-epochs E` (issue 16): the fine-tuning before each score counted in passes over the
training split instead of steps (`--score-steps`).

- E passes are E x the split's whole batches, steps that tune and score exactly as
  `--score-steps` of that count does; search.json and the report say both;
- with `--score-top` the finalists are tuned that long, and `--score-again` defaults to twice it;
- a split smaller than one batch still makes one step a pass; both flags at once, or a negative
  E, are refused in one sentence.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

from widthc.config import SearchConfig
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.run import REPORT, SEARCH
from widthc.stages import search

PASSES = 2
BATCHES = 6  # 192 training samples in batches of 32 (TINY)


@pytest.fixture(scope="module")
def epochs_run(tmp_path_factory):
    """A tiny regression run whose search fine-tunes every scored width 2 passes."""
    root = tmp_path_factory.mktemp("score_epochs")
    return slim_run(root, REGRESSION, "--score-epochs", str(PASSES), "--score-lr", "0.05")[0]


def _search(ctx, **options) -> Context:
    ctx.config = dataclasses.replace(
        ctx.config, search=dataclasses.replace(ctx.config.search, **options)
    )
    return ctx


def test_passes_are_whole_batches_tuned_and_scored_as_that_many_steps(epochs_run):
    ctx = Context.open(epochs_run, progress=False)
    assert ctx.score_steps == PASSES * BATCHES
    tuning = ctx.tuning()
    assert tuning.steps == PASSES * BATCHES and len(tuning.batches) == BATCHES  # cycled
    net = ctx.supernet(trained=True)
    program = ctx.program
    width = program.random(0, flops=0.5 * program.flops())
    by_passes = ctx.scorer(net)(width)
    steps = Context.open(epochs_run, progress=False)
    _search(steps, score_epochs=0, score_steps=PASSES * BATCHES)
    assert steps.scorer(steps.supernet(trained=True))(width) == by_passes  # the same steps
    fewer = Context.open(epochs_run, progress=False)
    _search(fewer, score_epochs=1)
    assert fewer.score_steps == BATCHES
    assert fewer.scorer(fewer.supernet(trained=True))(width) != by_passes


def test_search_json_and_the_report_say_the_steps_and_the_passes(epochs_run):
    record = json.loads((epochs_run / SEARCH).read_text())["score_tuning"]
    assert record == {"steps": PASSES * BATCHES, "lr": 0.05, "epochs": PASSES}
    report = (epochs_run / REPORT).read_text()
    assert (
        f"Each width scored was first fine-tuned alone {PASSES * BATCHES} SGD steps "
        f"({PASSES} passes over the training split)." in report
    )


def test_the_finalists_are_tuned_that_long_and_tuned_again_twice_as_long(epochs_run):
    ctx = _search(Context.open(epochs_run, progress=False), score_top=4, score_again=2)
    tuning = search.scoring(ctx)["finalist_tuning"]
    assert tuning["steps"] == PASSES * BATCHES and tuning["epochs"] == PASSES
    assert tuning["again_steps"] == 2 * PASSES * BATCHES
    assert "score_tuning" not in search.scoring(ctx)


def test_a_split_smaller_than_a_batch_makes_one_step_a_pass(epochs_run):
    ctx = Context.open(epochs_run, progress=False)
    ctx.config = dataclasses.replace(
        ctx.config, train=dataclasses.replace(ctx.config.train, batch_size=1000)
    )
    assert ctx.score_steps == PASSES and ctx.tuning().steps == PASSES


def test_score_epochs_is_refused_with_steps_or_below_0():
    SearchConfig(score_epochs=3, score_top=4, score_candidates="best").check()  # tuned: fine
    with pytest.raises(WidthcError, match="--score-steps and --score-epochs both set"):
        SearchConfig(score_steps=8, score_epochs=2).check()
    with pytest.raises(WidthcError, match="--score-epochs must be at least 0"):
        SearchConfig(score_epochs=-1).check()
    with pytest.raises(WidthcError, match="--score-epochs 0 turned the fine-tuning off"):
        SearchConfig(score_top=4, score_epochs=0).check()
