"""Issue 16's recovered share and 3-std margin without the retraining's noise: the widths the
stored known-answer runs measured (bench/known_answer.py: widthc's, the uniform and the
oracle width, each retrained ONCE under the run's seed) each retrained twice more, under the
run's seed + 100 and + 200 (not + 1: `--score-retrain` retrains under seed + 1), and the
figures computed again with the mean of the 3 retrainings per width. A more precise measure
published beside the standard one; no stored summary changes.

Per stored summary bench/results/known/<lever>/<task>-s<seed>.json: the three widths'
channels become widths of the program (`choice_of`: the fewest bins that keep them, checked to
keep exactly them), each retrained with widthc's retraining (`widthc.stages.retrain` fresh,
train, measure: the recipe of `known_answer.retrain_width`, another seed as
stages/tournament.py does) in the context of a default-lever run of that task and seed (made
with bench/known_rerun.py, whose run directory is opened; a retraining depends on the context's
recipe, data and the seed given, not on its supernet: a seed without a run here is retrained in
the configuration of the task's run of another seed, its seed set, `context`). Each retraining's val and test metric is
cached in bench/results/known/precise/<task>-s<seed>.json keyed by channels and seed, so a
width two levers share (uniform, the oracle) is retrained once. The table prints, per lever
and task, each figure with 1 retraining (the stored one) / the mean of 3, the recovered share
with the 2 extra retrainings alone (this machine's only: the stored one was another's), and the
retraining's own std (each width's std over its 3 retrainings, root mean square).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_rerun.py --lever default --tasks bottleneck-cls \
        --seeds 0,1,2,3,4    # the contexts (runs/bench/known/default/)
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_precise.py --tasks bottleneck-cls
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_precise.py --table
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402
import known_targets as kt  # noqa: E402

EXTRA = (100, 200)  # the extra retrainings' seeds: the run's seed + these
LEVERS = (
    "default",
    "score-top-16-steps-256-loss",
    "rerun/score-top-16-steps-256-loss",  # session 9's rerun of bottleneck-cls
    "retrain-3",
)
SEEDS = (0, 1, 2, 3, 4)
WIDTHS = ("oracle", "uniform", "widthc")
CACHE = ka.RESULTS / "precise"


def choice_of(program, channels: list[int]):
    """The width of `program` that keeps exactly `channels` per searchable group (the fewest
    bins that keep them); ValueError if its bins cannot keep exactly those."""
    choice = ka.oracle(program, tuple(channels))
    if ka.channels_of(program, choice) != list(channels):
        raise ValueError(f"the bins cannot keep exactly {channels}")
    return choice


def key(channels: list[int], seed: int) -> str:
    """A retraining's cache key: the width's channels and the retraining's seed."""
    return f"{','.join(map(str, channels))}-s{seed}"


def cache(task: str, seed: int) -> dict:
    path = CACHE / f"{task}-s{seed}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def context(task: str, seed: int):
    """The context of `task` and `seed`: the default lever's run of them if there is one
    (bench/known_rerun.py), else the configuration of its run of another seed with this seed
    (the default lever's configurations of one task differ in nothing else but the command
    line; a retraining reads the configuration, not the run's supernet)."""
    from widthc.config import RunConfig
    from widthc.context import Context
    from widthc.run import CONFIG, Run

    run = ka.RUNS / "default" / f"{task}-s{seed}"
    if (run / CONFIG).exists():
        return ka._context(run)
    base = min(
        run / CONFIG
        for run in ka.seed_files(ka.RUNS / "default", task, "")
        if (run / CONFIG).exists()
    )
    config = {**json.loads(base.read_text()), "seed": seed, "command": None}
    path = ka.RUNS / "precise" / f"{task}-s{seed}" / "context"  # never written
    return Context(RunConfig.from_json(config), Run(path, config), progress=False)


def fill(task: str, seed: int, levers=LEVERS, deadline: float | None = None) -> int:
    """Every width of the levers' summaries of `task` and `seed` retrained under the extra
    seeds, where not cached; the number retrained (stops before `deadline`, a time.time())."""
    runs = [r for lv in levers for r in ka.summaries(lv, task) if r["seed"] == seed]
    wanted = list(dict.fromkeys(tuple(r[w]["channels"]) for r in runs for w in WIDTHS))
    done, path, n, ctx = cache(task, seed), CACHE / f"{task}-s{seed}.json", 0, None
    for channels in wanted:
        for extra in EXTRA:
            k = key(list(channels), seed + extra)
            if k in done:
                continue
            if deadline is not None and time.time() > deadline:
                return n
            if ctx is None:
                ctx = context(task, seed)
                assert ctx.config.seed == seed, "the context is the run of this seed"
            folder = ka.RUNS / "precise" / f"{task}-s{seed}" / k
            choice = choice_of(ctx.program, list(channels))
            done[k] = ka.retrain_width(ctx, choice, folder, seed + extra)
            ka._write(path, done)
            n += 1
    return n


