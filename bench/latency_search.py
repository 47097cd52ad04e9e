"""Latency-searched against FLOPs-searched widths at equal measured latency (issue 18), MNIST-1D.

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_search.py [--seeds 0,1,2,3,4]
    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_search.py --table

Per seed, with the recipe and search effort of bench/quality.py (`DATASETS["mnist1d"]`), on
the paper's bins (`--align 1`; the runtime's block of 16 channels would leave the 8-channel
groups of examples/mnist1d_cnn.py one bin each), onnxruntime-cpu, one thread, batch 1:

1. `widthc slim ... --flops 50%,25% --runtime onnxruntime-cpu`: a supernet, the FLOPs search,
   slimming, export, the slimmed model timed beside the original (its measured share of the
   original's latency, r), retraining from scratch (test accuracy);
2. `widthc slim ... --from <1> --latency <r>%`: the same supernet searched under a latency
   budget of r of the original's latency, the FLOPs-searched width's *measured* latency (a %
   budget is a share of the original's; the search's finalists are timed before slimming, so
   the width it keeps measured within it), then slimmed, exported, retrained with the same
   recipe and seed;
3. both slimmed ONNX files and the original timed side by side in one session (TIMINGS times,
   SESSIONS copies each, thread CPU time), so that the two widths' latencies are compared on
   the same measurement: "equal measured latency" is the latency-searched width's median ratio
   to the original at most the FLOPs-searched width's plus the measurement's noise (NOISE).

Reported per budget: the max-max score (validation), the retrained test accuracy, FLOPs, the
latency model's prediction and the side-by-side measured ratio to the original of both, and
the paired differences over seeds. One JSON per seed under bench/results/latency-search/; runs
under runs/bench/latency/.
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
import torch  # noqa: E402
from mean_std import mean_std  # noqa: E402
from plain import PAPER_SCORING  # noqa: E402
from quality import DATASETS  # noqa: E402

from widthc import run as run_files  # noqa: E402
from widthc.latency import runtime as make_runtime  # noqa: E402
from widthc.latency.measure import NOISE, side_by_side  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHC = str(Path(sys.executable).with_name("widthc"))
OUT = ROOT / "runs" / "bench" / "latency"
RESULTS = ROOT / "bench" / "results" / "latency-search"
BUDGETS = ("50%", "25%")
COMMON = ["--align", "1", "--runtime", "onnxruntime-cpu"]
TIMINGS = 5  # side-by-side sessions of the two slimmed models and the original


def _slim(args: list[str], out: Path) -> None:
    cmd = [WIDTHC, "slim", *PAPER_SCORING, *args, "--out", str(out), *COMMON]
    if (out / run_files.CONFIG).exists():
        cmd.append("--resume")
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _rows(out: Path) -> list[dict]:
    """Per budget of a run: score, test accuracy, FLOPs, predicted and measured latency."""
    run = run_files.Run(out)
    rows = []
    for r in run.read_search()["results"]:
        folder = run.budget_dir(r["text"])
        metrics = json.loads((folder / run_files.METRICS).read_text())
        ms = metrics.get("latency_ms", {})
        rows.append({
            "text": r["text"], "score": r["score"], "test": metrics["test"]["widthc"],
            "flops": r["flops"], "predicted_ms": r.get("latency"),
            "measured_ratio": ms["widthc"] / ms["original"] if ms else None,
            "uniform_test": metrics["test"]["uniform"], "uniform_score": r["uniform"]["score"],
            "evaluations": r.get("evaluations"), "distinct_widths": _distinct(r),
            "onnx": str(folder / run_files.SLIM_ONNX),
        })  # fmt: skip
    return rows


def _distinct(result: dict) -> int | None:
    """How many distinct widths the search scored (its history)."""
    history = result.get("history")
    return len({tuple(h["width"]) for h in history}) if history else None


def _side_by_side(original: Path, flops_onnx: str, latency_onnx: str) -> dict:
    """Both slimmed models and the original timed in one session, TIMINGS times: the median
    ratio of each to the original."""
    rt = make_runtime("onnxruntime-cpu").check()
    inputs = (torch.randn(1, 1, 40),)  # examples/mnist1d_cnn.py's input_shape
    files = {"original": original, "flops": Path(flops_onnx), "latency": Path(latency_onnx)}
    ratios = {"flops": [], "latency": []}
    for _ in range(TIMINGS):
        ms = side_by_side(rt, files, inputs)
        for k in ratios:
            ratios[k].append(ms[k] / ms["original"])
    return {k: statistics.median(v) for k, v in ratios.items()} | {"timings": ratios}


def run_seed(seed: int) -> dict:
    bench = DATASETS["mnist1d"]
    base = [str(ROOT / bench.model), "--data", "mnist1d", "--seed", str(seed),
            *bench.recipe.cli(), *bench.search.cli()]  # fmt: skip
    t0 = time.perf_counter()
    flops_run = OUT / f"by-flops-s{seed}"
    _slim([*base, "--flops", ",".join(BUDGETS)], flops_run)
    flops_rows = _rows(flops_run)
    texts = [f"{100 * r['measured_ratio']:.2f}%" for r in flops_rows]  # two may measure alike
    latency_run = OUT / f"by-measured-latency-s{seed}"
    unique = ",".join(dict.fromkeys(texts))
    _slim([*base, "--latency", unique, "--from", str(flops_run)], latency_run)
    by_text = {r["text"]: r for r in _rows(latency_run)}
    pairs = []
    for f, t in zip(flops_rows, texts):
        lat = by_text[f"latency {t}"]
        measured = _side_by_side(flops_run / run_files.ORIGINAL_ONNX, f["onnx"], lat["onnx"])
        pairs.append({"budget": f["text"], "latency_budget": t, "flops_searched": f,
                      "latency_searched": lat, "side_by_side": measured})  # fmt: skip
    return {"seed": seed, "pairs": pairs, "wall_seconds": round(time.perf_counter() - t0),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def table() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("s*.json"))]
    print(f"{len(runs)} seeds: {', '.join(str(r['seed']) for r in runs)}")
    print(
        "| FLOPs budget | width searched under | score (val) | test acc. | FLOPs | "
        "latency predicted, ms | measured / original (side by side) | widths scored |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i, budget in enumerate(BUDGETS):
        for key, label in (("flops_searched", "FLOPs"), ("latency_searched", "latency")):
            rows = [r["pairs"][i][key] for r in runs]
            side = [{"ratio": r["pairs"][i]["side_by_side"][key.split("_")[0]]} for r in runs]
            # a FLOPs run's own prediction may come from an older latency model (seeds 0-2)
            predicted = _ms(rows, "predicted_ms", 1, "", 4) if label == "latency" else "-"
            print(
                f"| {budget} | {label} | {_ms(rows, 'score', 100)} | {_ms(rows, 'test', 100)} | "
                f"{_ms(rows, 'flops', 1e-3, 'K')} | {predicted} | "
                f"{_ms(side, 'ratio', 1, '', 3)} | {_ms(rows, 'distinct_widths', 1, '', 0)} |"
            )
        for what in ("score", "test"):
            diff = [100 * (r["pairs"][i]["latency_searched"][what]
                           - r["pairs"][i]["flops_searched"][what]) for r in runs]  # fmt: skip
            print(
                f"| {budget} | latency - FLOPs, {what}, paired | {_spread(diff)} points "
                f"({', '.join(f'{d:+.2f}' for d in diff)}) |"
            )
        diff = [100 * (r["pairs"][i]["side_by_side"]["latency"]
                       - r["pairs"][i]["side_by_side"]["flops"]) for r in runs]  # fmt: skip
        equal = sum(r["pairs"][i]["side_by_side"]["latency"]
                    <= (1 + NOISE) * r["pairs"][i]["side_by_side"]["flops"] for r in runs)  # fmt: skip
        print(
            f"| {budget} | latency - FLOPs, measured / original, paired | {_spread(diff)} "
            f"points of the original; latency-searched at most {NOISE:.0%} slower in {equal} of "
            f"{len(diff)} seeds |"
        )


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} ± {sd:.2f}"


def _ms(rows, key, scale, unit="", digits=2) -> str:
    return mean_std([r[key] for r in rows if r.get(key) is not None], scale, digits, unit)


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
