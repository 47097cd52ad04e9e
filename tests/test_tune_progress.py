"""The finalists' fine-tuning shows a progress bar, as the search does (issue 16): with the
default scoring each budget's 16 best widths and its uniform one are tuned 4 passes each, the
longest quiet stretch of a run otherwise. Each bar counts the widths tuned (of the finalists,
`--score-climb`'s climb, `--score-again`'s contenders) and shows the best tuned score so far."""

from __future__ import annotations

import json

import pytest
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

from widthc.run import SEARCH
from widthc.stages.search import WidthsBar

BATCHES = 6  # 192 training samples in batches of 32 (test_tasks.TINY)


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """A tiny regression run tuning 3 finalists, climbing 2 widths and tuning 1 contender
    again, with every WidthsBar it opened recorded: its label, total and updates."""
    seen: list[dict] = []
    init, update = WidthsBar.__init__, WidthsBar.update

    def recording_init(self, label, total, enabled):
        seen.append({"label": label, "total": total, "updates": []})
        self.record = seen[-1]
        init(self, label, total, enabled)

    def recording_update(self, n, best):
        self.record["updates"].append((n, best))
        update(self, n, best)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WidthsBar, "__init__", recording_init)
        mp.setattr(WidthsBar, "update", recording_update)
        run, _ = slim_run(tmp_path_factory.mktemp("tune_progress"), REGRESSION, "--score-epochs",
                          "1", "--score-top", "3", "--score-climb", "2", "--score-again", "1")  # fmt: skip
    return {b["label"]: b for b in seen}, json.loads((run / SEARCH).read_text())["results"][0]


def test_every_tuning_has_its_bar_after_the_search(bars):
    by_label, _ = bars
    assert list(by_label) == [
        "search 50%",
        f"tune 50% ({BATCHES} steps each)",
        f"climb 50% ({BATCHES} steps each)",
        f"tune again 50% ({2 * BATCHES} steps each)",  # --score-again-steps: twice the steps
    ]


def test_the_finalists_bar_counts_each_tuned_width_and_the_best_score(bars):
    by_label, result = bars
    bar, rows = by_label[f"tune 50% ({BATCHES} steps each)"], result["rescored"]["scores"]
    assert bar["total"] == len(rows) == 4  # 3 finalists and the uniform width
    assert [n for n, _ in bar["updates"]] == [1, 2, 3, 4]
    assert [b for _, b in bar["updates"]] == [
        max(r["score"] for r in rows[:n]) for n in range(1, 5)
    ]


def test_the_climb_and_the_again_bars_count_their_widths(bars):
    by_label, result = bars
    climb = by_label[f"climb 50% ({BATCHES} steps each)"]
    climbed = result["rescored"]["climb"]["scores"]
    assert climb["total"] == 2 and [n for n, _ in climb["updates"]] == list(
        range(1, len(climbed) + 1)
    )
    again = by_label[f"tune again 50% ({2 * BATCHES} steps each)"]
    rows = result["rescored"]["again"]["scores"]
    assert again["total"] == len(rows) == 2  # 1 contender and the uniform width
    assert again["updates"][-1] == (2, max(r["score"] for r in rows))