def retrained(run: dict, done: dict, w: str, split: str) -> list[float] | None:
    """Width `w`'s metric on `split` in every retraining: the stored one, then the extra ones
    in `done` (a cache); None if one is missing."""
    keys = [key(run[w]["channels"], run["seed"] + e) for e in EXTRA]
    if not all(k in done for k in keys):
        return None
    return [run[w][split], *(done[k][split] for k in keys)]


def averaged(run: dict, done: dict, stored: bool = True) -> dict | None:
    """`run` (a summary) with each width's val and test the mean of its retrainings (without
    the stored one if not `stored`); None if one is missing."""
    out = dict(run)
    for w in WIDTHS:
        means = {}
        for s in ("val", "test"):
            values = retrained(run, done, w, s)
            if values is None:
                return None
            means[s] = statistics.mean(values if stored else values[1:])
        out[w] = {**run[w], **means}
    return out


def noise(runs: list[dict], done_of) -> float:
    """The retraining's own std on validation: the root mean of each width's variance over its
    3 retrainings (`done_of(seed)`: the cache of that seed)."""
    variances = [statistics.variance(retrained(r, done_of(r["seed"]), w, "val"))
                 for r in runs for w in WIDTHS]  # fmt: skip
    return statistics.mean(variances) ** 0.5


def measures(runs: list[dict]) -> dict:
    return {
        "seeds": len(runs),
        "gap": statistics.mean(r["oracle"]["val"] - r["uniform"]["val"] for r in runs),
        "recovered_val": ka.recovered(runs, "val"),
        "recovered_test": ka.recovered(runs, "test"),
        "margin": ka.margin(runs, "widthc"),
        "oracle_margin": ka.margin(runs, "oracle"),
    }


def row(lever: str, task: str, seeds=SEEDS) -> str | None:
    """One table row: the stored figures (1 retraining) / the mean of 3, on the seeds whose
    widths are all retrained 3 times; the mean of the 2 extra ones alone; the retraining's std."""
    runs = [r for r in ka.summaries(lever, task) if r["seed"] in seeds]
    runs = [r for r in runs if averaged(r, cache(task, r["seed"])) is not None]
    if not runs:
        return None
    one = measures(runs)
    three = measures([averaged(r, cache(task, r["seed"])) for r in runs])
    here = measures([averaged(r, cache(task, r["seed"]), stored=False) for r in runs])
    cells = [f"{one['gap']:.4f} / {three['gap']:.4f}"]
    for name, fmt in (("recovered_val", _pct), ("recovered_test", _pct), ("margin", _x),
                      ("oracle_margin", _x)):  # fmt: skip
        cells.append(f"{fmt(one[name])} / {fmt(three[name])}")
    cells += [_pct(here["recovered_val"]), f"{noise(runs, lambda s: cache(task, s)):.4f}"]
    done = ",".join(str(r["seed"]) for r in runs)
    return f"| {task} | {lever} | {done} | {' | '.join(cells)} |"


def met(lever: str, tasks=tuple(ka.TASKS), seeds=SEEDS) -> str:
    """The tasks where `lever` meets the recovered (>= 90%, val) and the margin (> 3) targets
    (known_targets' thresholds), with 1 retraining / the mean of 3."""
    counts = {n: [0, 0] for n in ("recovered", "stds")}
    shown = 0
    for task in tasks:
        runs = [r for r in ka.summaries(lever, task) if r["seed"] in seeds]
        runs = [r for r in runs if averaged(r, cache(task, r["seed"])) is not None]
        if not runs:
            continue
        shown += 1
        three = [averaged(r, cache(task, r["seed"])) for r in runs]
        for i, rs in enumerate((runs, three)):
            counts["recovered"][i] += kt.met("recovered", ka.recovered(rs, "val"))
            counts["stds"][i] += kt.met("stds", ka.margin(rs, "widthc"))
    r, m = counts["recovered"], counts["stds"]
    return (f"{lever}: recovered >= 90% on {r[0]} / {r[1]} of {shown} tasks, margin > 3 on "
            f"{m[0]} / {m[1]} (1 retraining / mean of 3)")  # fmt: skip


def pairs(specs: list[str], tasks, seeds) -> dict[str, list[tuple[dict, dict]]]:
    """task -> the (base, lever) summaries of one seed, each the mean of its 3 retrainings, for
    every `BASE:LEVER` spec (e.g. `confirm/default:confirm/score-top-16-steps-256-loss`) and
    seed in `seeds` where both runs and all their retrainings exist."""
    out = {task: [] for task in tasks}
    for spec in specs:
        base, lever = spec.split(":")
        for task in tasks:
            a = {r["seed"]: r for r in ka.summaries(base, task) if r["seed"] in seeds}
            for run in ka.summaries(lever, task):
                if run["seed"] in a:
                    done = cache(task, run["seed"])
                    both = (averaged(a[run["seed"]], done), averaged(run, done))
                    if None not in both:
                        out[task].append(both)
    return out


