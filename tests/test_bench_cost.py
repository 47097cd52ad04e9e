"""bench/score_steps_cost.py (issue 16): the search stage of any finished run timed in several
ways side by side — a run with two budgets (the known-answer runs have one), `--ways` with
`--score-top` and `--score`, and the known-answer layout (`--runs/<task>-s<seed>`) as before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_tasks import REGRESSION, slim_run  # the tiny regression model file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import score_steps_cost  # noqa: E402


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with two FLOPs budgets, named as a known-answer run is."""
    root = tmp_path_factory.mktemp("cost")
    return slim_run(root, REGRESSION, flops="50%,25%", out=root / "runs" / "tiny-s0")[0]


def test_a_way_is_steps_top_and_score():
    every = {"score_candidates": "all", "score_epochs": 0}  # all tuned unless the way says -best
    assert score_steps_cost.parse_way("0") == {"score_steps": 0, "score_top": 0, **every}
    assert score_steps_cost.parse_way("256-top-16-loss") == {
        "score_steps": 256, "score_top": 16, "score": "loss", **every}  # fmt: skip
    assert score_steps_cost.parse_way("4-metric") == {
        "score_steps": 4, "score_top": 0, "score": "metric", **every}  # fmt: skip
    assert score_steps_cost.parse_way("8-top-4-climb-2-loss") == {
        "score_steps": 8, "score_top": 4, "score_climb": 2, "score": "loss", **every}  # fmt: skip
    assert score_steps_cost.parse_way("256-top-16-loss-best") == {
        "score_steps": 256, "score_epochs": 0, "score_top": 16, "score": "loss",
        "score_candidates": "best"}  # fmt: skip
    assert score_steps_cost.parse_way("8-top-4-loss-again-2") == {
        "score_steps": 8, "score_top": 4, "score": "loss", "score_again": 2, **every}  # fmt: skip
    assert score_steps_cost.parse_way("0-metric-retrain-3") == {
        "score_steps": 0, "score_top": 0, "score": "metric", "score_retrain": 3, **every}  # fmt: skip
    assert score_steps_cost.parse_way("e4-top-16-loss") == {
        "score_steps": 0, "score_epochs": 4, "score_top": 16, "score": "loss",
        "score_candidates": "all"}  # fmt: skip
    with pytest.raises(SystemExit, match="top-16-loss"):
        score_steps_cost.parse_way("top-16")
    with pytest.raises(SystemExit, match="e4-top-16-loss"):
        score_steps_cost.parse_way("e-top-16")


def test_any_run_each_way_tunes_what_it_says_and_scores_every_budget(finished, tmp_path, capsys):
    out = tmp_path / "cost.json"
    ways = (
        "0-metric,3-top-1-loss,3-top-1-loss-best,3-top-1-loss-again-1,0-metric-retrain-1,"
        "e1-top-1-loss"
    )
    argv = ["--run", str(finished), "--ways", ways, "--rounds", "1"]
    score_steps_cost.main([*argv, "--json", str(out)])
    data = json.loads(out.read_text())["tiny-s0"]
    plain, top = data["ways"]["0-metric"][0], data["ways"]["3-top-1-loss"][0]
    assert plain["tuned_widths"] == 0 and plain["clock"]["tuning"] == 0
    # per budget: its best width and its uniform one (fewer if they coincide), each tuned once
    assert 2 <= top["tuned_widths"] <= 4 and top["clock"]["tuning"] > 0
    again = data["ways"]["3-top-1-loss-again-1"][0]  # per budget 1 + uniform tuned again
    assert again["tuned_widths"] == top["tuned_widths"] + 4 and again["scores"] != top["scores"]
    retrained = data["ways"]["0-metric-retrain-1"][0]  # per budget 1 + uniform retrained
    assert retrained["tuned_widths"] == 0 and retrained["scores"] != plain["scores"]
    assert plain["widths"] > 0 and plain["candidates"] >= plain["widths"]
    assert set(plain["scores"]) == set(top["scores"]) == {"50%", "25%"}
    assert top["score"] == "minus the validation loss" != plain["score"]
    assert {"train", "search", "retrain"} <= set(data["stages"])
    printed = capsys.readouterr().out
    assert "| tiny-s0 | 0-metric |" in printed and "| tiny-s0 | 3-top-1-loss |" in printed
    assert "tiny-s0: its own stages, wall s: " in printed
    best = data["ways"]["3-top-1-loss-best"][0]  # one candidate tuned per width
    assert best["tuned_widths"] == top["tuned_widths"]
    assert best["tuned_candidates"] == best["tuned_widths"] < top["tuned_candidates"]
    passes = data["ways"]["e1-top-1-loss"][0]  # one pass: 6 steps (192 samples, batches of 32)
    assert passes["tuned_widths"] == top["tuned_widths"] and passes["scores"] != top["scores"]


def test_the_known_answer_layout_times_steps_0_n_and_top_k(finished, tmp_path):
    out = tmp_path / "cost.json"
    argv = ["--runs", str(finished.parent), "--tasks", "tiny", "--steps", "2", "--top", "1"]
    score_steps_cost.main([*argv, "--rounds", "2", "--json", str(out)])
    ways = json.loads(out.read_text())["tiny-s0"]["ways"]
    assert list(ways) == ["0", "2", "2-top-1"] and all(len(r) == 2 for r in ways.values())
    assert ways["2"][0]["tuned_widths"] == ways["2"][0]["widths"]  # every width tuned
    assert ways["0"][0]["widths"] == ways["2-top-1"][0]["widths"]  # the same first search


def test_a_retrain_way_records_each_budgets_tournament(finished, tmp_path):
    """`-retrain-M`: the tournament's record per budget in the JSON (contenders, validation
    scores, the chosen one, its seed), the budget's score the winner's; none without it."""
    out = tmp_path / "cost.json"
    argv = ["--run", str(finished), "--ways", "0-metric,0-metric-retrain-1", "--rounds", "1"]
    score_steps_cost.main([*argv, "--json", str(out)])
    ways = json.loads(out.read_text())["tiny-s0"]["ways"]
    plain, retrained = ways["0-metric"][0], ways["0-metric-retrain-1"][0]
    assert plain["tournament"] == {}
    assert set(retrained["tournament"]) == {"50%", "25%"}
    seed = json.loads((finished / "config.json").read_text())["seed"]
    for text, record in retrained["tournament"].items():
        vals = [s["val"] for s in record["scores"]]
        assert len(vals) == 2 and record["seed"] == seed + 1  # its best width and uniform
        assert record["chosen"] == vals.index(max(vals))
        assert retrained["scores"][text] == max(vals)
