"""Search quality where the answer is known (issue 16): does widthc find the width a teacher
network was built with, and which supernet training levers help it?

Each task (bench/known/tasks.py) is a model file with data hooks: a teacher with a strongly
non-uniform width profile generates the data, the student to slim is uniform and over-wide,
and the budget is the FLOPs of the teacher's width in the student's bins (the oracle). Every
lever runs `widthc slim` on the task as a user would (the same recipe and search effort for
all, the lever's options added), 3 seeds. Per run:

- the oracle width retrained from scratch with widthc's own retraining (`widthc.stages.retrain`:
  the run's seed, recipe and calibration), beside the searched and the uniform width that the
  run retrained itself; validation and test metric of all three;
- the max-max score of the oracle width on the run's supernet, beside the searched and the
  uniform width's (search.json);
- Kendall tau between the supernet's scores and the retrained test metric of 22 widths at the
  budget (20 drawn with fixed seeds, the oracle, the uniform), each retrained with the seeds
  0-2, or `--truth-seeds` (the truth; cached per task and seed in bench/results/known/truth/);
  the tables' truth is the mean over every retraining seed a task has complete (or over
  `--truth-seeds`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_answer.py --levers default,distill
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_answer.py --table
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_answer.py --levers default --truth \
        --truth-seeds 3,4 --tasks bottleneck-cls  # needs the default runs of seeds 3, 4

One JSON summary per run under bench/results/known/<lever>/<task>-s<seed>.json (a finished run is
not run again; an interrupted one resumes); run directories under runs/bench/known/ (git-ignored).
One process at a time, one torch thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import datetime
import itertools
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import widthc
from widthc.run import CONFIG, METRICS, SEARCH, SLIM, TRAIN_LOG, UNIFORM
from widthc.stages.retrain import fresh, measure, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "known"))
import ranking  # noqa: E402
from levers import LEVERS, RECIPE  # noqa: E402  (bench/known/levers.py)
from mean_std import mean_std  # noqa: E402
from plain import PAPER_SCORING  # noqa: E402
from quality import WIDTHC, Search  # noqa: E402
from tasks import TASKS as DEFINED  # noqa: E402  (bench/known/tasks.py)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "known"
RUNS = ROOT / "runs" / "bench" / "known"
TASKS = {  # task -> its model file
    "bottleneck": "bench/known/bottleneck.py",
    "bottleneck-6": "bench/known/bottleneck_6.py",
    "bottleneck-cls": "bench/known/bottleneck_cls.py",
    "double-bottleneck": "bench/known/double_bottleneck.py",
    "residual": "bench/known/residual.py",
}
# run and tabled (`--tasks`), not on the five tasks' boards. The known answer's premise (the
# teacher's width beats uniform by 5 seed stds or more on validation, decided before the runs:
# BENCHMARKS.md, sessions 12 and 13) failed on the first three; bottleneck-cls-64-16k passed it
# and is measured beside the five (known_targets.py --tasks)
OFF_BOARD = {
    "bottleneck-cls-16k": "bench/known/bottleneck_cls_16k.py",  # bottleneck-cls, 4x the data
    "bottleneck-signs": "bench/known/bottleneck_signs.py",  # each output's sign a label (session 13)
    "bottleneck-cls-64": "bench/known/bottleneck_cls_64.py",  # 64 classes (session 13)
    "bottleneck-cls-64-16k": "bench/known/bottleneck_cls_64_16k.py",  # 64 classes, 4x the data
}
SEEDS = (0, 1, 2)
EFFORT = Search()  # population 16 x 12 generations, 200 scored widths, band 0.9 (as quality.py)
N_WIDTHS = 20
TABLE_SEEDS: set[int] | None = None  # --table --seeds: the table of those seeds' runs only
TRUTH_SEEDS: tuple[int, ...] | None = None  # --table --truth-seeds: the truth of those seeds only


# --- the oracle and the widths of the truth --------------------------------------------------------


def oracle(program, teacher: tuple[int, ...]):
    """The teacher's width in the student's bins: per hidden layer (searchable groups in graph
    order) the fewest bins that keep at least the teacher's channels."""
    space = program.space
    assert len(space.ids) == len(teacher), "one searchable group per hidden layer"
    bins = [int(np.searchsorted(space.channels[i, 1:], c)) + 1 for i, c in enumerate(teacher)]
    return space.choice(np.array(bins))


