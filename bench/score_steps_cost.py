"""What `--score-steps N` costs the search stage (issue 16): the search stage of a finished
known-answer run (bench/known_answer.py) run again in this process, scoring plainly (steps 0,
the default) and with N fine-tuning steps per scored candidate, alternately, `--rounds` times;
with `--top K` also a third way, `--score-top K` (a shared-weight search, then only each
budget's K best widths and its uniform one tuned: stages/rescore.py); with `--climb M` only
steps 0, `--score-top K` and `--score-top K --score-climb M` (stages/climb.py).

Per task: the search stage's CPU seconds (this process's `time.process_time`: one thread, so it
is the compute itself, not what other processes on a shared machine take from it), median of the
rounds, for each setting and their ratio; the widths and candidates scored; the seconds per
scored width; and the tuned search's split into fine-tuning, calibration and validation.

    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 64 --rounds 3 \
        --runs runs/bench/known/score-steps-64 --tasks bottleneck,residual
    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 64 --top 16 --rounds 2 \
        --runs runs/bench/known/score-steps-64-loss
    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 256 --top 16 \
        --climb 16 --rounds 1 --runs runs/bench/known/score-top-16-steps-256-loss-climb-16
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
from widthc.stages import multistage


def timed_search(run: Path, steps: int, top: int = 0, climb: int = 0) -> dict:
    """The search stage of (a copy of) `run` with --score-steps `steps` (--score-top `top`,
    --score-climb `climb`):
    CPU seconds, widths and candidates scored (and of them tuned), and the scorers' clock."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(
            run, copy, ignore=shutil.ignore_patterns(*(f"{p}*" for p in BUDGET_PREFIXES), "refine")
        )
        (copy / SEARCH).unlink(missing_ok=True)
        ctx = Context.open(copy, progress=False)
        cfg = ctx.config
        ctx.config = dataclasses.replace(
            cfg,
            search=dataclasses.replace(
                cfg.search, score_steps=steps, score_top=top, score_climb=climb
            ),
        )
        scorers = []
        made = ctx.scorer

        def scorer(net, precision=None, tuned=True):
            scorers.append(made(net, precision, tuned))
            return scorers[-1]

        ctx.scorer = scorer
        ctx.echo = lambda *a, **k: None
        _ = ctx.program  # compiled before the clock starts
        t0 = time.process_time()
        multistage.run(ctx)  # the search (and with `top`, the rescoring)
        seconds = time.process_time() - t0
        (result,) = json.loads((copy / SEARCH).read_text())["results"]
    tuned = [s for s in scorers if s.tuning is not None]
    clock = {k: sum(s.clock.get(k, 0.0) for s in scorers) for k in ("tuning", "calibration",
                                                                     "validation")}  # fmt: skip
    return {"seconds": seconds, "widths": len(scorers[0].cache),
            "candidates": sum(s.scored for s in scorers), "clock": clock,
            "tuned_widths": sum(len(s.cache) for s in tuned),
            "tuned_candidates": sum(s.scored for s in tuned), "score": result["score"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/bench/known/score-steps-64")
    p.add_argument("--tasks", default="bottleneck,double-bottleneck,residual,bottleneck-6,"
                   "bottleneck-cls")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--top", type=int, default=0, help="also time --score-top K (0: not)")
    p.add_argument("--climb", type=int, default=0, help="with --top: time steps 0, --score-top K "
                   "and --score-top K --score-climb M only (0: not)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.climb:
        return climb_rows(args)
    print("| task | search s, steps 0 | search s, steps N | ratio | widths scored (candidates) "
          "| s per scored width, 0 / N | steps N: tuning / calibration / validation s |"
          + (" search s, top K | ratio to steps 0 | widths tuned (candidates) |" if args.top
             else ""))  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|" + ("---:|---:|---:|" if args.top else ""))
    out = {}
    for task in args.tasks.split(","):
        run = Path(args.runs) / f"{task}-s{args.seed}"
        ways = {"0": (0, 0), str(args.steps): (args.steps, 0)}
        if args.top:
            ways[f"{args.steps}-top-{args.top}"] = (args.steps, args.top)
        rounds = {w: [] for w in ways}
        for _ in range(args.rounds):
            for w, (steps, top) in ways.items():
                rounds[w].append(timed_search(run, steps, top))
        med = {w: statistics.median(r["seconds"] for r in rounds[w]) for w in ways}
        plain, tuned = med["0"], med[str(args.steps)]
        first, last = rounds["0"][-1], rounds[str(args.steps)][-1]
        per = [plain / first["widths"], tuned / last["widths"]]
        clock = " / ".join(f"{last['clock'].get(k, 0):.1f}"
                           for k in ("tuning", "calibration", "validation"))  # fmt: skip
        row = (
            f"| {task} | {plain:.1f} | {tuned:.1f} | {tuned / plain:.1f}x | "
            f"{first['widths']} ({first['candidates']}) / {last['widths']} "
            f"({last['candidates']}) | {per[0]:.3f} / {per[1]:.3f} | {clock} |"
        )
        if args.top:
            w = f"{args.steps}-top-{args.top}"
            t = rounds[w][-1]
            row += (f" {med[w]:.1f} | {med[w] / plain:.1f}x | {t['tuned_widths']} "
                    f"({t['tuned_candidates']}) |")  # fmt: skip
        print(row, flush=True)
        out[task] = {w: r for w, r in rounds.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def climb_rows(args) -> None:
    """`--climb M`: per task, the search stage with steps 0, with --score-top K and with
    --score-top K --score-climb M, alternately, `--rounds` times (medians; every width tuned
    is left out: 38-54x steps 0 at 256 steps, BENCHMARKS.md)."""
    ways = {"0": (0, 0, 0), "top": (args.steps, args.top, 0),
            "climb": (args.steps, args.top, args.climb)}  # fmt: skip
    print(f"| task | search s, steps 0 | top {args.top} | ratio | top {args.top} + climb "
          f"{args.climb} | ratio | climb / top | candidates tuned, top / climb |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    out = {}
    for task in args.tasks.split(","):
        run = Path(args.runs) / f"{task}-s{args.seed}"
        rounds = {w: [] for w in ways}
        for _ in range(args.rounds):
            for w, way in ways.items():
                rounds[w].append(timed_search(run, *way))
        s = {w: statistics.median(r["seconds"] for r in rounds[w]) for w in ways}
        print(
            f"| {task} | {s['0']:.1f} | {s['top']:.1f} | {s['top'] / s['0']:.1f}x | "
            f"{s['climb']:.1f} | {s['climb'] / s['0']:.1f}x | {s['climb'] / s['top']:.2f}x | "
            f"{rounds['top'][-1]['tuned_candidates']} / {rounds['climb'][-1]['tuned_candidates']} |",
            flush=True,
        )
        out[task] = rounds
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
