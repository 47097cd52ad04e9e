"""Latency-searched against FLOPs-searched widths at the same latency (issue 18), on MNIST-1D.

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_search.py [--seeds 0,1,2,3,4]
    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_search.py --table

Per seed, with the recipe and search effort of bench/quality.py (`DATASETS["mnist1d"]`), on
the paper's bins (`--align 1`; the runtime's block of 16 channels would leave the 8-channel
groups of examples/mnist1d_cnn.py one bin each), onnxruntime-cpu, one thread, batch 1:

1. `widthc slim ... --flops 50%,25% --runtime onnxruntime-cpu`: a supernet, the FLOPs search,
   the latency model's prediction of each searched width, slimming, export (measured latency),
   retraining from scratch (test accuracy);
2. `widthc slim ... --from <1> --latency L50,L25`: the same supernet searched under latency
   budgets equal to the predicted latency of step 1's searched widths, then slimmed, exported,
   retrained with the same recipe and seed.

So both widths of a budget have the same latency as the model predicts it (the latency search
may use less), and each is measured after export beside the original model. Reported per
budget: the max-max score (validation), the retrained test accuracy, FLOPs and latency
(predicted; measured as a ratio to the original) of both, and the paired differences over
seeds. One JSON per seed under bench/results/latency-search/; runs under runs/bench/latency/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATASETS  # noqa: E402

from widthc import run as run_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHC = str(Path(sys.executable).with_name("widthc"))
OUT = ROOT / "runs" / "bench" / "latency"
RESULTS = ROOT / "bench" / "results" / "latency-search"
BUDGETS = ("50%", "25%")
COMMON = ["--align", "1", "--runtime", "onnxruntime-cpu"]


def _slim(args: list[str], out: Path) -> None:
    cmd = [WIDTHC, "slim", *args, "--out", str(out), *COMMON]
    if (out / run_files.CONFIG).exists():
        cmd.append("--resume")
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _rows(out: Path) -> list[dict]:
    """Per budget of a run: score, test accuracy, FLOPs, predicted and measured latency."""
    run = run_files.Run(out)
    rows = []
    for r in run.read_search()["results"]:
        metrics = json.loads((run.budget_dir(r["text"]) / run_files.METRICS).read_text())
        ms = metrics.get("latency_ms", {})
        rows.append({
            "text": r["text"], "score": r["score"], "test": metrics["test"]["widthc"],
            "flops": r["flops"], "predicted_ms": r.get("latency"),
            "measured_ratio": ms["widthc"] / ms["original"] if ms else None,
            "uniform_test": metrics["test"]["uniform"], "uniform_score": r["uniform"]["score"],
        })  # fmt: skip
    return rows


def run_seed(seed: int) -> dict:
    bench = DATASETS["mnist1d"]
    base = [str(ROOT / bench.model), "--data", "mnist1d", "--seed", str(seed),
            *bench.recipe.cli(), *bench.search.cli()]  # fmt: skip
    t0 = time.perf_counter()
    flops_run = OUT / f"by-flops-s{seed}"
    _slim([*base, "--flops", ",".join(BUDGETS)], flops_run)
    flops_rows = _rows(flops_run)
    texts = [f"{r['predicted_ms']:.6f}ms" for r in flops_rows]  # two budgets may predict alike
    latency_run = OUT / f"by-latency-s{seed}"
    unique = ",".join(dict.fromkeys(texts))
    _slim([*base, "--latency", unique, "--from", str(flops_run)], latency_run)
    by_text = {r["text"]: r for r in _rows(latency_run)}
    pairs = [
        {"budget": f["text"], "flops_searched": f, "latency_searched": by_text[f"latency {t}"]}
        for f, t in zip(flops_rows, texts)
    ]
    return {"seed": seed, "pairs": pairs, "wall_seconds": round(time.perf_counter() - t0),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def table() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("s*.json"))]
    print(f"{len(runs)} seeds: {', '.join(str(r['seed']) for r in runs)}")
    print("| FLOPs budget | width searched under | score (val) | test acc. | FLOPs | "
          "latency predicted, ms | measured / original |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, budget in enumerate(BUDGETS):
        for key, label in (("flops_searched", "FLOPs"), ("latency_searched", "latency")):
            rows = [r["pairs"][i][key] for r in runs]
            print(f"| {budget} | {label} | {_ms(rows, 'score', 100)} | {_ms(rows, 'test', 100)} | "
                  f"{_ms(rows, 'flops', 1e-3, 'K')} | {_ms(rows, 'predicted_ms', 1, '', 4)} | "
                  f"{_ms(rows, 'measured_ratio', 1, '', 3)} |")  # fmt: skip
        for what in ("score", "test"):
            diff = [100 * (r["pairs"][i]["latency_searched"][what]
                           - r["pairs"][i]["flops_searched"][what]) for r in runs]  # fmt: skip
            sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
            print(f"| {budget} | latency - FLOPs, {what}, paired | {statistics.mean(diff):+.2f} "
                  f"± {sd:.2f} points |")  # fmt: skip


def _ms(rows, key, scale, unit="", digits=2) -> str:
    values = [scale * r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}{unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--table", action="store_true", help="only print the table")
    args = parser.parse_args(argv)
    if not args.table:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for seed in map(int, args.seeds.split(",")):
            path = RESULTS / f"s{seed}.json"
            if not path.exists():
                path.write_text(json.dumps(run_seed(seed), indent=1))
    table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
