"""What `--score-retrain M` (widthc/stages/tournament.py) did on the known-answer tasks (issue
16), from bench/known_answer.py's stored runs of a tournament lever: per task, the runs, how
often the tournament changed the search's pick (and how often uniform won), the share of the
oracle gap recovered on validation and on test (as known_targets.py: mean(widthc − uniform) /
mean(oracle − uniform)), the retrainings the tournament added per run, the winner's curse the
seed + 1 keeps out (the winner's tournament validation score minus the retrain stage's model
of it scored alike, by the run's score: minus the validation loss with `--score loss`), whether
the oracle's score beats uniform's by the same scorer (the summaries' uniform score is the one
before the tournament: known_answer.baseline_score), and the searched width's validation and
test metric paired per seed with `--base` (the seeds both levers ran; Δ = lever − base, mean ±
std); `--base-cls` for `bottleneck-cls`, whose stored runs trained other supernets than this
machine does (a rerun here: bench/known_rerun.py).

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

import widthc  # noqa: E402
from widthc.context import Context  # noqa: E402
from widthc.evaluate import measure  # noqa: E402
from widthc.run import SEARCH, SLIM  # noqa: E402


def tournaments(lever: str, task: str, seed: int) -> list[dict]:
    """The `tournament` record of every budget of one run (its search.json)."""
    data = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / SEARCH).read_text())
    return [r["tournament"] for r in data["results"]]


def curses(lever: str, task: str, seed: int) -> list[float]:
    """Per budget of one run: the winner's tournament score (seed + 1) minus the retrain
    stage's model of it (the run's seed) scored alike, on validation by the run's score."""
    ctx = Context.open(ka.RUNS / lever / f"{task}-s{seed}", progress=False)
    out = []
    for r in ctx.run.read_search()["results"]:
        model = widthc.load(ctx.run.budget_dir(r["text"]) / SLIM)
        stage = measure(model, ctx.splits.val, ctx.score_metric, ctx.device)
        out.append(r["tournament"]["scores"][r["tournament"]["chosen"]]["val"] - stage)
    return out


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
    curse = [c for s in runs for c in curses(lever, task, s)]
    # the oracle's score against uniform's by the same scorer (known_answer.baseline_score:
    # the score before the tournament)
    above = [r["oracle"]["score"] > r["uniform"]["score"] for r in runs.values()
             if r["oracle"]["score"] is not None]  # fmt: skip
    paired = sorted(set(runs) & set(based))
    dv = [runs[s]["widthc"]["val"] - based[s]["widthc"]["val"] for s in paired]
    dt = [runs[s]["widthc"]["test"] - based[s]["widthc"]["test"] for s in paired]
    rv, rt = (ka.recovered(list(runs.values()), split) for split in ("val", "test"))
    return (
        f"| {task} | {','.join(map(str, sorted(runs)))} | {sum(m for m, _ in moves)}/{len(moves)}"
        f" ({sum(u for _, u in moves)} uniform) | {100 * rv:.0f}% | {100 * rt:.0f}% | "
        f"{statistics.mean(len(t['scores']) for t in records):.0f} | {mean_std(curse, digits=4)} | "
        f"{sum(above)}/{len(above)} | {len(paired)} | {_ms(dv)} | {_ms(dt)} |"
    )


def _ms(xs: list[float]) -> str:
    return mean_std(xs, digits=4) if xs else "-"


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
          "| winner's val score − retrain stage's | oracle > uniform, scores before | paired "
          "| Δ val | Δ test |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for task in args.tasks.split(","):
        base = args.base_cls if task == "bottleneck-cls" and args.base_cls else args.base
        line = row(args.lever, base, task)
        if line:
            print(line)


if __name__ == "__main__":
    main()
