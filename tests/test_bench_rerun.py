"""bench/known_rerun.py: a stored known-answer lever run again on this machine writes its
summaries under rerun/<lever>/, never over the stored ones, skips a finished rerun and keeps a
failed one apart (`.failed`), as known_answer.py does; `run_one` stubbed (no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "known"))

import known_answer  # noqa: E402
import known_rerun  # noqa: E402


def test_a_rerun_is_written_beside_the_stored_lever_and_not_run_twice(tmp_path, monkeypatch):
    stored = tmp_path / "score-top" / "bottleneck-s0.json"
    stored.parent.mkdir(parents=True)
    stored.write_text('{"stored": true}')
    calls = []

    def run_one(task, lever, seed):
        calls.append((task, lever, seed))
        return {"failed": "diverged"} if task == "residual" else {"task": task, "seed": seed}

    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "run_one", run_one)
    argv = ["--lever", "score-top", "--tasks", "bottleneck,residual", "--seeds", "0,1"]
    known_rerun.main(argv)
    out = tmp_path / "rerun" / "score-top"
    assert json.loads((out / "bottleneck-s1.json").read_text()) == {"task": "bottleneck", "seed": 1}
    assert (out / "residual-s0.failed").exists() and not (out / "residual-s0.json").exists()
    assert json.loads(stored.read_text()) == {"stored": True}  # the stored run untouched
    assert sorted(calls) == [("bottleneck", "score-top", 0), ("bottleneck", "score-top", 1),
                             ("residual", "score-top", 0), ("residual", "score-top", 1)]  # fmt: skip
    calls.clear()
    known_rerun.main(argv)  # finished reruns are not run again; failed ones are
    assert sorted(calls) == [("residual", "score-top", 0), ("residual", "score-top", 1)]
