"""bench/known_targets.py: issue 16's four targets per lever and task, from the stored
known-answer runs (bench/known_answer.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "known"))

import known_answer  # noqa: E402
import known_targets  # noqa: E402


def test_the_targets_board_measures_each_target_from_the_stored_runs(tmp_path, monkeypatch):
    """bench/known_targets.py: recovered = mean won / mean gap, won over its seed std, the share
    of scored runs ranking the oracle above uniform, τ against the truth's mean; `*` marks a
    met target, levers with fewer runs than --min-seeds are left out."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    truth = [[0.1, 0.2, 0.3], [0.1, 0.3, 0.2]]  # two retraining seeds of three widths
    monkeypatch.setattr(known_answer, "truth_metrics", lambda task, seeds=None: truth)

    def run(seed, won, oracle_score, scores):
        side = {"val": 0.0, "test": 0.0, "score": 0.5, "channels": [1]}
        return {"seed": seed, "seconds": 1.0, "supernet": {}, "truth_scores": scores,
                "oracle": {"val": 0.1, "test": 0.1, "score": oracle_score, "channels": [1]},
                "uniform": side, "widthc": {**side, "val": won}}  # fmt: skip

    for seed, (won, score) in enumerate([(0.09, 0.6), (0.10, 0.6), (0.11, 0.4)]):
        known_answer._write(tmp_path / "default" / f"bottleneck-s{seed}.json",
                            run(seed, won, score, [1.0, 2.0, 3.0]))  # fmt: skip
    known_answer._write(tmp_path / "sandwich" / "bottleneck-s0.json", run(0, 0.0, 0.6, None))
    m = known_targets.measures(known_answer.summaries("default", "bottleneck"), "bottleneck")
    assert m["seeds"] == 3 and m["recovered"] == pytest.approx(1.0)
    assert m["stds"] == pytest.approx(0.10 / 0.01) and m["ranks"] == pytest.approx(2 / 3)
    assert m["tau"] == pytest.approx(known_answer.kendall_tau([1, 2, 3], [0.1, 0.25, 0.25]))
    assert (m["above"], m["scored"]) == (2, 3)
    rows = known_targets.board(min_seeds=3)
    assert list(rows) == ["default"] and list(rows["default"]) == ["bottleneck"]
    text = known_targets.table(rows)
    assert "| default | 100%* (3) |" in text and "| default | 67% (3) |" in text
    assert "sandwich" in known_targets.table(known_targets.board(min_seeds=1))


def test_a_task_off_the_board_is_counted_only_when_named(tmp_path, monkeypatch, capsys):
    """`--tasks` adds a task off the board (known_answer.OFF_BOARD) as a sixth column whose met
    targets count in the last column; without it the board is the five tasks; an unknown task is
    refused in one sentence with exit 2."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "truth_metrics", lambda task, seeds=None: None)
    side = {"val": 0.0, "test": 0.0, "score": 0.5, "channels": [1]}
    for seed, won in enumerate([0.09, 0.10, 0.11]):
        run = {"seed": seed, "seconds": 1.0, "supernet": {}, "truth_scores": None,
               "oracle": {"val": 0.1, "test": 0.1, "score": 0.6, "channels": [1]},
               "uniform": side, "widthc": {**side, "val": won}}  # fmt: skip
        known_answer._write(tmp_path / "default" / f"bottleneck-cls-64-16k-s{seed}.json", run)
    assert known_targets.board(min_seeds=3) == {}  # not on the board
    six = (*known_answer.TASKS, "bottleneck-cls-64-16k")
    rows = known_targets.board(min_seeds=3, tasks=six)
    assert list(rows["default"]) == ["bottleneck-cls-64-16k"]
    text = known_targets.table(rows, six)
    assert f"| lever | {' | '.join(six)} | met |" in text
    assert "| default |  |  |  |  |  | 100%* (3) | 1 |" in text  # recovered, counted
    with pytest.raises(SystemExit) as exit_:
        known_targets.main(["--tasks", "bottleneck,bottlenek"])
    assert exit_.value.code == 2 and "unknown task bottlenek" in capsys.readouterr().err


def test_the_longer_tuning_table_counts_the_supernets_ranking_the_oracle_above_uniform():
    import known_longer

    rows = {
        0: {256: {"oracle": -1.10, "uniform": -1.05}, 4096: {"oracle": -0.90, "uniform": -0.95}},
        1: {256: {"oracle": -1.00, "uniform": -1.02}, 4096: {"oracle": -0.99, "uniform": -0.98}},
    }
    lines = known_longer.table(rows).splitlines()
    assert lines[0] == "| seed | 256 steps: oracle / uniform | 4096 steps: oracle / uniform |"
    assert lines[2] == "| 0 | -1.1000 < -1.0500 | -0.9000 > -0.9500 |"
    assert lines[3] == "| 1 | -1.0000 > -1.0200 | -0.9900 < -0.9800 |"
    assert lines[-1] == "| above | 1 of 2 | 1 of 2 |"


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--task", "bottlenek"], "unknown task bottlenek: choose from bottleneck, "),
        (
            ["--steps", "256,x"],
            "--steps takes positive whole numbers, comma-separated, not '256,x'",
        ),
        (["--steps", "0"], "--steps takes positive whole numbers"),
        (
            ["--lever", "no-such-lever"],
            "no run of no-such-lever on bottleneck-cls-64-16k with seed 0",
        ),
    ],
)
def test_the_longer_tuning_refuses_a_bad_input_in_one_sentence(argv, said, capsys):
    import known_longer

    with pytest.raises(SystemExit) as exit_:
        known_longer.main(argv)
    assert exit_.value.code == 2 and said in capsys.readouterr().err
