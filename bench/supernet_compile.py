"""`--compile` on against off: min-min steps of a capture-ready supernet through torch.compile
against eager masked execution (issue 15), and how many graphs each compiles.

torchvision resnet18 / mobilenet_v2 (10 classes, 32x32, random data, dropout off: see
`program_of`), masked execution, SGD, a new sampled width every step. Configurations, each from the same freshly built weights:
- `r=0 f=1.0`: eager against compiled;
- `r=1 f=0.25`: eager with the default probes (`auto`: stacked under vmap on CUDA, one
  forward each on a CPU) against compiled with one compiled probe forward per candidate
  (`each`) and compiled with the default probes (the stacked probe eager, the trained forward
  compiled).
Every configuration's first step starts from the same weights, batch and width, so the first
steps check the compiled against the eager one (the trained loss and the probe losses,
relative difference: `check`).

`--device cuda` (issue 15's protocol): each configuration first runs `--warmup` steps (the
first compiles; then fresh widths), then `--steps` steps timed as one block between two
`torch.cuda.synchronize()` calls; the plain full model's training step is the unit.
`--device cpu`: the eager and the compiled step take turns step by step on the same widths (in
a new order every round), after `--warmup` steps each; a ratio is the median of the same
round's ratios. Graphs: torch._dynamo's count of compiled graphs, during the first step and
during every later step (new widths: 0 is the property that makes compiling pay).

    python bench/supernet_compile.py --device cuda --json out.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/supernet_compile.py --device cpu --batch 32
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections.abc import Iterator

import torch
import torchvision
from supernet_cuda import plain_step
from torch._dynamo.utils import counters

import widthc
from widthc.loop import optimizer
from widthc.precision import Precision
from widthc.train import MinMinStep, TrainConfig, cross_entropy

CLASSES, SIZE = 10, 32
CONFIGS = {  # name: (offset r, fraction f, probes, compiled)
    "r=0 f=1.0 eager": (0, 1.0, "auto", False),
    "r=0 f=1.0 compiled": (0, 1.0, "auto", True),
    "r=1 f=0.25 eager": (1, 0.25, "auto", False),
    "r=1 f=0.25 compiled each": (1, 0.25, "each", True),
    "r=1 f=0.25 compiled auto": (1, 0.25, "auto", True),
}


class _Loop:
    """What MinMinStep reads from the loop that runs it."""

    def __init__(self, opt, precision: Precision):
        self.opt, self.precision, self.step, self.total_steps = opt, precision, 0, 10**9


def program_of(name: str):
    """The model without dropout: inductor draws its own random numbers, so a compiled step
    with dropout differs from the eager one (equally distributed draws), and the first steps
    would not compare (`check`); dropout is a negligible share of a step."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=CLASSES)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return widthc.compile(model, torch.randn(1, 3, SIZE, SIZE))


def supernets(name: str, device) -> dict:
    """{compiled: a masked supernet of `name`} with the same fresh weights, and those weights:
    every configuration starts from them, and the compiled configurations share one supernet
    (and so its compiled graphs: the trained forward is traced once for r=0 and r=1)."""
    nets = {}
    for compiled in (False, True):
        nets[compiled] = widthc.supernet(program_of(name), execution="masked").to(device).train()
        if compiled:
            nets[compiled].capture_ready(compile=True)
    return nets, copy.deepcopy(nets[False].state_dict())


def stepper(net, fresh: dict, config: str, device):
    """step(x, y): one min-min step of `config` from the weights `fresh`, then SGD; `.graphs`:
    graphs compiled by each step; `.first`: the first step's record."""
    offset, fraction, probes, _ = CONFIGS[config]
    net.load_state_dict(fresh)  # in place: the compiled graphs' static tensors stay
    net.offset = offset
    cfg = TrainConfig(lr=0.01, select_batch_fraction=fraction, probes=probes)
    opt, _ = optimizer(list(net.parameters()), cfg, 10**9)
    step = MinMinStep(net, net, cfg, cross_entropy())
    step.trainer = _Loop(opt, Precision("off", False, device))
    step.sampler.manual_seed(0)

    def run(x, y) -> dict:
        start = counters["stats"]["unique_graphs"]
        record = step(x, y)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step.trainer.step += 1
        if not run.graphs:
            run.first = record
        run.graphs.append(counters["stats"]["unique_graphs"] - start)
        return record

    run.graphs, run.first = [], None
    return run


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check(out: dict, runs: dict) -> None:
    """Relative difference of the first step's trained loss and probe losses, compiled against
    eager (the same weights, batch and width)."""
    for label, (eager, compiled) in (("r=0", list(CONFIGS)[:2]), ("r=1", list(CONFIGS)[2:4])):
        if eager in runs and compiled in runs:
            a, b = runs[eager].first, runs[compiled].first
            pairs = [(a["loss"], b["loss"])]
            pairs += zip(torch.as_tensor(a["candidate_losses"]).tolist(),
                         torch.as_tensor(b["candidate_losses"]).tolist())  # fmt: skip
            out[f"check {label}"] = max(
                abs(float(y) - float(x)) / max(abs(float(x)), 1e-12) for x, y in pairs
            )


