"""What `--score-steps N` (and `--score-top K`, `--score loss`) costs the search stage (issue
16): the search stage of a finished run, run again in this process in several ways ("ways"),
alternately, `--rounds` times. Any finished run directory works (`--run DIR`, repeatable: e.g.
a `widthc slim` of examples/mobilenet_digits.py); without `--run`, the known-answer runs
(bench/known_answer.py) `--runs/<task>-s<seed>` of `--tasks`.

A way is `STEPS[-top-K][-climb-M][-loss|-metric][-best][-again-M][-retrain-M]`: `--score-steps N`
(or `eE`: `--score-epochs E`, E passes over the run's training split),
`--score-top K` (a shared-weight search, then only each budget's K best widths and its uniform one
tuned: stages/rescore.py), `--score-climb M` (stages/climb.py), `--score`, `--score-candidates`:
`best` (only each width's shared-weight winner tuned) with `-best`, else `all`, and
`--score-again M` (stages/top.py), `--score-retrain M` (stages/tournament.py: its retrainings
count in the search stage's seconds); what a way does not say is the run's own configuration. The
default ways are `0,N` (and `N-top-K` with `--top K`), as this script timed before `--ways`
existed; with `--climb M`, `0,N-top-K,N-top-K-climb-M`.

Per run and way: the search stage's CPU seconds (this process's `time.process_time`: one
thread, so it is the compute itself, not what other processes on a shared machine take from it),
median of the rounds, and its ratio to the first way; the widths and candidates scored, and of
them tuned; the seconds per scored width; the split into fine-tuning, calibration and
validation (the last round's scorers' clocks: wall seconds, so on a busy machine they add up to
more than the CPU seconds); each budget's score. Below each run's rows, the
stages the run itself took when it was made (stages.json: wall seconds, under whatever load
there was then), so the search's cost can be set against a whole `widthc slim`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 64 --rounds 3 \
        --runs runs/bench/known/score-steps-64 --tasks bottleneck,residual
    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 64 --top 16 --rounds 2 \
        --runs runs/bench/known/score-steps-64-loss
    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --rounds 2 \
        --ways 0-metric,0-loss,256-top-16-loss --run runs/bench/demo/flops-s0
    OMP_NUM_THREADS=1 .venv/bin/python bench/score_steps_cost.py --steps 256 --top 16 \
        --climb 16 --rounds 1 --runs runs/bench/known/score-top-16-steps-256-loss-climb-16
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses
import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from widthc.context import Context
from widthc.run import BUDGET_PREFIXES, SEARCH, STAGES_FILE
from widthc.stages import multistage

CLOCKS = ("tuning", "calibration", "validation")
WAY = re.compile(
    r"(?:(?P<steps>\d+)|e(?P<epochs>\d+))"
    r"(?:-top-(?P<top>\d+))?(?:-climb-(?P<climb>\d+))?(?:-(?P<score>loss|metric))?"
    r"(?P<best>-best)?"
    r"(?:-again-(?P<again>\d+))?(?:-retrain-(?P<retrain>\d+))?"
)


def parse_way(text: str) -> dict:
    """`STEPS[-top-K][-climb-M][-loss|-metric][-best][-again-M][-retrain-M]` (STEPS: N, or eE
    for --score-epochs E) as search options: {"score_steps", "score_epochs", "score_top"[,
    "score_climb"], "score_candidates"[, "score_again", "score_retrain", "score"]}."""
    m = WAY.fullmatch(text.strip())
    if not m:
        raise SystemExit(
            f"--ways: {text!r} is not STEPS[-top-K][-climb-M][-loss|-metric][-best][-again-M]"
            "[-retrain-M] (STEPS: N or eE; e.g. 256-top-16-loss, e4-top-16-loss)"
        )
    way = {"score_steps": int(m["steps"] or 0), "score_epochs": int(m["epochs"] or 0),
           "score_top": int(m["top"] or 0)}  # fmt: skip
    way |= {"score_climb": int(m["climb"])} if m["climb"] else {}
    way |= {"score_candidates": "best" if m["best"] else "all"}  # even where the run's is best
    way |= {"score_again": int(m["again"])} if m["again"] else {}  # --score-again M
    way |= {"score_retrain": int(m["retrain"])} if m["retrain"] else {}  # --score-retrain M
    return way | ({"score": m["score"]} if m["score"] else {})


def timed_search(run: Path, steps: int = 0, top: int = 0, **search) -> dict:
    """The search stage of (a copy of) `run` with --score-steps `steps` (--score-top `top`, and
    any other search option in `search`, e.g. score="loss"): CPU seconds, widths and candidates
    scored (and of them tuned), the scorers' clock, each budget's score and, with
    --score-retrain, its tournament record (contenders, validation scores, the one chosen)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(
            run,
            copy,
            ignore=shutil.ignore_patterns(
                *(f"{p}*" for p in BUDGET_PREFIXES), "refine", "tournament"
            ),
        )
        (copy / SEARCH).unlink(missing_ok=True)
        ctx = Context.open(copy, progress=False)
        cfg = ctx.config
        options = {"score_steps": steps, "score_top": top, "score_again": 0, "score_retrain": 0,
                   **search}  # fmt: skip
        ctx.config = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, **options))
        scorers = []
        made = ctx.scorer

        def scorer(net, precision=None, tuned=True, **longer):  # --score-again: steps=N2
            scorers.append(made(net, precision, tuned, **longer))
            return scorers[-1]

        ctx.scorer = scorer
        ctx.echo = lambda *a, **k: None
        _ = ctx.program  # compiled before the clock starts
        t0 = time.process_time()
        multistage.run(ctx)  # the search (and with `top`, the rescoring)
        seconds = time.process_time() - t0
        results = json.loads((copy / SEARCH).read_text())["results"]
    tuned = [s for s in scorers if s.tuning is not None]
    clock = {k: sum(s.clock.get(k, 0.0) for s in scorers) for k in CLOCKS}
    return {"seconds": seconds, "widths": len(scorers[0].cache),
            "candidates": sum(s.scored for s in scorers), "clock": clock,
            "tuned_widths": sum(len(s.cache) for s in tuned),
            "tuned_candidates": sum(s.scored for s in tuned),
            "scores": {r["text"]: r["score"] for r in results}, "score": ctx.score_name,
            "tournament": {r["text"]: r["tournament"] for r in results if r.get("tournament")}
            }  # fmt: skip


