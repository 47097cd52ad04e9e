"""Does the supernet rank widths the way training does? (issue 10; paper figure 6, table 15)

On MNIST-1D, 24 widths at 50% FLOPs are drawn with fixed seeds (`program.random(1000 + i,
flops=...)`). Each gets (a) its max-max score (`widthc.evaluate.MaxMax`: every candidate
recalibrated, the best on the validation split) on three trained supernets: r=1 min-min
(widthc), r=1 random candidate (--minmin-start 1) and r=0 (fixed pattern); and (b) its test
accuracy after training from scratch (the width's left-most channels of the seed's initial
weights, as the retrain stage builds it) with a fixed recipe: the benchmark's recipe at
`--epochs` (default: the benchmark's 30), averaged over two seeds (initial weights and data
order) to halve the retraining noise. Kendall tau and Spearman rho (scipy.stats) between (a)
and (b) per supernet, and a scatter plot per supernet: bench/results/ranking-<supernet>.png.

The supernets are those of bench/quality.py's runs (same recipe; seeds `--supernet-seeds`,
default all five: tau per seed, then mean and std over the seeds) when they exist, and are
trained here with `widthc train` otherwise. The truth's own noise floor: Kendall tau between
two retraining seeds (each pair, and the mean of half the seeds against the other half).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ranking.py [--epochs 30] [--truth-seeds 0,1,2,3]

`--levers` adds the supernets of bench/quality.py's levers (LEVERS), trained there.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import dataclasses
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

from widthc import run as run_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUPERNETS = {  # name -> (quality.py method whose seed-0 run it is, widthc train options)
    "r1-minmin": ("widthc", []),
    "r1-random-candidate": ("random candidate", ["--minmin-start", "1"]),
    "r0-fixed-pattern": ("fixed pattern", ["--offset", "0"]),
}
# the same ranking asked of the levers' supernets (bench/quality.py --variant NAME): do the
# supernets that train better (the largest width's validation accuracy) also rank better?
LEVERS = {  # name -> quality.py variant, whose widthc runs hold the supernets
    "r1-minmin-epochs-x2": "supernet-epochs-x2",
    "r1-minmin-sandwich": "sandwich",
    "r2-minmin": "offset-2",
}
N_WIDTHS, BUDGET, FIRST_SEED = 24, 0.5, 1000


def correlations(x, y) -> dict:
    """Kendall tau (tau-b) and Spearman rho of two sequences, with p-values (scipy.stats)."""
    from scipy import stats

    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}  # fmt: skip


def supernet_run(name: str, data: str, runs: Path, bench, seed: int = 0) -> Path:
    """The run directory of a trained supernet: quality.py's run of `seed`, or trained here."""
    if name in LEVERS:
        path = ROOT / "runs" / "bench" / "levers" / LEVERS[name] / data / f"widthc-s{seed}"
        if not (path / run_files.SUPERNET).exists():
            sys.exit(f"{path} has no supernet: run bench/quality.py --data {data} "
                     f"--variant {LEVERS[name]} first, or leave out --levers")  # fmt: skip
        return path
    method, options = SUPERNETS[name]
    path = runs / quality.Task(method, seed).key
    if run_files.Run(path).done("train"):
        return path
    path = ROOT / "runs" / "bench" / "ranking" / f"{name}-s{seed}"
    cmd = [quality.WIDTHC, "train", str(ROOT / bench.model), "--data", data, "--seed", str(seed),
           "--out", str(path), *bench.recipe.train_cli(), *options]  # fmt: skip
    if (path / run_files.CONFIG).exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=True, cwd=ROOT)
    return path


def sample_widths(program, n: int = N_WIDTHS, budget: float | None = None) -> list:
    """`n` distinct widths at `budget` FLOPs (default BUDGET x the full FLOPs), seeds
    FIRST_SEED, FIRST_SEED + 1, ..."""
    budget = BUDGET * program.flops() if budget is None else budget
    seen, out = set(), []
    seed = FIRST_SEED
    while len(out) < n:
        choice = program.random(seed, flops=budget)
        seed += 1
        if choice.ks() not in seen:
            seen.add(choice.ks())
            out.append(choice)
    return out


def scores(run: Path, widths: list) -> list[dict]:
    from widthc.context import Context
    from widthc.evaluate import MaxMax

    ctx = Context.open(run, progress=False)
    net = ctx.supernet(trained=True).eval()
    scorer = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.metric, seed=ctx.config.seed)
    out = []
    for w in widths:
        s = scorer(ctx.program.validate(w))
        out.append({"score": s.value, "candidate": s.candidate, "candidates": list(s.candidates)})
    return out


