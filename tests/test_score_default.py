"""The default scoring (issue 16, BENCHMARKS.md "The default since session 15"): with no scoring
option given, the search scores on the shared weights, then each budget's 16 best widths and its
uniform one are fine-tuned alone 4 passes over the training split and scored by minus the
validation loss.

- the resolution: the default tuning applies only when neither --score-steps nor --score-epochs
  is given; either alone keeps its landed meaning (every scored width tuned); 0 turns tuning off
  (the paper's shared-weight scores); --score-top K alone takes the default tuning;
- an older run's config.json (its 0s stored, or no scoring keys at all) keeps its untuned
  meaning when read again;
- a run with no scoring option records that tuning in search.json and the report, and keeps the
  options unset in config.json, so a resume resolves them alike.
"""

from __future__ import annotations

import json

import pytest
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

from widthc.config import RunConfig, SearchConfig
from widthc.context import Context
from widthc.run import CONFIG, REPORT, SEARCH

BATCHES = 6  # 192 training samples in batches of 32 (test_tasks.TINY)


@pytest.mark.parametrize(
    "given, tuned, steps, passes, top",
    [
        ({}, True, 0, 4, 16),  # the default
        ({"score_top": 8}, True, 0, 4, 8),  # K alone: the default tuning, K finalists
        ({"score_top": 0}, True, 0, 4, 0),  # every scored width tuned 4 passes
        ({"score_steps": 64}, True, 64, 0, 0),  # alone: every scored width, as landed
        ({"score_epochs": 2}, True, 0, 2, 0),  # alone: every scored width, as landed
        ({"score_steps": 64, "score_top": 16}, True, 64, 0, 16),
        ({"score_epochs": 0}, False, 0, 0, 0),  # off: the paper's shared-weight scores
        ({"score_steps": 0}, False, 0, 0, 0),
        ({"score_steps": 0, "score_epochs": 3}, True, 0, 3, 0),  # 0 gives way to the other
    ],
)
def test_the_tuning_resolves_to_the_default_only_when_none_is_given(
    given, tuned, steps, passes, top
):
    s = SearchConfig(**given).check()
    assert (s.tuned, s.tune_steps, s.tune_passes, s.tune_top) == (tuned, steps, passes, top)
    assert s.score == "loss"


def test_an_older_runs_stored_zeros_keep_it_untuned():
    before_14 = {
        "model": "m.py",
        "flops": ["50%"],
        "score": "metric",
        "score_steps": 0,
        "score_top": 0,
    }  # fmt: skip  (no score_epochs yet)
    for stored in (before_14, {**before_14, "score_epochs": 0}):
        s = RunConfig.from_json(stored).check().search
        assert not s.tuned and s.tune_top == 0 and s.score == "metric"
    resumed = RunConfig.from_json({"model": "m.py", "flops": ["50%"]}).check().search
    assert resumed.tuned and resumed.tune_top == 16


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A tiny regression run with no scoring option."""
    return slim_run(tmp_path_factory.mktemp("score_default"), REGRESSION)[0]


def test_a_run_with_no_scoring_option_tunes_the_16_best_widths_4_passes(default_run):
    data = json.loads((default_run / SEARCH).read_text())
    assert data["score"] == "minus the validation loss"
    assert data["finalist_tuning"] == {"steps": 4 * BATCHES, "lr": 0.1, "epochs": 4, "top": 16}
    assert "score_tuning" not in data
    rescored = data["results"][0]["rescored"]
    assert 1 < len(rescored["scores"]) <= 17  # the finalists and the uniform width
    assert rescored["scores"][rescored["chosen"]]["score"] == data["results"][0]["score"]
    report = (default_run / REPORT).read_text()
    assert "16 best widths and its uniform one were fine-tuned alone 24 SGD steps (4 passes" in (
        report
    )


def test_the_run_keeps_the_options_unset_so_a_resume_resolves_them_alike(default_run):
    stored = json.loads((default_run / CONFIG).read_text())
    assert stored["score_steps"] is None and stored["score_epochs"] is None
    assert stored["score_top"] is None and stored["score"] == "loss"
    ctx = Context.open(default_run, progress=False)
    assert ctx.score_steps == 4 * BATCHES and ctx.config.search.tune_top == 16


def test_an_older_runs_config_without_the_scoring_keys_reads_as_it_ran(default_run, tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(default_run, run)
    stored = json.loads((run / CONFIG).read_text())
    old = {k: v for k, v in stored.items() if k not in ("score", "score_steps", "score_epochs",
                                                          "score_top")}  # fmt: skip
    (run / CONFIG).write_text(json.dumps(old))
    ctx = Context.open(run, progress=False)
    s = ctx.config.search
    assert not s.tuned and s.tune_top == 0 and s.score == "metric"  # as that widthc scored
