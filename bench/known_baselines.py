"""Stored known-answer summaries re-derived with `known_answer.baseline_score` (issue 16): the
uniform width's score by the scorer the oracle is scored with, read from each run's
search.json. Summaries of `--score-again` and `--score-retrain` levers written before that
function recorded the longer tuning's or the tournament's score of uniform instead, so the
board's "score ranks oracle above uniform" compared two scorers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_baselines.py \\
        --lever score-top-16-steps-256-loss-retrain-3 \\
        --runs /work/wt-retrain16/runs/bench/known/score-top-16-steps-256-loss-retrain-3

`--runs`: the lever's run folders (<task>-s<seed>; default runs/bench/known/<lever>). Prints
every summary whose score changed; a summary without its run folder is left as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import known_answer as ka  # bench/

from widthc.run import SEARCH


def rederive(summaries: Path, runs: Path) -> list[tuple[str, float, float]]:
    """Every summary in `summaries` with its run in `runs`, its uniform score re-derived and
    written back: (name, before, after) of those that changed."""
    changed = []
    for path in sorted(summaries.glob("*.json")):
        search = runs / path.stem / SEARCH
        if not search.exists():
            continue
        summary = json.loads(path.read_text())
        result = json.loads(search.read_text())["results"][0]
        before, after = summary["uniform"]["score"], ka.baseline_score(result)
        if before != after:
            summary["uniform"]["score"] = after
            ka._write(path, summary)
            changed.append((path.stem, before, after))
    return changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lever", required=True)
    p.add_argument("--runs", type=Path)
    args = p.parse_args()
    runs = args.runs or ka.RUNS / args.lever
    for name, before, after in rederive(ka.RESULTS / args.lever, runs):
        print(f"{args.lever}/{name}: uniform score {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
