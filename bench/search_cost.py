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
itself, not what other processes on a shared machine take from it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_cost.py [--quick]
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


def scoring_ratio(rounds: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    program = widthc.compile(model, torch.randn(1, 3, 32, 32))
    net = widthc.supernet(program)
    choice = program.candidates(program.uniform(flops=0.5 * program.flops()))[1]
    train = load_splits("digits", (1, 3, 32, 32), seed=0).train
    batches = [batch(train, torch.arange(i * 64, (i + 1) * 64)) for i in range(10)]
    calib, val = [x for x, _ in batches[:5]], batches[5:]
    ratios, t_score, t_slim = [], [], []
    for _ in range(rounds):
        t0 = time.process_time()
        score_choice(net, choice, calib, val)
        t1 = time.process_time()
        small = widthc.slim(program, choice)  # slimming is not timed: only running it
        t2 = time.process_time()
        with torch.no_grad():
            recalibrate(small, calib)
            small.eval()
            for x, y in val:
                float((small(x).argmax(-1) == y).float().mean())
        t3 = time.process_time()
        t_score.append(t1 - t0)
        t_slim.append(t3 - t2)
        ratios.append((t1 - t0) / (t3 - t2))
    return {
        "score ms": statistics.median(t_score) * 1e3,
        "slim model ms": statistics.median(t_slim) * 1e3,
        "ratio": statistics.median(ratios),
    }


def digits_search(epochs: int, population: int, generations: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    import mobilenet_digits

    torch.manual_seed(0)
    model = mobilenet_digits.model()
    program = widthc.compile(model, torch.randn(1, 1, 8, 8))
    net = widthc.supernet(program)
    splits = load_splits("digits", (1, 1, 8, 8), seed=0)
    train, val = splits.train, splits.val
    t0 = time.process_time()
    train_supernet(net, train, None, TrainConfig(epochs=epochs, batch_size=64))
    t_train = time.process_time() - t0
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    calib = [batch(train, order[i * 64 : (i + 1) * 64])[0] for i in range(8)]
    val_batches = [
        batch(val, torch.arange(i, min(i + 256, len(val)))) for i in range(0, len(val), 256)
    ]
    scorer = MaxMax(net, calib, val_batches, timer=time.process_time)
    in_score = [0.0]

    def score(w):
        t = time.process_time()
        s = scorer(program.space.choice(w))
        in_score[0] += time.process_time() - t
        return s.value, s.candidate

    t0 = time.process_time()
    result = search.search(
        program.space, program.flops_many, score, 0.5 * program.flops(), "evolutionary",
        population=population, generations=generations,
    )  # fmt: skip
    total = time.process_time() - t0
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    if args.part in ("all", "arithmetic"):
        print("\n## width arithmetic (resnet50, 224x224)")
        for k, v in width_arithmetic(3 if args.quick else 7).items():
            print(f"- {k}: {v:,.4g}")
    if args.part in ("all", "scoring"):
        print("\n## scoring a 50%-FLOPs candidate (resnet18, 32x32, batch 64, 10 batches)")
        for k, v in scoring_ratio(5 if args.quick else 21).items():
            print(f"- {k}: {v:.4g}")
    if args.part in ("all", "search"):
        print("\n## one evolutionary search on digits (examples/mobilenet_digits.py)")
        pop, gens = (8, 3) if args.quick else (40, 50)
        for k, v in digits_search(2 if args.quick else 5, pop, gens).items():
            print(f"- {k}: {v:.4g}")


if __name__ == "__main__":
    main()
