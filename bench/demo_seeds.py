"""The demo's test accuracy over seeds (issue 18): the latency demo against the FLOPs demo before it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_seeds.py [--seeds 0,1,2]
    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_seeds.py --table

`make demo`'s command (examples/mobilenet_digits.py on the bundled digits, 30 supernet epochs,
evolutionary search 16 x 10, 30 retraining epochs) with the budgets of today's demo
(`--latency 85%,75%`, bins at `--align auto`) and of the demo before it (`--flops 50%,25%`, the
paper's bins), the same recipe, per seed. The digits test split has 270 images: one image is
0.37 points, so one run's accuracy says little; the spread over seeds is what a difference
between the two demos has to beat. `--demos latency-bins-32-extremes`: today's demo with issue
16's lever (`--uniform-bins 32 --sampling extremes`); `--demos latency-score-top-16-steps-256-loss`:
today's demo with the finalists tuned (`--score-top 16 --score-steps 256 --score loss`);
`--demos score-top-16-steps-256-loss`: the FLOPs demo with them (its seed-0 JSON has each
budget's channels and flat stage seconds, as cost16's branch wrote them);
`--demos latency-score-top-16-epochs-4-loss`: today's demo as `make demo` runs it since session
15 (the default scoring; every other demo pins the paper's, bench/plain.py PAPER_SCORING). One JSON
per seed and demo under bench/results/demo-seeds/ (each budget's width, scores and tuned rows;
the run's wall and CPU seconds, whole and per stage from stages.json); runs under
runs/bench/demo/. `--again` runs them again, into bench/results/demo-seeds/again/ (for
timings side by side; the stored ones stay as the published tables printed them), or with
`--into NAME` into NAME/; a rerun already stored there is never overwritten (refused).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from mean_std import mean_std  # noqa: E402  (bench/)
from plain import PAPER_SCORING  # noqa: E402  (bench/)

from widthc import run as run_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHC = str(Path(sys.executable).with_name("widthc"))
OUT = ROOT / "runs" / "bench" / "demo"
RESULTS = ROOT / "bench" / "results" / "demo-seeds"
RECIPE = ["--data", "digits", "--epochs", "30", "--retrain-epochs", "30", "--population", "16",
          "--generations", "10", "--calib-batches", "4"]  # fmt: skip
DEMOS = {"latency": ["--latency", "85%,75%"], "flops": ["--flops", "50%,25%"],
         "latency-bins-32-extremes": ["--latency", "85%,75%", "--uniform-bins", "32",
                                      "--sampling", "extremes"],
         "latency-score-top-16-steps-256-loss": ["--latency", "85%,75%", "--score-top", "16",
                                                 "--score-steps", "256", "--score", "loss"],
         "score-top-16-steps-256-loss": ["--flops", "50%,25%", "--score-top", "16",
                                         "--score-steps", "256", "--score", "loss"],
         # widthc's default since session 15, given whole (PAPER_SCORING comes first)
         "latency-score-top-16-epochs-4-loss": ["--latency", "85%,75%", "--score-top", "16",
                                                "--score-epochs", "4", "--score", "loss"]}  # fmt: skip


def command(demo: str, seed: int, out: Path) -> list[str]:
    """The `widthc slim` command of a demo run: the paper's scoring, then the demo's options
    (they win), then make demo's recipe."""
    return [WIDTHC, "slim", "examples/mobilenet_digits.py", *PAPER_SCORING, *DEMOS[demo], *RECIPE,
            "--seed", str(seed), "--out", str(out), "--force"]  # fmt: skip


def run_demo(demo: str, seed: int) -> dict:
    out = OUT / f"{demo}-s{seed}"
    cmd = command(demo, seed, out)
    print("$", " ".join(cmd[1:]), flush=True)
    t0, cpu0 = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, cwd=ROOT)
    cpu = _children_cpu() - cpu0
    run = run_files.Run(out)
    rows = []
    for r in run.read_search()["results"]:
        metrics = json.loads((run.budget_dir(r["text"]) / run_files.METRICS).read_text())
        ms = metrics.get("latency_ms", {})
        rows.append({
            "text": r["text"], "test": metrics["test"]["widthc"],
            "uniform_test": metrics["test"]["uniform"], "score": r["score"], "flops": r["flops"],
            "measured_ratio": ms["widthc"] / ms["original"] if ms else None,
            "width": r["width"], "uniform_score": r["uniform"]["score"],
            "rescored": _rescored(r),
        })  # fmt: skip
    return {"demo": demo, "seed": seed, "budgets": rows, "wall_seconds": round(time.perf_counter() - t0),
            "cpu_seconds": round(cpu), "stages": run.timings(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rescored(r: dict) -> dict | None:
    """--score-top: the searched width before tuning, its shared and tuned scores, the widths
    tuned and the one chosen."""
    if "rescored" not in r:
        return None
    t = r["rescored"]
    return {"searched_before": t["searched_before"], "chosen": t["chosen"],
            "tuned": [{k: s[k] for k in ("width", "score_before", "score")} for s in t["scores"]],
            "over_limit": t.get("over_limit", [])}  # fmt: skip


def table() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    print(
        "| demo | budget | seeds | test acc. searched | test acc. uniform | measured / original |"
    )
    print("|---|---|---|---:|---:|---:|")
    for demo in DEMOS:
        mine = [r for r in runs if r["demo"] == demo]
        for i in range(2):
            rows = [r["budgets"][i] for r in mine if len(r["budgets"]) > i]
            if not rows:
                continue
            seeds = ",".join(str(r["seed"]) for r in mine)
            print(f"| {demo} | {rows[0]['text']} | {seeds} | {_ms(rows, 'test')} | "
                  f"{_ms(rows, 'uniform_test')} | {_ms(rows, 'measured_ratio', 1, 3)} |")  # fmt: skip
    for demo in DEMOS:
        mine = [r for r in runs if r["demo"] == demo]
        every = [100 * b["test"] for r in mine for b in r["budgets"]]
        if every:
            print(f"{demo}: every searched width's test accuracy: "
                  f"{', '.join(f'{v:.1f}' for v in every)}")  # fmt: skip


def _ms(rows, key, scale=100, digits=2) -> str:
    return mean_std([r[key] for r in rows if r.get(key) is not None], scale, digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--demos", default="latency,flops")
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument("--again", action="store_true", help="run again into RESULTS/again/")
    parser.add_argument("--into", default="again", help="--again: into RESULTS/INTO/ instead")
    args = parser.parse_args(argv)
    if not args.table:
        RESULTS.mkdir(parents=True, exist_ok=True)
        seeds, demos = map(int, args.seeds.split(",")), args.demos.split(",")
        runs = [(demo, seed) for seed in seeds for demo in demos]
        if args.again:  # beside the stored ones; never over an earlier rerun (tables print it)
            taken = [RESULTS / args.into / f"{d}-s{s}.json" for d, s in runs]
            taken = [p for p in taken if p.exists()]
            if taken:
                parser.error(f"{taken[0]} exists (published tables may print it): give --into NAME")
        for demo, seed in runs:
            path = RESULTS / f"{demo}-s{seed}.json"
            if args.again:  # beside the stored one, which the published tables print
                path = RESULTS / args.into / path.name
                path.parent.mkdir(exist_ok=True)
            if args.again or not path.exists():
                path.write_text(json.dumps(run_demo(demo, seed), indent=1))
    table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
