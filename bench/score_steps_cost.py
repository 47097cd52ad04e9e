"""What `--score-steps N` costs the search stage (issue 16): the search stage of a finished
known-answer run (bench/known_answer.py) run again in this process, scoring plainly (steps 0,
the default) and with N fine-tuning steps per scored candidate, alternately, `--rounds` times.

Per task: the search stage's CPU seconds (this process's `time.process_time`: one thread, so it
is the compute itself, not what other processes on a shared machine take from it), median of the
rounds, for each setting and their ratio; the widths and candidates scored; the seconds per
scored width; and the tuned search's split into fine-tuning, calibration and validation.

    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 64 --rounds 3 \
        --runs runs/bench/known/score-steps-64 --tasks bottleneck,residual
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from widthc.context import Context
from widthc.run import BUDGET_PREFIXES, SEARCH
from widthc.stages import search


def timed_search(run: Path, steps: int) -> dict:
    """The search stage of (a copy of) `run` with --score-steps `steps`: CPU seconds, widths
    and candidates scored, and the scorer's clock."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(
            run, copy, ignore=shutil.ignore_patterns(*(f"{p}*" for p in BUDGET_PREFIXES), "refine")
        )
        (copy / SEARCH).unlink(missing_ok=True)
        ctx = Context.open(copy, progress=False)
        cfg = ctx.config
        ctx.config = dataclasses.replace(
            cfg, search=dataclasses.replace(cfg.search, score_steps=steps)
        )
        scorers = []
        made = ctx.scorer

        def scorer(net, precision=None):
            scorers.append(made(net, precision))
            return scorers[-1]

        ctx.scorer = scorer
        ctx.echo = lambda *a, **k: None
        _ = ctx.program  # compiled before the clock starts
        t0 = time.process_time()
        search.run(ctx)
        seconds = time.process_time() - t0
        (result,) = json.loads((copy / SEARCH).read_text())["results"]
    (s,) = scorers
    return {"seconds": seconds, "widths": len(s.cache), "candidates": s.scored,
            "clock": dict(s.clock), "score": result["score"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/bench/known/score-steps-64")
    p.add_argument("--tasks", default="bottleneck,double-bottleneck,residual,bottleneck-6,"
                   "bottleneck-cls")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print("| task | search s, steps 0 | search s, steps N | ratio | widths scored (candidates) "
          "| s per scored width, 0 / N | steps N: tuning / calibration / validation s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    out = {}
    for task in args.tasks.split(","):
        run = Path(args.runs) / f"{task}-s{args.seed}"
        rounds = {0: [], args.steps: []}
        for _ in range(args.rounds):
            for steps in rounds:
                rounds[steps].append(timed_search(run, steps))
        plain, tuned = (statistics.median(r["seconds"] for r in rounds[s]) for s in rounds)
        last = rounds[args.steps][-1]
        per = [plain / rounds[0][-1]["widths"], tuned / last["widths"]]
        clock = " / ".join(f"{last['clock'].get(k, 0):.1f}"
                           for k in ("tuning", "calibration", "validation"))  # fmt: skip
        print(
            f"| {task} | {plain:.1f} | {tuned:.1f} | {tuned / plain:.1f}x | "
            f"{rounds[0][-1]['widths']} ({rounds[0][-1]['candidates']}) / {last['widths']} "
            f"({last['candidates']}) | {per[0]:.3f} / {per[1]:.3f} | {clock} |",
            flush=True,
        )
        out[task] = {str(s): r for s, r in rounds.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