def spec(text: str) -> str:
    """A `--paired` argument: BASE:LEVER, two lever names."""
    if len(text.split(":")) != 2 or not all(text.split(":")):
        raise argparse.ArgumentTypeError(f"{text!r} is not BASE:LEVER (e.g. default:retrain-3)")
    return text


def paired(found: dict[str, list[tuple[dict, dict]]]) -> dict:
    """The lever's searched width against the base's, paired by task and seed, on validation
    (the mean of 3 retrainings): per task the deltas and both recovered shares; over every pair
    the one-sided sign test (ties dropped) and the one-sided Wilcoxon signed-rank test of the
    deltas over their task's oracle gap (the base's runs), that the lever is better."""
    from scipy import stats

    tasks, deltas, scaled = {}, [], []
    for task, both in found.items():
        if not both:
            continue
        d = [b["widthc"]["val"] - a["widthc"]["val"] for a, b in both]
        gap = statistics.mean(a["oracle"]["val"] - a["uniform"]["val"] for a, _ in both)
        tasks[task] = {"deltas": d, "base": ka.recovered([a for a, _ in both], "val"),
                       "lever": ka.recovered([b for _, b in both], "val")}  # fmt: skip
        deltas += d
        scaled += [x / abs(gap) for x in d]
    wins, n = sum(x > 0 for x in deltas), sum(x != 0 for x in deltas)
    return {"tasks": tasks, "wins": wins, "n": n,
            "sign_p": float(stats.binomtest(wins, n, alternative="greater").pvalue),
            "wilcoxon_p": float(stats.wilcoxon(scaled, alternative="greater").pvalue),
            "scaled_mean": statistics.mean(scaled)}  # fmt: skip


def paired_table(result: dict) -> str:
    lines = ["| task | pairs | lever − base, val (mean of 3) | recovered, base | recovered, lever |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for task, t in result["tasks"].items():
        d = t["deltas"]
        spread = f" ± {statistics.stdev(d):.4f}" if len(d) > 1 else ""
        lines.append(f"| {task} | {len(d)} | {statistics.mean(d):+.4f}{spread} | "
                     f"{_pct(t['base'])} | {_pct(t['lever'])} |")  # fmt: skip
    lines.append(
        f"\nthe lever better in {result['wins']} of {result['n']} pairs (ties dropped): one-sided "
        f"sign test p = {result['sign_p']:.3f}; Wilcoxon signed-rank on delta / the task's oracle "
        f"gap (mean {result['scaled_mean']:+.2f}) p = {result['wilcoxon_p']:.3f}"
    )
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(levers=LEVERS, tasks=tuple(ka.TASKS), seeds=SEEDS) -> str:
    head = (
        "| task | lever | seeds | oracle − uniform, val (1 retraining / mean of 3) "
        "| recovered, val (1 / 3) | recovered, test (1 / 3) "
        "| widthc − uniform over its seed std, val (1 / 3) "
        "| oracle − uniform over its seed std, val (1 / 3) "
        "| recovered, val, the 2 extra retrainings alone | retraining std, val |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [row(lv, t, seeds) for t in tasks for lv in levers]
    return "\n".join([head, *[r for r in rows if r]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levers", default=",".join(LEVERS))
    p.add_argument("--tasks", default=",".join(ka.TASKS))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--until", help="start no retraining after this UTC time (HH:MM)")
    p.add_argument("--table", action="store_true")
    p.add_argument(
        "--paired",
        action="append",
        metavar="BASE:LEVER",
        type=spec,
        help="the lever's searched width against the base's, paired (repeatable)",
    )
    args = p.parse_args()
    levers, seeds = args.levers.split(","), tuple(map(int, args.seeds.split(",")))
    if args.paired:
        found = pairs(args.paired, args.tasks.split(","), seeds)
        if not any(found.values()):
            p.error("no pair of runs has all its widths retrained 3 times on those seeds: "
                    "run known_precise.py --levers BASE,LEVER --seeds ... first")  # fmt: skip
        print(paired_table(paired(found)))
        return
    if args.table:
        print(table(levers, args.tasks.split(","), seeds))
        for lever in levers:
            print(met(lever, args.tasks.split(","), seeds))
        return
    deadline = None
    if args.until:
        now = datetime.datetime.now(datetime.timezone.utc)
        h, m = map(int, args.until.split(":"))
        deadline = now.replace(hour=h, minute=m, second=0).timestamp()
    for task in args.tasks.split(","):
        for seed in seeds:
            t0 = time.perf_counter()
            n = fill(task, seed, levers, deadline)
            print(f"{task} s{seed}: {n} retrained in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
