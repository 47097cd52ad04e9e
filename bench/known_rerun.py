"""A stored known-answer lever run again on this machine (bench/known_answer.py's `run_one`),
its summaries written beside the stored ones, not over them: bench/results/known/rerun/<lever>/.
For pairing a new lever with a stored one where this machine trains other supernets than the
stored runs had (session 9: `bottleneck-cls`). The rerun reads as a lever named
`rerun/<lever>`: `known_levers.py --base rerun/<lever>`, `known_answer.row("rerun/<lever>", task)`.
Its run directories are the lever's own (runs/bench/known/<lever>/, git-ignored): where a
machine still holds the stored runs' directories, `run_one` resumes them instead of training
anew, so remove them first.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_rerun.py --lever score-top-16-steps-256-loss \
        --tasks bottleneck-cls --seeds 0,1,2,3,4
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_rerun.py --lever default --compare
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_rerun.py --lever default --seeds 6,7 --into confirm

`--into NAME` writes the summaries to bench/results/known/NAME/<lever>/ instead (lever
`NAME/<lever>`): new seeds kept apart from the board's, e.g. a test decided before its runs.

`--compare`: how this machine reproduces the stored runs, per rerun: the searched width's
channels the same or not, the validation metric of the searched and the uniform width, stored
beside rerun.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402


def compare(lever: str, tasks: list[str]) -> str:
    """Stored beside rerun, per task and seed the lever has rerun."""
    lines = ["| task | seed | widthc's channels, stored | rerun | same | widthc, val, stored "
             "| rerun | uniform, val, stored | rerun |",
             "|---|---:|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for task in tasks:
        stored = {r["seed"]: r for r in ka.summaries(lever, task)}
        for rerun in ka.summaries(f"rerun/{lever}", task):
            old = stored.get(rerun["seed"])
            if old is None:
                continue
            width = [",".join(map(str, r["widthc"]["channels"])) for r in (old, rerun)]
            vals = [f"{r[side]['val']:.4f}" for side in ("widthc", "uniform") for r in (old, rerun)]
            lines.append(f"| {task} | {rerun['seed']} | {' | '.join(width)} | "
                         f"{'yes' if width[0] == width[1] else 'no'} | {' | '.join(vals)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lever", required=True)
    p.add_argument("--tasks", default=",".join(ka.TASKS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--compare", action="store_true", help="stored beside rerun: a table")
    p.add_argument("--into", default="rerun", help="bench/results/known/INTO/<lever>/")
    args = p.parse_args(argv)
    if args.compare:
        print(compare(args.lever, args.tasks.split(",")))
        return
    out = ka.RESULTS / args.into / args.lever
    for seed in map(int, args.seeds.split(",")):
        for task in args.tasks.split(","):
            path = out / f"{task}-s{seed}.json"
            if path.exists():  # a finished rerun is not run again
                continue
            t0 = time.perf_counter()
            summary = ka.run_one(task, args.lever, seed)
            failed = "failed" in summary
            ka._write(path.with_suffix(".failed") if failed else path, summary)
            print(f"{'FAILED' if failed else 'done'} {args.lever} {task} s{seed} in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
