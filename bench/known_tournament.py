"""What `--score-retrain M` (widthc/stages/tournament.py) did on the known-answer tasks (issue
16), from bench/known_answer.py's stored runs of a tournament lever: per task, the runs, how
often the tournament changed the search's pick (and how often uniform won), the share of the
oracle gap recovered on validation and on test (as known_targets.py: mean(widthc − uniform) /
mean(oracle − uniform)), the retrainings the tournament added per run, the winner's curse the
seed + 1 keeps out (the winner's tournament validation score minus the retrain stage's, mean),
and the searched width's validation and test metric paired per seed with `--base` (the seeds
both levers ran; Δ = lever − base, mean ± std); `--base-cls` for `bottleneck-cls`, whose stored
runs trained other supernets than this machine does (a rerun here: bench/known_rerun.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_tournament.py \
        --lever score-top-16-steps-256-loss-retrain-3 --base score-top-16-steps-256-loss \
        --base-cls rerun/score-top-16-steps-256-loss
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402
from mean_std import mean_std  # noqa: E402

from widthc.run import SEARCH  # noqa: E402


def recovered(runs: list[dict], split: str) -> float | None:
    gap = statistics.mean(r["oracle"][split] - r["uniform"][split] for r in runs)
    won = statistics.mean(r["widthc"][split] - r["uniform"][split] for r in runs)
    return won / gap if gap else None


def tournaments(lever: str, task: str, seed: int) -> list[dict]:
    """The `tournament` record of every budget of one run (its search.json)."""
    data = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / SEARCH).read_text())
    return [r["tournament"] for r in data["results"]]


def changed(t: dict) -> tuple[bool, bool]:
    """Whether the tournament chose another width than its first contender (the search's
    pick, unless the search picked uniform, the last), and whether uniform won."""
    n = len(t["scores"])
    return t["chosen"] != 0, t["chosen"] == n - 1


def row(lever: str, base: str, task: str) -> str | None:
    runs = {r["seed"]: r for r in ka.summaries(lever, task)}
    if not runs:
        return None
    based = {r["seed"]: r for r in ka.summaries(base, task)}
    records = [t for s in runs for t in tournaments(lever, task, s)]
    moves = [changed(t) for t in records]
    curse = [
        t["scores"][t["chosen"]]["val"] - runs[s]["widthc"]["val"]
        for s in runs
        for t in tournaments(lever, task, s)
    ]
    paired = sorted(set(runs) & set(based))
    dv = [runs[s]["widthc"]["val"] - based[s]["widthc"]["val"] for s in paired]
    dt = [runs[s]["widthc"]["test"] - based[s]["widthc"]["test"] for s in paired]
    rv, rt = recovered(list(runs.values()), "val"), recovered(list(runs.values()), "test")
    return (
        f"| {task} | {','.join(map(str, sorted(runs)))} | {sum(m for m, _ in moves)}/{len(moves)}"
        f" ({sum(u for _, u in moves)} uniform) | {100 * rv:.0f}% | {100 * rt:.0f}% | "
        f"{statistics.mean(len(t['scores']) for t in records):.0f} | {mean_std(curse, digits=4)} | "
        f"{len(paired)} | {mean_std(dv, digits=4) if dv else '-'} | {mean_std(dt, digits=4) if dt else '-'} |"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lever", default="score-top-16-steps-256-loss-retrain-3")
    p.add_argument("--base", default="score-top-16-steps-256-loss")
    p.add_argument("--base-cls", default=None, help="the base of bottleneck-cls (default --base)")
    p.add_argument("--tasks", default=",".join(ka.TASKS))
    args = p.parse_args(argv)
    cls = f" ({args.base_cls} on bottleneck-cls)" if args.base_cls else ""
    print(f"{args.lever} against {args.base}{cls} (Δ: lever − base, paired by seed)\n")
    print("| task | seeds | pick changed | recovered, val | recovered, test | retrainings "
          "| winner's val − retrain stage's val | paired | Δ val | Δ test |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        base = args.base_cls if task == "bottleneck-cls" and args.base_cls else args.base
        line = row(args.lever, base, task)
        if line:
            print(line)


if __name__ == "__main__":
    main()
