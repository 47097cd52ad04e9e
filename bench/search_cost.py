"""The cost of the search (issue "search"): width arithmetic, max-max scoring, and a whole search.

1. Width arithmetic on torchvision resnet50 at 224x224: `program.flops(choice)` per second,
   `program.flops_many` widths per second (batches of 10,000), and `program.random(seed,
   flops=50%)` in milliseconds (each the median of several runs).
2. Scoring one 50%-FLOPs candidate of resnet18 at 32x32, batch 64, over 10 batches (5
   batch-norm calibration batches, then 5 validation batches), its sliced weights gathered
   once, against the physically slimmed model (`widthc.slim`) doing the same work on the same
   batches (recalibrated, then evaluated). The two alternate; the ratio is the median of the
   per-round ratios.
3. One default evolutionary search (population 40, 50 generations, 8 calibration batches) on
   the digits example after a short supernet training: wall time split into calibration,
   validation, the rest of scoring (gathering weights, copying buffers) and the searcher's own
   overhead (everything outside the score function).

Times are this process's CPU time (`time.process_time`: one thread, so it is the compute
itself, not what other processes on a shared machine take from it). With `--device cuda` the
scoring and the search run on the GPU (the supernet masked, issue 15) and times are wall
times between `torch.cuda.synchronize()` calls; scoring then uses batch 128, and each round
scores a new 50%-FLOPs width after 10 warm-up widths (the slimmed model's second run is the
unit: its kernels warm).

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_cost.py [--quick]
    python bench/search_cost.py --device cuda [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy's BLAS too: one thread, before it loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import widthc
from widthc import search
from widthc.evaluate import MaxMax, batch, recalibrate, score_choice
from widthc.frontends.data import load_splits
from widthc.train import TrainConfig, train_supernet

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def width_arithmetic(repeats: int) -> dict:
    torch.manual_seed(0)
    program = widthc.compile(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224))
    choice = program.uniform(ratio=0.5)
    rates, many, random_ms = [], [], []
    rng = np.random.default_rng(0)
    widths = rng.integers(1, program.space.n_bins + 1, size=(10_000, program.space.size))
    for r in range(repeats):
        t0 = time.process_time()
        for _ in range(2000):
            program.flops(choice)
        rates.append(2000 / (time.process_time() - t0))
        t0 = time.process_time()
        program.flops_many(widths)
        many.append(len(widths) / (time.process_time() - t0))
        budget = 0.5 * program.flops()
        t0 = time.process_time()
        for seed in range(20):
            program.random(r * 20 + seed, flops=budget)
        random_ms.append((time.process_time() - t0) / 20 * 1e3)
    return {
        "groups": len(program.searchable),
        "flops(choice) per s": statistics.median(rates),
        "flops_many widths per s": statistics.median(many),
        "random(seed, flops=50%) ms": statistics.median(random_ms),
    }


def _clock(device):
    """A timer: this process's CPU time on a CPU, synchronised wall time on a GPU."""
    if device.type != "cuda":
        return time.process_time

    def timer() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return timer


def scoring_ratio(rounds: int, device=CPU) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    program = widthc.compile(model, torch.randn(1, 3, 32, 32))
    net = widthc.supernet(program).to(device)
    cuda = device.type == "cuda"
    size, warm = (128, 10) if cuda else (64, 0)
    train = load_splits("digits", (1, 3, 32, 32), seed=0).train
    batches = [batch(train, torch.arange(i * size, (i + 1) * size) % len(train)) for i in range(10)]
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    calib, val = [x for x, _ in batches[:5]], batches[5:]
    half = program.uniform(flops=0.5 * program.flops())
    clock = _clock(device)
    ratios, t_score, t_slim = [], [], []
    for r in range(warm + rounds):
        width = program.random(r, flops=0.5 * program.flops()) if cuda else half
        choice = program.candidates(width)[min(1, len(program.candidates(width)) - 1)]
        t0 = clock()
        score_choice(net, choice, calib, val)
        t1 = clock()
        small = widthc.slim(program, choice).to(device)  # slimming is not timed: only running it
        for _ in range(2 if cuda else 1):  # on a GPU the second run: its kernels warm
            t2 = clock()
            with torch.no_grad():
                recalibrate(small, calib)
                small.eval()
                for x, y in val:
                    float((small(x).argmax(-1) == y).float().mean())
            t3 = clock()
        if r < warm:
            continue
        t_score.append(t1 - t0)
        t_slim.append(t3 - t2)
        ratios.append((t1 - t0) / (t3 - t2))
    return {
        "score ms": statistics.median(t_score) * 1e3,
        "slim model ms": statistics.median(t_slim) * 1e3,
        "ratio": statistics.median(ratios),
    }


def digits_search(epochs: int, population: int, generations: int, device=CPU) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    import mobilenet_digits

    torch.manual_seed(0)
    model = mobilenet_digits.model()
    program = widthc.compile(model, torch.randn(1, 1, 8, 8))
    net = widthc.supernet(program).to(device)
    splits = load_splits("digits", (1, 1, 8, 8), seed=0)
    train, val = splits.train, splits.val
    clock = _clock(device)
    t0 = clock()
    train_supernet(net, train, None, TrainConfig(epochs=epochs, batch_size=64))
    t_train = clock() - t0
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    calib = [batch(train, order[i * 64 : (i + 1) * 64])[0] for i in range(8)]
    val_batches = [
        batch(val, torch.arange(i, min(i + 256, len(val)))) for i in range(0, len(val), 256)
    ]
    scorer = MaxMax(net, calib, val_batches, timer=clock)
    in_score = [0.0]

    def score(w):
        t = clock()
        s = scorer(program.space.choice(w))
        in_score[0] += clock() - t
        return s.value, s.candidate

    t0 = clock()
    result = search.search(
        program.space, program.flops_many, score, 0.5 * program.flops(), "evolutionary",
        population=population, generations=generations,
    )  # fmt: skip
    total = clock() - t0
    calib_s, val_s = scorer.clock["calibration"], scorer.clock["validation"]
    return {
        "supernet training s": t_train,
        "widths evaluated": len(result.history),
        "sub-networks scored": scorer.scored,
        "search s": total,
        "calibration s": calib_s,
        "validation s": val_s,
        "other scoring s": in_score[0] - calib_s - val_s,
        "searcher overhead s": total - in_score[0],
        "searcher overhead share": (total - in_score[0]) / total,
        "best score": result.best.score,
        "uniform score": result.uniform.score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a small search")
    parser.add_argument("--part", choices=("all", "arithmetic", "scoring", "search"), default="all")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {args.device}")
    if args.part in ("all", "arithmetic"):
        print("\n## width arithmetic (resnet50, 224x224)")
        for k, v in width_arithmetic(3 if args.quick else 7).items():
            print(f"- {k}: {v:,.4g}")
    if args.part in ("all", "scoring"):
        size = 128 if device.type == "cuda" else 64
        print(f"\n## scoring a 50%-FLOPs candidate (resnet18, 32x32, batch {size}, 10 batches)")
        for k, v in scoring_ratio(5 if args.quick else 21, device).items():
            print(f"- {k}: {v:.4g}")
    if args.part in ("all", "search"):
        print("\n## one evolutionary search on digits (examples/mobilenet_digits.py)")
        pop, gens = (8, 3) if args.quick else (40, 50)
        for k, v in digits_search(2 if args.quick else 5, pop, gens, device).items():
            print(f"- {k}: {v:.4g}")


if __name__ == "__main__":
    main()
