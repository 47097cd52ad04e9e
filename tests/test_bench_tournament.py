"""bench/tournament_runs.py (issue 16): each budget's tournament winner read from a run's
search.json, the count of kept picks, the records written, and a lever paired seed by seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import tournament_runs  # noqa: E402


def record(vals: list[float], chosen: int) -> dict:
    scores = [{"width": [i], "candidate": 0, "val": v, "score_before": 0.5} for i, v in
              enumerate(vals)]  # fmt: skip
    return {"contenders": len(vals) - 1, "seed": 1, "epochs": 3, "score": "accuracy",
            "pretrained": False, "scores": scores, "chosen": chosen}  # fmt: skip


def summary(seed: int, val: float, test: float, largest: float) -> dict:
    rows = {b: {"val": val, "test": test} for b in ("25%", "50%")}
    uniform = {b: {"val": 0.9, "test": 0.9} for b in ("25%", "50%")}
    return {"seed": seed, "method": "widthc", "rows": {"widthc": rows, "uniform": uniform},
            "supernet": {"val_acc_largest": largest}}  # fmt: skip


def test_the_winner_of_each_budget_and_the_count_of_kept_picks(tmp_path, capsys):
    run = tmp_path / "widthc-s0"
    run.mkdir()
    results = [{"text": "25%", "tournament": record([0.9, 0.8, 0.7], 0)},
               {"text": "50%", "tournament": record([0.8, 0.7, 0.9], 2)}]  # fmt: skip
    (run / "search.json").write_text(json.dumps({"results": results}))
    (run / "flops-50pct").mkdir()  # the retrain stage's test of the 50% budget
    test = {"test": {"widthc": 0.91, "uniform": 0.92}}
    (run / "flops-50pct" / "metrics.json").write_text(json.dumps(test))
    other = tmp_path / "plain"  # a run without the tournament: no rows
    other.mkdir()
    (other / "search.json").write_text(json.dumps({"results": [{"text": "25%"}]}))
    out = tmp_path / "records.json"
    tournament_runs.main(["--run", str(tmp_path / "*"), "--json", str(out)])
    printed = capsys.readouterr().out
    kept = "0.9000 / 0.8000 / 0.7000 | the search's own (kept) | - |"
    assert f"| widthc-s0 | 25% | 1 | 3 | {kept}" in printed
    assert "| widthc-s0 | 50% | 1 | 3 | 0.8000 / 0.7000 / 0.9000 | uniform | 0.9100 / 0.9200 |" in (
        printed
    )
    assert "kept in 1 of 2 budgets" in printed
    assert json.loads(out.read_text()) == {"plain": {}, "widthc-s0": {
        "25%": results[0]["tournament"], "50%": results[1]["tournament"]}}  # fmt: skip
    assert tournament_runs.winner(record([0.7, 0.9, 0.8], 1)) == "contender 2"


def test_a_lever_paired_with_its_base_seed_by_seed(tmp_path, capsys):
    lever, base = tmp_path / "lever", tmp_path / "base"
    lever.mkdir(), base.mkdir()
    (lever / "widthc-s0.json").write_text(json.dumps(summary(0, 0.95, 0.96, 0.8)))
    (base / "widthc-s0.json").write_text(json.dumps(summary(0, 0.94, 0.97, 0.8)))
    (lever / "widthc-s1.json").write_text(json.dumps(summary(1, 0.9, 0.9, 0.7)))  # no base
    tournament_runs.main(["--lever", str(lever), "--base", str(base)])
    printed = capsys.readouterr().out
    assert "| 0 | +1.00 | +1.00 | -1.00 | -1.00 | 80.00 / 80.00 |" in printed
    assert "\n| 1 |" not in printed
    # the levers' table: widthc − uniform of each folder's runs
    assert "| base | 1 | 4.00 ± 0.00 |" in printed and "| lever | 2 |" in printed
