"""Issue 16's targets, lever by lever, from bench/known_answer.py's stored runs: per task, the
share of the oracle gap the searched width recovers on validation (target >= 90%), widthc −
uniform on validation over its seed std (> 3), the supernets whose max-max score ranks the
oracle above uniform (>= 5 of 6, so >= 83%) and Kendall τ between the scores of 22 widths and
their retrained test metric (>= 0.6; the metric's mean over every retraining seed the task's
truth has complete, `known_answer.truth_seeds`). The same numbers as `known_answer.py --table`,
one target at a time, for the levers with at least `--min-seeds` runs of a task. `--seeds` keeps
those seeds' runs only (the board as it stood before a seed was added); `--levers` names the rows,
a rerun's too (`rerun/<lever>`: bench/known_rerun.py), which the board otherwise leaves out.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_targets.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_targets.py --seeds 0,1,2,3,4 \
        --levers default,score-top-16-steps-256-loss,rerun/score-top-16-steps-256-loss
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_targets.py --plot bench/results/known-targets.png
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_targets.py --min-seeds 6 \
        --levers default,score-top-16-steps-256-loss \
        --tasks bottleneck,bottleneck-6,bottleneck-cls,double-bottleneck,residual,bottleneck-cls-64-16k
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402

# target -> (its column's title, the value that meets it, how a value prints)
TARGETS = {
    "recovered": ("recovered of the gap, val (≥ 90%)", 0.9, lambda v: f"{100 * v:.0f}%"),
    "stds": ("widthc − uniform over its seed std, val (> 3)", 3.0, lambda v: f"{v:.1f}"),
    "ranks": ("score ranks oracle above uniform (≥ 5 of 6)", 5 / 6, lambda v: f"{100 * v:.0f}%"),
    "tau": ("Kendall τ, 22 widths (≥ 0.6)", 0.6, lambda v: f"{v:.2f}"),
}


def measures(runs: list[dict], task: str) -> dict | None:
    """The four targets' values over `runs` (known_answer.py summaries of one lever on `task`;
    a value is None where it cannot be measured: τ without truth widths, a zero gap or
    spread), with the number of seeds and of runs whose score ranks the oracle above uniform
    (`above`) among those that score it (`scored`)."""
    if not runs:
        return None
    scored = [r for r in runs if r["oracle"]["score"] is not None]
    above = sum(r["oracle"]["score"] > r["uniform"]["score"] for r in scored)
    taus = ka.truth_taus(runs, task)  # the truth of every retraining seed the task has complete
    return {
        "seeds": len(runs),
        "recovered": ka.recovered(runs, "val"),
        "stds": ka.margin(runs),
        "ranks": above / len(scored) if scored else None,
        "tau": statistics.mean(taus) if taus else None,
        "above": above,
        "scored": len(scored),
    }


def board(
    min_seeds: int,
    levers: list[str] | None = None,
    seeds: set[int] | None = None,
    tasks: tuple[str, ...] = tuple(ka.TASKS),
) -> dict[str, dict[str, dict]]:
    """lever -> task -> measures, for `levers` (default: every lever in bench/known/levers.py)
    with >= `min_seeds` runs of some task of `tasks` (default: the board's five), of `seeds`
    only if given."""
    out = {}
    for lever in ka.LEVERS if levers is None else levers:
        found = {task: [r for r in ka.summaries(lever, task) if seeds is None or r["seed"] in seeds]
                 for task in tasks}  # fmt: skip
        cells = {t: measures(runs, t) for t, runs in found.items() if len(runs) >= min_seeds}
        if cells:
            out[lever] = cells
    return out


def met(target: str, value: float | None) -> bool:
    return value is not None and value >= TARGETS[target][1]


def table(rows: dict[str, dict[str, dict]], tasks: tuple[str, ...] = tuple(ka.TASKS)) -> str:
    """One markdown table per target: levers down, `tasks` across, `*` where the target is met,
    the seeds in brackets; the last column counts the tasks that meet it."""
    out = []
    for target, (title, _, fmt) in TARGETS.items():
        out += [f"{title}:", "", f"| lever | {' | '.join(tasks)} | met |",
                "|---|" + "---:|" * (len(tasks) + 1)]  # fmt: skip
        for lever, cells in rows.items():
            texts, hits = [], 0
            for task in tasks:
                cell = cells.get(task)
                value = cell[target] if cell else None
                hits += met(target, value)
                text = "-" if value is None else fmt(value) + ("*" if met(target, value) else "")
                texts.append(f"{text} ({cell['seeds']})" if cell else "")
            out.append(f"| {lever} | {' | '.join(texts)} | {hits} |")
        out.append("")
    return "\n".join(out)


def plot(rows: dict[str, dict[str, dict]], path: Path, tasks=tuple(ka.TASKS)) -> None:
    """The tables as four heatmaps: green where a target is met, red where it is missed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks, levers = list(tasks), list(rows)
    fig, axes = plt.subplots(1, 4, figsize=(17, 0.32 * len(levers) + 2), sharey=True)
    for ax, (target, (title, goal, fmt)) in zip(axes, TARGETS.items()):
        values = [[(rows[lv].get(t) or {}).get(target) for t in tasks] for lv in levers]
        shade = np.array([[np.nan if v is None else min(v / goal, 1.5) for v in r] for r in values])
        ax.imshow(shade, cmap="RdYlGn", vmin=0.4, vmax=1.4, aspect="auto")  # the goal: green
        for i, (lever, r) in enumerate(zip(levers, values)):
            for j, v in enumerate(r):
                text = "" if tasks[j] not in rows[lever] else "-" if v is None else fmt(v)
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(levers)), levers, fontsize=8)
    counts = sorted({len(ka.truth_seeds(t)) for t in tasks})
    fig.suptitle("Issue 16's targets on the known-answer tasks (bench/known_targets.py; "
                 "validation, the levers' runs of every seed stored; τ against the truth's "
                 f"mean over {'/'.join(map(str, counts))} retraining seeds)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-seeds", type=int, default=5, help="runs of a task a lever needs")
    p.add_argument("--seeds", help="comma-separated: only these seeds' runs (default: all)")
    p.add_argument("--levers", help="comma-separated, rerun/<lever> too (default: every lever)")
    p.add_argument("--tasks", help="comma-separated, a task off the board too (default: the five)")
    p.add_argument("--plot", type=Path, help="also draw the four heatmaps into this PNG")
    args = p.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    tasks = tuple(args.tasks.split(",")) if args.tasks else tuple(ka.TASKS)
    ka.refuse_unknown(p, tasks)
    rows = board(args.min_seeds, args.levers.split(",") if args.levers else None, seeds, tasks)
    print(table(rows, tasks))
    truth = {task: ka.truth_seeds(task) for task in tasks}
    print("τ's truth, retraining seeds: " + "; ".join(
        f"{task} {','.join(map(str, s)) or 'none'}" for task, s in truth.items()))  # fmt: skip
    if args.plot:
        plot(rows, args.plot, tasks)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