def truth_widths(program, budget: float) -> list:
    """20 distinct widths at the budget (fixed seeds: bench/ranking.py's)."""
    return ranking.sample_widths(program, N_WIDTHS, budget)


def _context(run: Path):
    from widthc.context import Context

    return Context.open(run, progress=False)


def retrain_width(ctx, choice, folder: Path, seed: int | None = None) -> dict:
    """`choice` trained from scratch by widthc's retraining (the run's recipe, under the run's
    seed or `seed`: initial weights, batch order), measured on the validation and the test
    split with the model's metric."""
    folder.mkdir(parents=True, exist_ok=True)
    model = fresh(ctx, choice, seed=seed)
    model = train(ctx, model, folder, RECIPE.epochs, f"retrain {folder.name}", seed=seed)
    splits = ctx.splits
    return {s: measure(model, getattr(splits, s), ctx.metric, ctx.device) for s in ("val", "test")}


def scorer_of(ctx):
    """The run's max-max scorer, as its search built it (metric or minus the loss, and
    --score-steps' fine-tuning)."""
    return ctx.scorer(ctx.supernet(trained=True).eval())


# --- one run ----------------------------------------------------------------------------------------


def default_program(task: str):
    """The student compiled with widthc's default bins."""
    t = DEFINED[task]
    return widthc.compile(t.model(), torch.randn(2, t.inputs))


def budget_of(task: str) -> float:
    """The FLOPs of the teacher's width in the student's (default) bins: the task's budget."""
    program = default_program(task)
    return float(program.flops(oracle(program, DEFINED[task].teacher)))


def channels_of(program, choice) -> list[int]:
    return [int(c) for c in program.space.searchable_counts(program.space.array(choice))[0]]


def oracle_of(task: str, program):
    """The oracle in `program`'s bins: the channels of the teacher's width in the default
    bins (a lever with other bins, --uniform-bins, is compared at the same width; None if
    its bins cannot keep exactly those channels)."""
    default = default_program(task)
    kept = channels_of(default, oracle(default, DEFINED[task].teacher))
    target = oracle(program, tuple(kept))
    return target if channels_of(program, target) == kept else None


def command(task: str, lever: str, seed: int, out: Path) -> list[str]:
    """The `widthc slim` command of a run: the recipe, the paper's scoring, the lever last (its
    options win)."""
    model = ROOT / {**TASKS, **OFF_BOARD}[task]
    return [WIDTHC, "slim", str(model), "--flops", f"{budget_of(task):.0f}", "--seed", str(seed),
            "--out", str(out), "--no-onnx", *RECIPE.cli(), *EFFORT.cli(), *PAPER_SCORING,
            *LEVERS[lever]]  # fmt: skip


