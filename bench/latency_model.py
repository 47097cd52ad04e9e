"""Accuracy of the latency model (issue 18): predicted against measured latency of held-out widths.

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency_model.py [--models digits,mobilenet_v2,resnet50]
        [--held-out 200] [--samples 40] [--align auto] [--runtime onnxruntime-cpu]

For each model: the program at `--align` (auto: the runtime's measured channel block), the
latency model fitted exactly as a run fits it (`Measurer.model`: the full, smallest and three
uniform widths, then random widths, `--samples` in all), then `--held-out` more widths drawn
uniformly over bins with another seed (none of them in the fitting set) measured the same way
(in chunks of 8 beside the full model, the thread's CPU time, one onnxruntime thread, batch 1)
and predicted. Reported: the share of held-out widths predicted within +-10% and +-5%, the
median and largest absolute error, the load average while measuring, the cost of
`latency_many` (widths per second of CPU time, batches of 100,000), and a plot of predicted
against measured (bench/results/latency-model.png), and how well the measurement repeats
itself (`--repeats` held-out widths measured again in other chunks and copies: the noise floor
of any predictor on this machine). Raw measurements and predictions are kept in
bench/results/latency-model/<model>-align<A>.json; a model whose file exists is not measured
again (delete the file to measure it again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import widthc  # noqa: E402
from widthc.frontends.models import load_model  # noqa: E402
from widthc.latency import runtime as make_runtime  # noqa: E402
from widthc.latency.align import channel_block  # noqa: E402
from widthc.latency.measure import Measurer, plan  # noqa: E402
from widthc.latency.model import Measurement, fit_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latency-model"
PLOT = ROOT / "bench" / "results" / "latency-model.png"
MODELS = {
    "digits": (str(ROOT / "examples" / "mobilenet_digits.py"), None),
    "mobilenet_v2": ("torchvision:mobilenet_v2", (1, 3, 224, 224)),
    "resnet50": ("torchvision:resnet50", (1, 3, 224, 224)),
}


def held_out(program, n: int, taken: set, seed: int = 1) -> list[np.ndarray]:
    """`n` widths drawn uniformly over bins, none of whose channel counts are in `taken`."""
    rng = np.random.default_rng(seed)
    out, keys = [], set(taken)
    while len(out) < n:
        w = rng.integers(1, program.space.n_bins + 1)
        key = tuple(float(c) for c in program.space.counts(w)[0])
        if key not in keys:
            keys.add(key)
            out.append(w)
    return out


def bench_model(name: str, args, cache_root: Path) -> dict:
    spec, shape = MODELS[name]
    torch.manual_seed(0)
    src = load_model(spec, shape)
    rt = make_runtime(args.runtime).check()
    block = channel_block(rt, cache_root)
    align = block if args.align == "auto" else int(args.align)
    program = widthc.compile(src.model.eval(), src.example_inputs, align=align)
    measurer = Measurer(program, rt, cache_root)
    t0 = time.perf_counter()
    fitting = plan(program, args.samples)
    measurer.measure(fitting, f"{args.samples} widths to fit")
    fit_keys = {tuple(float(c) for c in program.space.counts(w)[0]) for w in fitting}
    test = held_out(program, args.held_out, fit_keys)
    measurer.measure(test, f"{args.held_out} held-out widths")
    repeat = test[: args.repeats]
    measurer.measure(repeat, f"{len(repeat)} held-out widths again", again=True)
    seconds = time.perf_counter() - t0
    everything = measurer.measured()
    again = {m.counts: m.ms for m in everything[len(everything) - len(repeat) :]}
    by_key = {m.counts: m.ms for m in everything[: len(everything) - len(repeat)]}
    repeat_err = np.array([again[k] / by_key[k] - 1 for k in again])
    train = [Measurement(k, by_key[k]) for k in fit_keys]
    model = fit_block(program, train, block, rt.describe())
    measured = np.array([by_key[tuple(float(c) for c in program.space.counts(w)[0])] for w in test])
    predicted = model.latency_many(np.array(test))
    err = predicted / measured - 1
    fitted = np.array(
        [by_key[k] for k in (tuple(map(float, c)) for c in program.space.counts(np.array(fitting)))]
    )
    in_sample = model.latency_many(np.array(fitting)) / fitted - 1
    big = np.random.default_rng(0).integers(
        1, program.space.n_bins + 1, (100_000, program.space.size)
    )
    speed = []
    for _ in range(5):
        c0 = time.thread_time()
        model.latency_many(big)
        speed.append(len(big) / (time.thread_time() - c0))
    loads = [r["load"] for r in measurer.records if r.get("load") is not None]
    result = {
        "model": spec, "input_shape": list(src.example_inputs[0].shape), "runtime": rt.describe(),
        "clock": rt.clock, "align": align, "block": block, "model_block": model.block,
        "fit_widths": len(fitting),
        "held_out": len(test), "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
        "median_abs_error": float(np.median(np.abs(err))), "max_abs_error": float(np.abs(err).max()),
        "in_sample_median_abs_error": float(np.median(np.abs(in_sample))),
        "repeats": len(repeat_err),
        "repeat_within_10pct": float(np.mean(np.abs(repeat_err) <= 0.10)),
        "repeat_median_abs_difference": float(np.median(np.abs(repeat_err))),
        "full_ms": measurer.full_ms(), "measured_ms_range": [float(measured.min()), float(measured.max())],
        "latency_many_widths_per_s": statistics.median(speed),
        "load_average": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "measuring_seconds": round(seconds), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "measured": measured.tolist(), "predicted": predicted.tolist(), "widths": [w.tolist() for w in test],
        "records": measurer.records,
    }  # fmt: skip
    return result


def plot(results: dict[str, dict]) -> None:
    fig = Figure(figsize=(4.2 * len(results), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    for ax, (label, r) in zip(axes, results.items()):
        m, p = np.array(r["measured"]), np.array(r["predicted"])
        lo, hi = 0.95 * min(m.min(), p.min()), 1.05 * max(m.max(), p.max())
        line = np.array([lo, hi])
        ax.plot(line, line, "k-", lw=1)
        ax.fill_between(line, 0.9 * line, 1.1 * line, color="0.85", label="±10%")
        ax.scatter(m, p, s=8, alpha=0.7)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured, ms")
        ax.set_ylabel("predicted, ms")
        ax.set_title(f"{label}: {r['within_10pct']:.0%} within ±10%\n"
                     f"median error {100 * r['median_abs_error']:.1f}%", fontsize=9)  # fmt: skip
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.savefig(PLOT, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mobilenet_v2,resnet50")
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument(
        "--repeats", type=int, default=40, help="held-out widths measured twice (the noise)"
    )
    parser.add_argument("--align", default="auto")
    parser.add_argument("--runtime", default="onnxruntime-cpu")
    parser.add_argument("--cache", default=None, help="latency cache (default: a fresh one)")
    parser.add_argument("--plot", default="", help="also plot these result files (a,b,...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="widthc-latency-bench-") as tmp:
        cache_root = Path(args.cache or tmp)
        for name in filter(None, args.models.split(",")):
            path = RESULTS / f"{name}-align{args.align}.json"
            if path.exists():
                print(f"{name}: {path} exists, not measured again", flush=True)
                continue
            r = bench_model(name, args, cache_root)
            path.write_text(json.dumps(r, indent=1))
            print(
                f"{name} (align {r['align']}, {r['fit_widths']} widths fitted, {r['held_out']} "
                f"held out): within 10% {r['within_10pct']:.1%}, within 5% {r['within_5pct']:.1%}, "
                f"median error {r['median_abs_error']:.1%}, max {r['max_abs_error']:.1%}; "
                f"measured twice: {r['repeat_within_10pct']:.1%} within 10%, median difference "
                f"{r['repeat_median_abs_difference']:.1%}; "
                f"{r['latency_many_widths_per_s']:,.0f} widths/s; load {r['load_average']}",
                flush=True,
            )
    files = [RESULTS / f for f in args.plot.split(",") if f]
    if files:
        plot({f.stem: json.loads(f.read_text()) for f in files})
    return 0


if __name__ == "__main__":
    sys.exit(main())