def measure(run: Path, ways: list[str], rounds: int) -> dict[str, list[dict]]:
    """Every way's search of `run`, alternately, `rounds` times: {way: [one dict per round]}."""
    out = {w: [] for w in ways}
    for _ in range(rounds):
        for w in ways:
            out[w].append(timed_search(run, **parse_way(w)))
    return out


def rows(name: str, measured: dict[str, list[dict]]) -> list[str]:
    """The table's rows of one run: one per way, the first way the ratios' base."""
    base = statistics.median(r["seconds"] for r in next(iter(measured.values())))
    out = []
    for w, rs in measured.items():
        med, last = statistics.median(r["seconds"] for r in rs), rs[-1]
        clock = " / ".join(f"{last['clock'][k]:.1f}" for k in CLOCKS)
        scores = ", ".join(f"{t} {v:.4f}" for t, v in last["scores"].items())
        out.append(
            f"| {name} | {w} | {med:.1f} | {med / base:.1f}x | {last['widths']} "
            f"({last['candidates']}) | {last['tuned_widths']} ({last['tuned_candidates']}) | "
            f"{med / last['widths']:.3f} | {clock} | {scores} |"
        )
    return out


def stage_seconds(run: Path) -> dict[str, float]:
    """The wall seconds of each stage the run took when it was made (its stages.json)."""
    path = run / STAGES_FILE
    stages = json.loads(path.read_text()) if path.exists() else {}
    return {k: v["seconds"] for k, v in stages.items() if "seconds" in v}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="a finished run dir (repeatable)")
    p.add_argument("--runs", default="runs/bench/known/score-steps-64")
    p.add_argument("--tasks", default="bottleneck,double-bottleneck,residual,bottleneck-6,"
                   "bottleneck-cls")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--top", type=int, default=0, help="also time --score-top K (0: not)")
    p.add_argument("--climb", type=int, default=0, help="with --top: time steps 0, --score-top K "
                   "and --score-top K --score-climb M only (0: not)")  # fmt: skip
    p.add_argument("--ways", default=None, help="STEPS[-top-K][-climb-M][-loss|-metric][-best]"
                   "[-again-M][-retrain-M], comma-separated")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    top = f"{args.steps}-top-{args.top}"
    default = (
        f"0,{top},{top}-climb-{args.climb}"
        if args.climb
        else f"0,{args.steps}" + (f",{top}" if args.top else "")
    )
    ways = args.ways or default
    ways = [w.strip() for w in ways.split(",")]
    for w in ways:
        parse_way(w)  # a bad way stops before any search runs
    runs = [Path(r) for r in args.run] or [
        Path(args.runs) / f"{task}-s{args.seed}" for task in args.tasks.split(",")
    ]
    print(f"CPU seconds of the search stage, median of {args.rounds} rounds, one thread")
    print(
        "| run | way | search s | x first way | widths scored (candidates) | widths tuned "
        "(candidates) | s per scored width | tuning / calibration / validation s | score |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    out = {}
    for run in runs:
        measured = measure(run, ways, args.rounds)
        print("\n".join(rows(run.name, measured)), flush=True)
        out[run.name] = {"ways": measured, "stages": stage_seconds(run)}
    for name, o in out.items():
        stages = ", ".join(f"{k} {v:.0f}" for k, v in o["stages"].items())
        print(f"{name}: its own stages, wall s: {stages} (total {sum(o['stages'].values()):.0f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
