"""How the tuned score's ranking grows with the tuning (issue 16): one row per lever of
bench/known_answer.py (`--score-steps N`, N = 0 for the default), from its stored runs.

Per lever, over the runs of the given seeds, in the task order bottleneck / bottleneck-6 /
bottleneck-cls / double-bottleneck / residual: the supernets whose score ranks the oracle above
uniform (per task, and in all), Kendall tau between the scores and the truth (the tasks with
truth widths), the recovered gap on validation, mean / std of widthc − uniform on validation
(the issue's "beats uniform by > 3 seed stds"), and the search stage's wall seconds with its
ratio to the same runs' train stage (stages.json; a run directory is looked up under
runs/bench/known/ first, then under each `--runs` root).

Below it, the ceiling of tau: how well the truth agrees with itself, as the pairwise tau
between its retraining seeds and as each seed against the mean of the other two (the score is
compared with the mean of all three).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_curve.py --seeds 0,1,2 \
        --levers default,score-steps-16-loss,score-steps-64-loss,score-steps-256-loss
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402
import known_targets as kt  # noqa: E402

from widthc.run import STAGES_FILE  # noqa: E402

ORDER = ("bottleneck", "bottleneck-6", "bottleneck-cls", "double-bottleneck", "residual")


def steps_of(lever: str) -> str:
    options = ka.LEVERS[lever]
    return options[options.index("--score-steps") + 1] if "--score-steps" in options else "0"


def runs_of(lever: str, task: str, seeds: set[int]) -> list[dict]:
    return [r for r in ka.summaries(lever, task) if r["seed"] in seeds]


def shown(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def stage_seconds(lever: str, task: str, seeds: set[int], roots: list[Path]) -> str:
    found = []
    for seed in sorted(seeds):
        paths = [root / lever / f"{task}-s{seed}" / STAGES_FILE for root in [ka.RUNS, *roots]]
        found += [json.loads(p.read_text()) for p in paths if p.exists()][:1]
    if not found:
        return "–"
    search = statistics.mean(s["search"]["seconds"] for s in found)
    train = statistics.mean(s["train"]["seconds"] for s in found)
    return f"{search:.0f} ({search / train:.1f}×)"


def curve(levers: list[str], seeds: set[int], roots: list[Path]) -> str:
    head = (
        "| steps | lever | seeds | oracle above uniform | τ bn / cls / dbl / res "
        "| recovered, val | (widthc − uniform) / std, val | search s (× train) |\n"
        "|---:|---|---:|---|---|---|---|---|"
    )
    rows = []
    for lever in levers:
        per_task = {t: runs_of(lever, t, seeds) for t in ORDER}
        if not any(per_task.values()):
            continue
        n = sorted({len(runs) for runs in per_task.values()})
        m = {t: kt.measures(runs, t) or {} for t, runs in per_task.items()}  # known_targets'
        ranks = [m[t].get("above", 0) for t in ORDER]
        counted = sum(m[t].get("scored", 0) for t in ORDER)
        cells = [
            " / ".join(f"{k}" for k in ranks) + f" ({sum(ranks)} of {counted})",
            " / ".join(shown(m[t].get("tau"), ".2f") for t in ORDER if t != "bottleneck-6"),
            " / ".join(shown(m[t].get("recovered"), ".0%") for t in ORDER),
            " / ".join(shown(m[t].get("stds"), ".1f") for t in ORDER),
            " / ".join(stage_seconds(lever, t, seeds, roots) for t in ORDER),
        ]
        rows.append(f"| {steps_of(lever)} | {lever} | {'/'.join(map(str, n))} | "
                    + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join([head, *rows])


def ceiling() -> str:
    """The truth (of every retraining seed complete) against itself: pairwise tau between
    retraining seeds, and each seed against the mean of the others."""
    lines = []
    for task in ORDER:
        per_seed = ka.truth_metrics(task)
        if not per_seed:
            continue
        k = len(per_seed)
        pairs = [
            ka.kendall_tau(per_seed[a], per_seed[b]) for a in range(k) for b in range(a + 1, k)
        ]
        rest = [
            ka.kendall_tau(
                per_seed[s], [statistics.mean(m) for m in zip(*per_seed[:s], *per_seed[s + 1 :])]
            )
            for s in range(k)
        ]
        lines.append(
            f"truth {task}: τ seed/seed {' '.join(f'{t:.2f}' for t in pairs)} (mean "
            f"{statistics.mean(pairs):.2f}); seed/mean of the others "
            f"{' '.join(f'{t:.2f}' for t in rest)} (mean {statistics.mean(rest):.2f})"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levers", default="default,score-steps-16-loss,score-steps-64-loss,"
                   "score-steps-256-loss")  # fmt: skip
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--runs", default="", help="comma-separated run roots for stages.json")
    args = p.parse_args()
    roots = [Path(r) for r in args.runs.split(",") if r]
    print(curve(args.levers.split(","), {int(s) for s in args.seeds.split(",")}, roots))
    print(ceiling())


if __name__ == "__main__":
    main()
