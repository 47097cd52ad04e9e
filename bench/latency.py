"""Latency of the uniform 50%-FLOPs slimmed model over the original (issue 3's benchmark).

    OMP_NUM_THREADS=1 .venv/bin/python bench/latency.py [--runs 20] [--batches 1,16]
        [--models resnet50,mobilenet_v2] [--size 224]

For each model (torchvision, random weights, eval mode): compile, choose the uniform width that
meets 50% of the full FLOPs, slim it (timed: the target is under 2 s for resnet50), export both
models with widthc.export_onnx (parity-checked), then time both side by side in this process:
onnxruntime (CPU provider, 1 intra-op and 1 inter-op thread) and PyTorch eager (1 thread,
inference mode), at each batch size. Each round runs both models once, in a random order; the
reported figure is the median of `--runs` rounds after a warm-up, on the thread's CPU time
(one thread: the latency on a core of its own, which other processes barely move). Target: slim /
original <= 0.6 (the physical limit is about 0.5, the FLOPs ratio).

`--align 8` (the default) adds a second slimmed model: the uniform width within the same budget
on bins aligned to multiples of 8 channels (`widthc.compile(..., align=8)`, `--align 8` in the
CLI). onnxruntime's
fast CPU convolutions (NCHWc blocks of 8 channels with AVX2) need such counts; with arbitrary
counts it falls back to slower kernels, and the plain uniform slim model can even run slower
than the original. `--align 0` leaves it out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

import widthc  # noqa: E402
from widthc.latency import timing  # noqa: E402
from widthc.space import human  # noqa: E402

TARGET_RATIO = 0.6
TARGET_SLIM_SECONDS = 2.0


def side_by_side(run_a, run_b, runs: int) -> tuple[float, float]:
    """Median seconds of `run_a` and `run_b`, timed side by side after a warm-up, in a random
    order every round, on the thread's CPU time (one thread: widthc.latency.timing)."""
    a, b = timing.times([run_a, run_b], runs, "thread")
    return statistics.median(a), statistics.median(b)


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(session, x: torch.Tensor):
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def eager_runner(module: torch.nn.Module, x: torch.Tensor):
    def run():
        with torch.inference_mode():
            module(x)

    return run


def bench_model(
    name: str, size: int, batches: list[int], runs: int, align: int, folder: Path
) -> tuple[list, float]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    program = widthc.compile(model, x)
    compile_s = time.perf_counter() - start
    budget = 0.5 * program.flops()
    start = time.perf_counter()
    choice = program.uniform(flops=budget)
    uniform_s = time.perf_counter() - start
    start = time.perf_counter()
    small = widthc.slim(program, choice)
    slim_s = time.perf_counter() - start
    print(
        f"{name}: compile {compile_s:.2f} s, uniform width {uniform_s:.2f} s, slim {slim_s:.2f} s"
        + (f" (target < {TARGET_SLIM_SECONDS:.0f} s)" if name == "resnet50" else ""),
        flush=True,
    )
    variants = {"uniform": (program, choice, small)}
    if align:  # the same program with bins on multiples of `align` channels
        aligned_program = program.rebin(program.beta, align=align)
        aligned = aligned_program.uniform(flops=budget)
        variants[f"uniform, x{align}"] = (
            aligned_program,
            aligned,
            widthc.slim(aligned_program, aligned),
        )
    modules = {"original": model} | {v: m for v, (_, _, m) in variants.items()}
    for label, (prog, c, _) in variants.items():  # a choice counts in its own program's bins
        print(
            f"  {label:12s}: {human(prog.flops())} -> {human(prog.flops(c))} FLOPs "
            f"(ratio {prog.flops(c) / prog.flops():.3f}), params {human(prog.params())} "
            f"-> {human(prog.params(c))}"
        )
    sessions = {}
    for i, (label, module) in enumerate(modules.items()):
        path = folder / f"{name}-{i}.onnx"
        report = widthc.export_onnx(module, x, path)
        print(f"  onnx {label}: parity {report.error:.1e} ({report.exporter} exporter)")
        sessions[label] = ort_session(path)
    rows = []
    for batch in batches:
        xb = torch.randn(batch, 3, size, size)
        for runtime in ("onnxruntime", "pytorch"):
            for label in variants:
                if runtime == "onnxruntime":
                    a, b = ort_runner(sessions["original"], xb), ort_runner(sessions[label], xb)
                else:
                    a, b = eager_runner(model, xb), eager_runner(modules[label], xb)
                t_orig, t_slim = side_by_side(a, b, runs)
                rows.append((name, label, runtime, batch, t_orig, t_slim))
                print(
                    f"  {runtime:12s} batch {batch:3d} {label:12s}: original "
                    f"{t_orig * 1e3:8.1f} ms, slim {t_slim * 1e3:8.1f} ms, ratio "
                    f"{t_slim / t_orig:.3f}",
                    flush=True,
                )
    return rows, slim_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--align", type=int, default=8, help="0: no aligned variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"torch {torch.__version__}, 1 thread; onnxruntime CPU, 1 intra-op thread; "
        f"{args.size}x{args.size}; medians of {args.runs} side-by-side rounds",
        flush=True,
    )
    rows, slim_times = [], {}
    with tempfile.TemporaryDirectory(prefix="widthc-bench-") as tmp:
        for name in args.models.split(","):
            timed, slim_s = bench_model(name, args.size, batches, args.runs, args.align, Path(tmp))
            rows += timed
            slim_times[name] = slim_s
    print()
    print("| model | slim width | runtime | batch | original ms | slim ms | slim / original |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, label, runtime, batch, t_orig, t_slim in rows:
        print(
            f"| {name} | {label} | {runtime} | {batch} | {t_orig * 1e3:.1f} | "
            f"{t_slim * 1e3:.1f} | {t_slim / t_orig:.3f} |"
        )
    print()
    for label in dict.fromkeys(r[1] for r in rows):
        worst = max(r[5] / r[4] for r in rows if r[1] == label)
        verdict = "met" if worst <= TARGET_RATIO else "NOT met"
        print(f"{label}: worst ratio {worst:.3f}, target <= {TARGET_RATIO} {verdict}")
    if "resnet50" in slim_times:
        s = slim_times["resnet50"]
        print(f"slim resnet50: {s:.2f} s (target < {TARGET_SLIM_SECONDS:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