def retrained(run: Path, widths: list, epochs: int, seeds: list[int], cache: Path) -> list[dict]:
    """Test accuracy of each width trained from scratch for `epochs` epochs, the mean over
    `seeds` (initial weights and data order; cached per width and seed in `cache`, so an
    interrupted run continues)."""
    import widthc
    from widthc.config import RunConfig
    from widthc.context import Context, compile_source
    from widthc.run import Run
    from widthc.stages import retrain

    done = json.loads(cache.read_text()) if cache.exists() else {}
    config = run_files.Run(run).config
    out = []
    for w in widths:
        per_seed = []
        for seed in seeds:
            key = ",".join(map(str, [k for _, k in w.ks()])) + f"/seed{seed}/e{epochs}"
            if key not in done:
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    options = {**config, "seed": seed}
                    ctx = Context(RunConfig.from_json(options), Run(tmp, options), progress=False)
                    program = compile_source(ctx.config, ctx.source())
                    model = widthc.slim(program, program.validate(w))
                    model = retrain.train(ctx, model, Path(tmp), epochs, "ranking")
                    acc = retrain.measure(model, ctx.splits.test, ctx.metric, ctx.device)
                done[key] = {"test": acc, "flops": program.flops(w),
                             "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
                cache.write_text(json.dumps(done, indent=1))
                print(f"retrained {key}: {done[key]}", flush=True)
            per_seed.append(done[key])
        out.append({"test": float(np.mean([e["test"] for e in per_seed])),
                    "per_seed": [e["test"] for e in per_seed], "flops": per_seed[0]["flops"]})  # fmt: skip
    return out


def noise_floor(per_seed: np.ndarray) -> dict:
    """How well retraining ranks the widths against itself (rows: widths, columns: seeds):
    Kendall tau of every pair of seeds, and of the mean of the first half of the seeds
    against the mean of the second half."""
    from itertools import combinations

    pairs = [correlations(per_seed[:, a], per_seed[:, b])["kendall_tau"]
             for a, b in combinations(range(per_seed.shape[1]), 2)]  # fmt: skip
    half = per_seed.shape[1] // 2
    split = correlations(per_seed[:, :half].mean(1), per_seed[:, half:].mean(1))
    return {"pairwise_kendall_tau": pairs, "pairwise_kendall_tau_mean": float(np.mean(pairs)),
            "half_vs_half": split}  # fmt: skip


def plot(name: str, x: list, y: list, corr: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.scatter(100 * np.array(x), 100 * np.array(y), s=18)
    ax.set_xlabel("supernet max-max score (val %)")
    ax.set_ylabel("retrained test accuracy (%)")
    ax.set_title(f"{name}: τ {corr['kendall_tau']:.2f}, ρ {corr['spearman_rho']:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist1d")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the retraining")
    p.add_argument("--truth-seeds", default="0,1,2,3", help="retraining seeds, averaged")
    p.add_argument("--supernet-seeds", default="0,1,2,3,4", help="quality.py runs' seeds")
    p.add_argument(
        "--runs", help="quality.py's run directories (default runs/bench/quality/<data>)"
    )
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument(
        "--levers",
        action="store_true",
        help="also rank with the levers' supernets (bench/quality.py --variant)",
    )
    args = p.parse_args()
    kinds = list(SUPERNETS) + (list(LEVERS) if args.levers else [])
    torch.set_num_threads(1)
    bench = quality.DATASETS[args.data]
    runs = Path(args.runs or ROOT / "runs" / "bench" / "quality" / args.data)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    net_seeds = [int(x) for x in args.supernet_seeds.split(",")]
    paths = {(name, s): supernet_run(name, args.data, runs, bench, s)
             for name in kinds for s in net_seeds}  # fmt: skip
    from widthc.context import Context

    programs = {k: Context.open(path, progress=False).program for k, path in paths.items()}
    base = programs[("r1-minmin", net_seeds[0])]
    assert all(pr.binning == base.binning for pr in programs.values()), "supernets differ in bins"
    widths = sample_widths(base)
    seeds = [int(x) for x in args.truth_seeds.split(",")]
    cache = results / "ranking-retrained.json"
    truth = retrained(paths[("r1-minmin", net_seeds[0])], widths, args.epochs, seeds, cache)
    acc = [t["test"] for t in truth]
    summary = {"data": args.data, "widths": [list(w.ks()) for w in widths], "budget": BUDGET,
               "retrain_epochs": args.epochs, "retrain_seeds": seeds, "retrained_test": acc,
               "retrained_per_seed": [t["per_seed"] for t in truth],
               "recipe": dataclasses.asdict(dataclasses.replace(bench.recipe, epochs=args.epochs)),
               "supernets": {}}  # fmt: skip
    if len(seeds) > 1:  # how well retraining ranks the widths against itself: the noise floor
        summary["noise_floor"] = noise_floor(np.array([t["per_seed"] for t in truth]))
    for name in kinds:
        entry = summary["supernets"][name] = {"seeds": {}}
        for s in net_seeds:
            found = scores(paths[(name, s)], widths)
            value = [e["score"] for e in found]
            corr = correlations(value, acc)
            if s == net_seeds[0]:
                plot(name, value, acc, corr, results / f"ranking-{name}.png")
            entry["seeds"][s] = {"run": os.path.relpath(paths[(name, s)], ROOT), "scores": found,
                                 **corr}  # fmt: skip
            print(f"{name} seed {s}: tau {corr['kendall_tau']:.3f}, "
                  f"rho {corr['spearman_rho']:.3f}", flush=True)  # fmt: skip
        for key in ("kendall_tau", "spearman_rho"):
            values = [e[key] for e in entry["seeds"].values()]
            entry[f"{key}_mean"] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        print(f"{name}: tau {entry['kendall_tau_mean']:.3f} ± {entry['kendall_tau_std']:.3f}, "
              f"rho {entry['spearman_rho_mean']:.3f} ± {entry['spearman_rho_std']:.3f}",
              flush=True)  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (results / "ranking.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