def run_one(task: str, lever: str, seed: int) -> dict:
    out, budget = RUNS / lever / f"{task}-s{seed}", budget_of(task)
    cmd = command(task, lever, seed, out)
    if (out / CONFIG).exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if done.returncode:  # widthc's one-sentence error (e.g. the training loss diverged)
        return {"failed": done.stderr.strip().splitlines()[-1], "command": " ".join(cmd)}
    slim_seconds = time.perf_counter() - t0
    ctx = _context(out)
    (result,) = json.loads((out / SEARCH).read_text())["results"]
    (folder,) = ctx.run.budget_dirs()
    metrics = json.loads((folder / METRICS).read_text())
    val = {
        name: measure(widthc.load(sub / SLIM), ctx.splits.val, ctx.metric, ctx.device)
        for name, sub in (("widthc", folder), ("uniform", folder / UNIFORM))
    }
    program = ctx.program
    target = oracle_of(task, program)  # None: these bins cannot keep the oracle's channels
    cached = RESULTS / "oracle" / f"{task}-s{seed}.json"  # the same for every lever
    if cached.exists():
        oracle_metric = json.loads(cached.read_text())
    elif target is None:
        return {"failed": "the oracle is not a width of its bins: run the default lever first",
                "command": " ".join(cmd)}  # fmt: skip
    else:
        oracle_metric = retrain_width(ctx, target, RUNS / "oracle" / f"{task}-s{seed}")
        _write(cached, oracle_metric)
    scorer = scorer_of(ctx)
    scores = None  # a lever with other bins (--uniform-bins) cannot score the truth's widths
    if program.binning == default_program(task).binning:
        widths = [*truth_widths(program, budget), target, program.uniform(flops=budget)]
        scores = [scorer(program.validate(w)).value for w in widths]
    return {
        "task": task, "lever": lever, "seed": seed, "budget": budget,
        "command": " ".join(["widthc", *[os.path.relpath(c, ROOT) if c.startswith("/") else c
                                         for c in cmd[1:]]]),
        "oracle": {**oracle_metric, "score": None if target is None else scorer(target).value,
                   "channels": None if target is None else channels_of(program, target)},
        "uniform": {"val": val["uniform"], "test": metrics["test"]["uniform"],
                    "score": baseline_score(result),
                    "channels": [w["channels"] for w in result["uniform"]["width"].values()]},
        "widthc": {"val": val["widthc"], "test": metrics["test"]["widthc"],
                   "score": result["score"], "flops": result["flops"],
                   "channels": [w["channels"] for w in result["width"].values()]},
        "truth_scores": scores,
        "oracle_refined": None if target is None
        else oracle_refined(result, program.space.array(target)),
        "supernet": _supernet_validation(out),
        "made_on": made_on(out),
        "seconds": round(slim_seconds, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def baseline_score(result: dict) -> float:
    """The uniform width's score by the scorer the oracle is scored with (`scorer_of`): where
    `--score-again` (a longer tuning) or `--score-retrain` (a retraining) scored the last
    contenders again, the result's uniform score is theirs, not that scorer's."""
    again = result.get("rescored", {}).get("again")
    if again:
        return again["scores"][-1]["tuned"]["score"]
    if result.get("tournament"):
        return result["tournament"]["scores"][-1]["score_before"]
    return result["uniform"]["score"]


def oracle_refined(result: dict, oracle: np.ndarray) -> bool | None:
    """Whether the oracle width was refined (None: no --refine-epochs, or in the band)."""
    trained = result.get("refined", {}).get("trained")
    return oracle.tolist() in trained if isinstance(trained, list) else None


def made_on(run: Path) -> dict:
    """The CPU and torch's thread count the run computed with (its config.json; widthc recorded
    none before session 12): runs of other CPUs or thread counts train other supernets."""
    versions = json.loads((run / CONFIG).read_text()).get("versions", {})
    return {k: versions[k] for k in ("cpu", "threads") if k in versions}


def _supernet_validation(run: Path) -> dict:
    log = run / TRAIN_LOG
    records = [json.loads(line) for line in log.read_text().splitlines() if '"val_' in line]
    return {k: v for k, v in records[-1].items() if k.startswith("val_")} if records else {}


def truth(task: str, seeds=SEEDS) -> list[float]:
    """The test metric of the 22 widths, each the mean over `seeds` retrainings (each seed in
    the context of the default lever's run of that seed); cached per width and seed."""
    path = RESULTS / "truth" / f"{task}.json"
    done = _truth_done(task)
    budget = budget_of(task)
    for seed in seeds:
        ctx = _context(RUNS / "default" / f"{task}-s{seed}")
        program = ctx.program
        widths = [*truth_widths(program, budget), oracle(program, DEFINED[task].teacher),
                  program.uniform(flops=budget)]  # fmt: skip
        for i, w in enumerate(widths):
            key = f"{i}-s{seed}"
            if key not in done:
                folder = RUNS / "truth" / task / key
                done[key] = retrain_width(ctx, w, folder)["test"]
                done = {**_truth_done(task), **done}  # another process's seeds kept
                _write(path, done)
    n = N_WIDTHS + 2
    return [statistics.mean(done[f"{i}-s{s}"] for s in seeds) for i in range(n)]


def _write(path: Path, data) -> None:
    """Written whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_text(json.dumps(data, indent=1))
    part.replace(path)


# --- the table -------------------------------------------------------------------------------------


def seed_files(folder: Path, task: str, suffix: str = ".json") -> list[Path]:
    """`task`'s per-seed files (or folders, `suffix` "") in `folder`, `{task}-s{seed}{suffix}`,
    sorted by name; not another task's whose name starts with this one's (`bottleneck-signs`)."""
    name = re.compile(rf"{re.escape(task)}-s\d+{re.escape(suffix)}")
    return sorted(p for p in folder.glob(f"{task}-s*{suffix}") if name.fullmatch(p.name))


def summaries(lever: str, task: str) -> list[dict]:
    """The runs of `lever` on `task` (only the table's `--seeds`, if given)."""
    runs = [json.loads(p.read_text()) for p in seed_files(RESULTS / lever, task)]
    return [r for r in runs if TABLE_SEEDS is None or r["seed"] in TABLE_SEEDS]


def _ms(xs: list[float], digits: int = 4) -> str:
    return mean_std(xs, digits=digits)


def recovered(runs: list[dict], split: str) -> float | None:
    """The share of the oracle gap the searched width recovers on `split` over `runs`:
    mean(widthc − uniform) / mean(oracle − uniform) (None on a zero gap)."""
    gap = statistics.mean(r["oracle"][split] - r["uniform"][split] for r in runs)
    won = statistics.mean(r["widthc"][split] - r["uniform"][split] for r in runs)
    return won / gap if gap else None


def margin(runs: list[dict], better: str = "widthc") -> float | None:
    """mean(`better` − uniform) over its seed std, on validation (None on a zero spread)."""
    won = [r[better]["val"] - r["uniform"]["val"] for r in runs]
    spread = statistics.stdev(won) if len(won) > 1 else 0.0
    return statistics.mean(won) / spread if spread else None


def row(lever: str, task: str) -> str | None:
    runs = summaries(lever, task)
    if not runs:
        return None
    taus = truth_taus(runs, task)
    out = []
    for split in ("val", "test"):
        gap = [r["oracle"][split] - r["uniform"][split] for r in runs]
        won = [r["widthc"][split] - r["uniform"][split] for r in runs]
        share = recovered(runs, split)
        out += [_ms(gap), _ms(won), f"{100 * share:.0f}%" if share is not None else "-"]
    base = {r["seed"]: r["widthc"]["val"] for r in summaries("default", task)}
    paired = [r["widthc"]["val"] - base[r["seed"]] for r in runs if r["seed"] in base]
    out += [_ms([r["widthc"]["val"] for r in runs]), _ms(paired) if lever != "default" else "-"]
    largest = [r["supernet"]["val_largest"] for r in runs if "val_largest" in r["supernet"]]
    scored = [r for r in runs if r["oracle"]["score"] is not None]  # None: not in the bins
    ranks = sum(r["oracle"]["score"] > r["uniform"]["score"] for r in scored)
    scores = [
        f"{_mean(r, 'oracle')} / {_mean(r, 'uniform')} / {_mean(r, 'widthc')}" for r in runs[:1]
    ]
    return (
        f"| {task} | {lever} | {len(runs)}{_failed(lever, task)} | {' | '.join(out)} | "
        f"{f'{ranks}/{len(scored)}' if scored else '-'} | "
        f"{_ms(taus, 2) if taus else '-'} | {scores[0]} | "
        f"{_ms(largest)} | {'; '.join(','.join(map(str, r['widthc']['channels'])) for r in runs)} | "
        f"{statistics.mean(r['seconds'] for r in runs):.0f} |"
    )


def _failed(lever: str, task: str) -> str:
    """' (sN: the error's first clause)' per run that stopped with widthc's error."""
    failed = seed_files(RESULTS / lever, task, ".failed")
    errors = [json.loads(p.read_text())["failed"].removeprefix("widthc: error: ") for p in failed]
    return "".join(
        f" ({p.stem.rsplit('-', 1)[1]}: {e.split(';')[0]})" for p, e in zip(failed, errors)
    )


def _truth_done(task: str) -> dict[str, float]:
    """The truth's cache: "<width>-s<seed>" -> the retrained test metric."""
    path = RESULTS / "truth" / f"{task}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def truth_seeds(task: str) -> tuple[int, ...]:
    """`--truth-seeds`, or else every retraining seed whose 22 widths the task's truth has."""
    if TRUTH_SEEDS is not None:
        return TRUTH_SEEDS
    done = _truth_done(task)
    seeds = {int(key.rsplit("-s", 1)[1]) for key in done}
    return tuple(s for s in sorted(seeds) if all(f"{i}-s{s}" in done for i in range(N_WIDTHS + 2)))


def truth_metrics(task: str, seeds: tuple[int, ...] | None = None) -> list[list[float]] | None:
    """The truth's test metric of the 22 widths per retraining seed (`seeds`, or else
    `truth_seeds`), if every one is done."""
    seeds = truth_seeds(task) if seeds is None else seeds
    done = _truth_done(task)
    if not seeds or not all(f"{i}-s{s}" in done for i in range(N_WIDTHS + 2) for s in seeds):
        return None
    return [[done[f"{i}-s{s}"] for i in range(N_WIDTHS + 2)] for s in seeds]


def truth_taus(runs: list[dict], task: str, seeds: tuple[int, ...] | None = None) -> list[float]:
    """Kendall τ per run between its scores of the 22 widths and the truth's mean over `seeds`
    (or else `truth_seeds`); the runs without truth scores (other bins) have none."""
    per_seed = truth_metrics(task, seeds)
    if not per_seed:
        return []
    mean = [statistics.mean(metrics) for metrics in zip(*per_seed)]
    return [kendall_tau(r["truth_scores"], mean) for r in runs if r["truth_scores"] is not None]


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy import stats

    return float(stats.kendalltau(a, b).statistic)


def split_halves(per_seed: list[list[float]]) -> list[float]:
    """Kendall τ between the mean of k // 2 retraining seeds and the mean of the others, for
    every such split of the k seeds (an even k's once each): how well the truth's mean agrees
    with itself."""
    k = len(per_seed)
    taus = []
    for half in itertools.combinations(range(k), k // 2):
        if k % 2 == 0 and 0 not in half:  # the other half of a split already counted
            continue
        rest = [s for s in range(k) if s not in half]
        means = [[statistics.mean(m) for m in zip(*(per_seed[s] for s in part))]
                 for part in (half, rest)]  # fmt: skip
        taus.append(kendall_tau(*means))
    return taus


def agreement(only: tuple[int, ...] | None = None, tasks=tuple(TASKS)) -> str:
    """How well the truth of `tasks` (of the seeds `only`, or else `truth_seeds`) agrees with
    itself: Kendall tau between two retraining seeds, and between the means of two halves of
    its seeds (`split_halves`)."""
    lines = []
    for task in tasks:
        seeds = truth_seeds(task) if only is None else only
        per_seed = truth_metrics(task, seeds)
        if per_seed and len(seeds) > 1:
            pairs = list(itertools.combinations(range(len(seeds)), 2))
            taus = [kendall_tau(per_seed[a], per_seed[b]) for a, b in pairs]
            each = ", ".join(f"s{seeds[a]}/s{seeds[b]} {t:.2f}" for (a, b), t in zip(pairs, taus))
            halves = split_halves(per_seed)
            lines.append(
                f"truth {task} ({len(seeds)} seeds): Kendall τ between retraining seeds: {each} "
                f"(mean {statistics.mean(taus):.2f}); mean of {len(seeds) // 2} / of the other "
                f"{len(seeds) - len(seeds) // 2} seeds: {_ms(halves, 2)} ({len(halves)} splits)"
            )
    return "\n".join(lines)


def _mean(r: dict, which: str) -> str:
    return "-" if r[which]["score"] is None else f"{r[which]['score']:.4f}"


def table(levers: list[str], tasks=tuple(TASKS)) -> str:
    head = (
        "| task | lever | seeds | oracle − uniform, val | widthc − uniform, val | recovered, val "
        "| oracle − uniform, test | widthc − uniform, test | recovered, test | widthc, val "
        "| widthc − default's widthc, val (paired) | score ranks oracle above uniform "
        "| Kendall τ (22 widths) | max-max score oracle / uniform / widthc (seed 0) "
        "| supernet's largest width, val | widthc's channels per seed | s/run |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|"
    )
    rows = [row(lever, task) for task in tasks for lever in levers]
    return "\n".join([head, *[r for r in rows if r]])


def refuse_unknown(parser: argparse.ArgumentParser, tasks) -> None:
    """An unknown task name ends the command in one sentence (exit 2)."""
    unknown = [t for t in tasks if t not in {**TASKS, **OFF_BOARD}]
    if unknown:
        names = ", ".join([*TASKS, *OFF_BOARD])
        parser.error(f"unknown task {unknown[0]}: choose from {names}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levers", default="default", help="comma-separated: " + ",".join(LEVERS))
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of "
                   + ",".join([*TASKS, *OFF_BOARD]))  # fmt: skip
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--truth", action="store_true", help="retrain the 22 widths (after default)")
    p.add_argument("--truth-seeds", help="the truth's retraining seeds (--truth: default 0,1,2; "
                   "--table: default every seed a task's truth has complete)")  # fmt: skip
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    refuse_unknown(p, args.tasks.split(","))
    levers = args.levers.split(",")
    if args.truth_seeds:
        global TRUTH_SEEDS
        TRUTH_SEEDS = tuple(int(s) for s in args.truth_seeds.split(","))
    if args.table:
        global TABLE_SEEDS  # --seeds given: the table of those seeds' runs only
        TABLE_SEEDS = {int(s) for s in args.seeds.split(",")} if "--seeds" in sys.argv else None
        print(table([lv for lv in LEVERS if (RESULTS / lv).is_dir()], args.tasks.split(",")))
        print(agreement(tasks=args.tasks.split(",")))
        return
    for seed in map(int, args.seeds.split(",")):
        for task in args.tasks.split(","):
            for lever in levers:
                path = RESULTS / lever / f"{task}-s{seed}.json"
                if path.exists() or path.with_suffix(".failed").exists():
                    continue
                t0 = time.perf_counter()
                summary = run_one(task, lever, seed)
                _write(path.with_suffix(".failed") if "failed" in summary else path, summary)
                print(
                    f"{'FAILED' if 'failed' in summary else 'done'} {lever} {task} s{seed} in "
                    f"{time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
    if args.truth:
        for task in args.tasks.split(","):
            truth(task, TRUTH_SEEDS or SEEDS)
            print(f"truth {task} done", flush=True)


if __name__ == "__main__":
    main()