def cuda_costs(name, batches, warmup: int, steps: int, device) -> Iterator[dict]:
    """ms per step of every configuration (a block of `steps` after `warmup`), and the plain
    full model's step; yields the figures after every configuration."""
    out = {"model": name, "batch": len(batches[0][1]), "warmup": warmup, "steps": steps}
    firsts = {}
    nets, fresh = supernets(name, device)
    makers = {"plain": lambda: plain_step(program_of(name).gm, Precision("off", False, device))}
    makers.update(
        {c: (lambda c=c: stepper(nets[CONFIGS[c][3]], fresh, c, device)) for c in CONFIGS}
    )
    for key, make in makers.items():
        run = make()
        t0 = time.perf_counter()
        run(*batches[0])
        _sync(device)
        out[f"{key} first step s"] = time.perf_counter() - t0
        for i in range(1, warmup if key != "plain" else max(warmup // 10, 2)):
            run(*batches[i % len(batches)])
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            run(*batches[i % len(batches)])
        _sync(device)
        out[key] = (time.perf_counter() - t0) / steps * 1e3
        if key != "plain":
            out[f"{key} graphs"] = [run.graphs[0], sum(run.graphs[1:])]
            firsts[key] = run
        out[f"{key} / plain"] = out[key] / out["plain"]
        _check(out, firsts)
        yield out
    _ratios(out)
    out["cudagraphs"] = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
    yield out


def cpu_costs(name, batches, warmup: int, steps: int, device) -> Iterator[dict]:
    """The eager and compiled steps taking turns (see the module docstring)."""
    out = {"model": name, "batch": len(batches[0][1]), "warmup": warmup, "steps": steps}
    rng = random.Random(0)
    nets, fresh = supernets(name, device)
    for eager, compiled in (list(CONFIGS)[:2], list(CONFIGS)[2:4]):
        runs = {k: stepper(nets[CONFIGS[k][3]], fresh, k, device) for k in (eager, compiled)}
        times = {k: [] for k in runs}
        t0 = time.perf_counter()
        runs[compiled](*batches[0])
        out[f"{compiled} first step s"] = time.perf_counter() - t0
        runs[eager](*batches[0])
        for i in range(1, warmup + steps):
            order = list(runs)
            rng.shuffle(order)
            for key in order:
                t0 = time.perf_counter()
                runs[key](*batches[i % len(batches)])
                times[key].append(time.perf_counter() - t0)
        for key, run in runs.items():
            out[key] = statistics.median(times[key][warmup - 1 :]) * 1e3
            out[f"{key} graphs"] = [run.graphs[0], sum(run.graphs[1:])]
        ratios = [c / e for e, c in zip(times[eager][warmup - 1 :], times[compiled][warmup - 1 :])]
        out[f"{compiled} / eager"] = statistics.median(ratios)
        _check(out, runs)
        yield out


def _ratios(out: dict) -> None:
    out["r=0 f=1.0 compiled / eager"] = out["r=0 f=1.0 compiled"] / out["r=0 f=1.0 eager"]
    for probes in ("each", "auto"):
        key = f"r=1 f=0.25 compiled {probes}"
        out[f"{key} / eager"] = out[key] / out["r=1 f=0.25 eager"]
        out[f"{key} / compiled r=0"] = out[key] / out["r=0 f=1.0 compiled"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=None, help="default: 100 on CUDA, 3 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="default: 50 on CUDA, 10 on CPU")
    ap.add_argument("--json", default=None, help="also write the figures (after every part)")
    ap.add_argument("--protocol", action="store_true", help="the CUDA protocol on any device")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda" or args.protocol
    warmup = args.warmup or (100 if cuda else 3)
    steps = args.steps or (50 if cuda else 10)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"torch {torch.__version__}, {where}, batch {args.batch}, {SIZE}x{SIZE}, masked execution, "
          f"{warmup} warm-up steps (the first compiles), {steps} timed steps")  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(args.batch, 3, SIZE, SIZE, generator=gen).to(device),
         torch.randint(CLASSES, (args.batch,), generator=gen).to(device))
        for _ in range(8)
    ]  # fmt: skip
    results = []
    for name in args.models.split(","):
        costs = cuda_costs if cuda else cpu_costs
        for r in costs(name, batches, warmup, steps, device):
            if args.json:  # after every part: a run stopped later keeps what it measured
                with open(args.json, "w") as f:
                    json.dump([*results, r], f, indent=2)
        results.append(r)
        print(f"\n### {name}\n")
        print(
            "| step | ms | graphs: first step / later steps | first step s |\n|---|---:|---:|---:|"
        )
        for key in (k for k in r if f"{k} graphs" in r or k == "plain"):
            g = r.get(f"{key} graphs", ["-", "-"])
            first = r.get(f"{key} first step s")
            print(
                f"| {key} | {r[key]:.2f} | {g[0]} / {g[1]} | {'' if first is None else f'{first:.1f}'} |"
            )
        for key in (k for k in r if k.endswith(("/ eager", "/ plain", "/ compiled r=0"))):
            print(f"{key}: {r[key]:.2f}")
        for key in (k for k in r if k.startswith("check")):
            print(f"{key}: compiled against eager, first step, relative difference {r[key]:.1e}")
        if r.get("cudagraphs"):
            print(f"inductor's CUDA-graph counters: {r['cudagraphs']}")


if __name__ == "__main__":
    main()
