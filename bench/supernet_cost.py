"""The cost of CafeNet supernet training on CPU: the analogue of the paper's table 8.

For mobilenet_v2 and resnet18 (10 classes) at 32x32, batch 64, one process:
- the time of one training step (forward, backward, SGD) of a plain nn.Module of the sampled
  width (the slimmed model), and of the supernet's min-min step with offset r = 0, 1, 2, 3,
  selecting the min-loss candidate on the full batch and on a quarter of it (f = 0.25);
- how often the f = 0.25 selection agrees with the full batch's (from initialisation);
- the supernet's forward at a 50%-FLOPs width against full width (eval, no grad), and the same
  forward run through torch.fx.Interpreter instead of the generated code;
- the peak memory of r = 1 training against r = 0: the peak of the tensors allocated during
  training steps, from the torch profiler's allocation events on CPU (see `peak_memory`).

Every configuration replays the same sequence of sampled widths (seeded), so the ratios compare
like with like; the configurations take turns step by step (in a new order every round), and a
ratio is the median of the ratios of the same round. Times are medians over `--steps` steps
after `--warmup` steps.

`--shapes`: the distinct convolution shapes a 1,000-step min-min run (r=1, f=0.25) presents,
sliced against masked execution (bench/supernet_cuda.py). `--device cuda`: issue 15's protocol
on a GPU (bench/supernet_cuda.py: steady state after 500 fresh widths, the plain full model's
step as the unit, r=0, r=1 f=0.25, r=1 f=1, bf16 + channels-last, scoring). `--protocol` runs
that protocol on the CPU too (the tests' smoke run of the GPU script, with tiny sizes).

    OMP_NUM_THREADS=1 .venv/bin/python bench/supernet_cost.py [--offsets 0,1] [--shapes 1000]
    python bench/supernet_cost.py --device cuda --batch 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
from torch import fx
from torch.profiler import ProfilerActivity, profile

import widthc
from widthc import space
from widthc.config import EXECUTIONS
from widthc.evaluate import batch as take
from widthc.frontends.data import load_splits
from widthc.loop import sgd
from widthc.passes.slim import slim
from widthc.precision import Precision
from widthc.train import MinMinStep, TrainConfig, cross_entropy, sample_width

SIZE, CLASSES = 32, 10


def _program(name: str):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=CLASSES)
    return widthc.compile(model, torch.randn(1, 3, SIZE, SIZE))


def _batches(batch: int, n: int) -> list:
    train = load_splits("digits", (1, 3, SIZE, SIZE), seed=0).train
    n_train = len(train)
    return [take(train, torch.arange(i * batch, (i + 1) * batch) % n_train) for i in range(n)]


class _Run:
    """One min-min training step at a time (widthc.train.MinMinStep + SGD), outside the loop."""

    def __init__(self, net, step, opt):
        self.net, self.step_fn, self.opt, self.step = net, step, opt, 0
        self.total_steps, self.precision = 10**9, Precision()

    @property
    def agree(self):
        return self.step_fn.agree

    def _step(self, x, y):
        record = self.step_fn(x, y)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return record


def _run(program, offset: int, batches, fraction=1.0, agreement=False, execution="sliced") -> _Run:
    net = widthc.supernet(program, offset, execution=execution)
    cfg = TrainConfig(
        batch_size=len(batches[0][1]),
        lr=0.01,
        select_batch_fraction=fraction,
        measure_agreement=agreement,
    )
    step = MinMinStep(net, net, cfg, cross_entropy())
    run = _Run(net, step, sgd(list(net.parameters()), cfg.lr, cfg.momentum, cfg.weight_decay))
    step.trainer = run
    step.sampler.manual_seed(0)
    net.train()
    return run


def step_times(program, batches, warmup: int, offsets=(0, 1, 2, 3), masked=False) -> dict:
    """Median ms per training step of every configuration. The configurations take turns step
    by step, so a busy machine slows them alike and the ratios stay fair."""
    gen = torch.Generator().manual_seed(0)
    probe = widthc.supernet(program, 0)
    widths = [sample_width(probe, gen) for _ in batches]
    plain = []
    for w in widths:
        small = slim(program, w).train()
        plain.append((small, sgd(list(small.parameters()), 0.01, 0.9, 1e-4)))

    def plain_step(i: int, j: int | None = None) -> None:
        model, opt = plain[i if j is None else j]
        x, y = batches[i]
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(len(batches)):  # its first step allocates the momentum buffers: not timed
        plain_step((i + 1) % len(batches), i)

    steps = {"plain": plain_step}
    for r in offsets:
        for f in (1.0, 0.25) if r else (1.0,):
            run = _run(program, r, batches, f)
            steps[f"r={r} f={f}"] = lambda i, run=run: run._step(*batches[i])
    for r, f in ((0, 1.0), (1, 0.25)) if masked else ():  # every width at full width
        run = _run(program, r, batches, f, execution="masked")
        steps[f"r={r} f={f} masked"] = lambda i, run=run: run._step(*batches[i])
    times: dict[str, list[float]] = {k: [] for k in steps}
    keys = list(steps)
    for i in range(len(batches)):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:  # a new order every round
            t = time.perf_counter()
            steps[key](i)
            if i >= warmup:
                times[key].append(time.perf_counter() - t)
    out = {k: 1000 * statistics.median(v) for k, v in times.items()}
    for key in keys:  # ratios of the same round (same width, same load): medians of those
        out[f"{key} / plain"] = _ratio(times[key], times["plain"])
        out[f"{key} / r=0"] = _ratio(times[key], times["r=0 f=1.0"])

    run = _run(program, 1, batches, 0.25, agreement=True)
    for b in batches:
        run._step(*b)
    out["agreement"] = run.agree[0] / max(run.agree[1], 1)
    return out


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def forward_times(program, x, warmup: int, steps: int) -> dict:
    """Median ms of an eval forward at full width and at a 50%-FLOPs width (taking turns)."""
    net = widthc.supernet(program).eval()
    half = program.uniform(flops=0.5 * program.flops())
    small = slim(program, half).eval()

    def supernet(choice, interpreter: bool = False):
        def run():
            net.set_choice(choice)
            if interpreter:  # the same sliced execution, the graph run node by node
                net.gm.forward = lambda *a: fx.Interpreter(net.gm).run(*a)
            try:
                net(x)
            finally:
                net.gm.__dict__.pop("forward", None)

        return run

    runs = {
        "full": supernet(program.full()),
        "half": supernet(half),
        "half_interpreter": supernet(half, interpreter=True),
        "half_plain": lambda: small(x),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for i in range(warmup + steps):
            for key, run in runs.items():
                t = time.perf_counter()
                run()
                if i >= warmup:
                    times[key].append(time.perf_counter() - t)
    out = {k: 1000 * statistics.median(v) for k, v in times.items()}
    out.update({f"{k} / full": _ratio(v, times["full"]) for k, v in times.items()})
    out["half_flops_ratio"] = program.flops(half) / program.flops()
    return out


def peak_memory(program, offset: int, batches) -> float:
    """Peak MiB of tensors allocated during training steps (after one warm-up step), from the
    torch profiler's allocation and free events on CPU: activations, gradients, sliced weights
    and optimizer temporaries, not the weights and optimizer state that exist before."""
    run = _run(program, offset, batches)
    run._step(*batches[0])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for b in batches[1:]:
            run._step(*b)
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage),
        key=lambda e: e.time_range.start,
    )
    now = peak = 0
    for e in events:
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,resnet18")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 128 on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="default: 20 on CPU, 100 on CUDA")
    ap.add_argument("--warmup", type=int, default=None, help="default: 3 on CPU, 500 on CUDA")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--offsets", default="0,1,2,3", help="CPU: the offsets r to time")
    ap.add_argument("--masked", action="store_true", help="CPU: also masked r=0 and r=1 f=0.25")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--protocol", action="store_true", help="issue 15's protocol on any device")
    ap.add_argument(
        "--execution", choices=EXECUTIONS, default="auto", help="protocol: the supernet's"
    )
    ap.add_argument("--scoring-widths", type=int, default=12, help="protocol: widths timed")
    ap.add_argument(
        "--shapes",
        type=int,
        default=0,
        metavar="STEPS",
        help="count the convolution shapes of a run of this many steps, and stop",
    )
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()  # fmt: skip
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.shapes:
        return shapes_main(args)
    if args.device == "cuda" or args.protocol:
        return protocol_main(args)
    args.batch, args.steps, args.warmup = args.batch or 64, args.steps or 20, args.warmup or 3
    offsets = tuple(int(r) for r in args.offsets.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, batch {args.batch}, "
          f"{SIZE}x{SIZE}, median of {args.steps} steps after {args.warmup} warm-up")  # fmt: skip
    for name in args.models.split(","):
        program = _program(name)
        batches = _batches(args.batch, args.warmup + args.steps)
        st = step_times(program, batches, args.warmup, offsets, args.masked)
        fw = forward_times(program, batches[0][0], args.warmup, args.steps)
        mem = {r: peak_memory(program, r, batches[:4]) for r in (0, 1)}
        print(f"\n### {name} ({space.human(program.flops())} FLOPs at {SIZE}x{SIZE})\n")
        print("| training step | ms | vs plain | vs r=0 |\n|---|---:|---:|---:|")
        print(f"| plain nn.Module of the sampled width (slim) | {st['plain']:.1f} | 1.00 | |")
        for key in (k for k in st if k.startswith("r=") and "/" not in k):
            vs_plain, vs_r0 = st[f"{key} / plain"], st[f"{key} / r=0"]
            print(f"| supernet {key} | {st[key]:.1f} | {vs_plain:.2f} | {vs_r0:.2f} |")
        n = len(batches)
        print(
            f"\nselection agreement, f=0.25 vs full batch (r=1, {n} steps): {st['agreement']:.0%}"
        )
        print(f"\n| forward, eval, batch {args.batch} | ms | vs full |\n|---|---:|---:|")
        print(f"| supernet, full width | {fw['full']:.1f} | 1.00 |")
        pct = f"{fw['half_flops_ratio']:.0%}"
        for key, label in (
            ("half", f"supernet, {pct} FLOPs width (generated code)"),
            ("half_interpreter", f"supernet, {pct} FLOPs width (fx.Interpreter)"),
            ("half_plain", f"plain slim model, {pct} FLOPs width"),
        ):
            print(f"| {label} | {fw[key]:.1f} | {fw[key + ' / full']:.2f} |")
        print(
            f"\npeak tensor memory of training (torch profiler, 3 steps): r=0 {mem[0]:.0f} MiB, "
            f"r=1 {mem[1]:.0f} MiB, ratio {mem[1] / max(mem[0], 1e-9):.2f}"
        )


def shapes_main(args) -> None:
    """Distinct convolution shapes of a min-min run (r=1, f=0.25), sliced and masked, each
    from the same freshly built model, on digits at 16x16."""
    from supernet_cuda import conv_shapes

    batch, size = args.batch or 8, 16
    train = load_splits("digits", (1, 3, size, size), seed=0).train
    n = len(train) // batch
    batches = [take(train, torch.arange(i * batch, (i + 1) * batch)) for i in range(n)]
    print(f"distinct convolution shapes in {args.shapes} min-min steps (r=1, f=0.25, a new "
          f"width every step, batch {batch}, digits at {size}x{size}, CPU):\n")  # fmt: skip
    print("| model | convolutions | sliced: forward / backward | masked: forward / backward |")
    print("|---|---:|---:|---:|")
    found = {}
    for name in args.models.split(","):
        counts = {
            e: conv_shapes(_program(name), e, args.shapes, batches) for e in ("sliced", "masked")
        }
        program = _program(name)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in program.gm.modules())
        found[name] = {"convolutions": convs, **counts}
        s, m = counts["sliced"], counts["masked"]
        print(f"| {name} | {convs} | {s['forward']} / {s['backward']} | "
              f"{m['forward']} / {m['backward']} |", flush=True)  # fmt: skip
        if min(s["trained"], m["trained"]) < args.shapes:
            print(f"(steps that trained: sliced {s['trained']}, masked {m['trained']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=2)


def protocol_main(args) -> None:
    """Issue 15's protocol on one device (a GPU; a CPU for the smoke test); a table per model
    and the targets."""
    from supernet_cuda import cuda_costs

    device = torch.device(args.device)
    batch, steps, warmup = args.batch or 128, args.steps or 100, args.warmup or 500
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {where}, batch {batch}, 32x32, {warmup} warm-up steps "
          f"(fresh widths), {steps} timed steps, synchronised")  # fmt: skip
    results = []
    for name in args.models.split(","):
        r = cuda_costs(name, batch, warmup, steps, device, args.execution, args.scoring_widths)
        results.append(r)
        if args.json:  # after every model: a run stopped later keeps what it measured
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        print(f"\n### {name}\n\n| step | ms | vs plain full model |\n|---|---:|---:|")
        for key in (k for k in r if isinstance(r[k], float) and f"{k} / plain" in r):
            print(f"| {key} ({r.get(f'{key} execution', 'plain')}) | {r[key]:.2f} | "
                  f"{r[f'{key} / plain']:.2f} |")  # fmt: skip
        print(f"\nr=1 f=0.25 / r=0: {r['r=1 f=0.25 / r=0']:.2f} (fp32), "
              f"{r['r=1 f=0.25 bf16+cl / r=0']:.2f} (bf16 + channels-last)")  # fmt: skip
        print(f"candidates probed in one forward, chosen on the device, against one forward "
              f"each and the host choosing: r=1 f=0.25 {r['r=1 f=0.25 batched / each']:.2f}, "
              f"r=1 f=1.0 {r['r=1 f=1.0 batched / each']:.2f}")  # fmt: skip
        for label in ("fp32", "bf16+cl"):
            print(f"scoring a 50%-FLOPs width ({label}): {r[f'scoring {label} ms']:.1f} ms, the "
                  f"slimmed model {r[f'slim eval {label} ms']:.1f} ms, ratio "
                  f"{r[f'scoring {label} / slim eval']:.2f}")  # fmt: skip
        print(f"\n| target ({name}, batch {batch}) | measured | |\n|---|---:|---|")
        for what, value, limit in (
            ("min-min r=0 step <= 1.5x the plain full model's", r["r=0 f=1.0 / plain"], 1.5),
            ("r=1 f=0.25 <= 1.3x r=0", r["r=1 f=0.25 / r=0"], 1.3),
            ("scoring <= 2x the slimmed model's eval", r["scoring fp32 / slim eval"], 2.0),
        ):
            print(f"| {what} | {value:.2f} | {'met' if value <= limit else 'missed'} |", flush=True)


if __name__ == "__main__":
    main()
