"""The supernet's cost on an accelerator (issue 15's protocol), and the shapes a run presents.

`cuda_costs`: torchvision resnet18 / mobilenet_v2 (10 classes, 32x32, random data), one
`MinMinStep` + fused SGD per step and a new sampled width every step, exactly as training runs
it. Each configuration first runs `warmup` steps (>= 500 fresh widths: the steady state), then
`steps` steps are timed as one block between two `torch.cuda.synchronize()` calls (ms per
step: what a training run sees). The unit is one training step of the plain full model (the
model itself: forward, backward, fused SGD; warmed up for warmup/10 steps). Configurations:
min-min r=0, r=1 f=0.25, r=1 f=1 (auto execution: masked on CUDA; auto probes: the candidates
in one forward, chosen on the device), the same r=1 with one probe forward per candidate and
the host choosing (`each`: the step before stacking; warmup/10 steps, steps/2 timed), r=0 sliced (the execution
before masking: warmup/5 steps, steps/5 timed, not at its steady state), and r=0, r=1 f=0.25
and the plain step again under --amp bf16 --channels-last.
Scoring: `score_choice` of 50%-FLOPs candidates (5 calibration + 5 validation batches), each a
new width, against the slimmed model recalibrated and evaluated on the same batches (its
second run: warm kernels).

`conv_shapes`: the distinct convolution shapes (forward and backward) that a min-min run
presents, recorded by hooks on every convolution module; run on a CPU with small inputs (the
count depends on the channel counts and the two batch sizes, not on the spatial size).
"""

from __future__ import annotations

import copy
import time

import torch
import torchvision

import widthc
from widthc.evaluate import recalibrate, score_choice
from widthc.loop import optimizer
from widthc.precision import Precision
from widthc.train import MinMinStep, TrainConfig, cross_entropy

CLASSES = 10


class _Loop:
    """What MinMinStep reads from the loop that runs it."""

    def __init__(self, opt, precision: Precision):
        self.opt, self.precision, self.step, self.total_steps = opt, precision, 0, 10**9


def minmin_step(
    program, offset: int, fraction: float, execution: str, precision: Precision, lr: float = 0.01,
    probes: str = "auto",
):  # fmt: skip
    """step(x, y): one min-min training step (MinMinStep, then the fused SGD update)."""
    net = widthc.supernet(program, offset, execution=execution).to(precision.device).train()
    precision.module(net)
    cfg = TrainConfig(lr=lr, select_batch_fraction=fraction, probes=probes)
    opt, _ = optimizer(list(net.parameters()), cfg, 10**9)
    step = MinMinStep(net, net, cfg, cross_entropy())
    step.trainer = _Loop(opt, precision)
    step.sampler.manual_seed(0)

    def run(x, y) -> None:
        run.last = step(precision.inputs(x), y)
        precision.step(opt)
        opt.zero_grad(set_to_none=True)
        step.trainer.step += 1

    run.net = net
    return run


def plain_step(model: torch.nn.Module, precision: Precision):
    model = precision.module(model.to(precision.device).train())
    opt, _ = optimizer(list(model.parameters()), TrainConfig(lr=0.01), 10**9)

    def run(x, y) -> None:
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(model(precision.inputs(x)), y)
        precision.backward(loss)
        precision.step(opt)
        opt.zero_grad(set_to_none=True)

    return run


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _block_ms(fn, batches, n: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        fn(*batches[i % len(batches)])
    _sync(device)
    return (time.perf_counter() - t0) / n * 1e3


def cuda_costs(
    name: str, batch: int, warmup: int, steps: int, device, execution="auto", widths: int = 12
) -> dict:
    """ms per step of every configuration and their ratios (see the module docstring); the
    min-min configurations run with `execution` (auto: masked on CUDA), the "sliced" one
    sliced; scoring times `widths` widths after as many warm-up ones."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=CLASSES)
    program = widthc.compile(model, torch.randn(1, 3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch, 3, 32, 32, generator=gen).to(device),
         torch.randint(CLASSES, (batch,), generator=gen).to(device))
        for _ in range(8)
    ]  # fmt: skip
    fp32, bf16 = Precision("off", False, device), Precision("bf16", True, device)
    few = max(warmup // 10, 1)  # the plain model has one width; sliced r=0 is the slow "before"
    half = max(steps // 2, 1)
    configs = {  # name: (make the step, warm-up steps, timed steps)
        "plain": (lambda: plain_step(copy.deepcopy(program.gm), fp32), few, steps),
        "r=0 f=1.0": (lambda: minmin_step(program, 0, 1.0, execution, fp32), warmup, steps),
        "r=1 f=0.25": (lambda: minmin_step(program, 1, 0.25, execution, fp32), warmup, steps),
        "r=1 f=1.0": (lambda: minmin_step(program, 1, 1.0, execution, fp32), warmup, steps),
        "r=1 f=0.25 each": (  # masked: static shapes, warm after a few steps (gpu_check's time)
            lambda: minmin_step(program, 1, 0.25, execution, fp32, probes="each"),
            few,
            half,
        ),
        "r=1 f=1.0 each": (
            lambda: minmin_step(program, 1, 1.0, execution, fp32, probes="each"),
            few,
            half,
        ),
        "r=0 f=1.0 sliced": (
            lambda: minmin_step(program, 0, 1.0, "sliced", fp32),
            2 * few,
            max(steps // 5, 5),
        ),
        "plain bf16+cl": (lambda: plain_step(copy.deepcopy(program.gm), bf16), few, steps),
        "r=0 f=1.0 bf16+cl": (lambda: minmin_step(program, 0, 1.0, execution, bf16), warmup, steps),
        "r=1 f=0.25 bf16+cl": (
            lambda: minmin_step(program, 1, 0.25, execution, bf16),
            warmup,
            steps,
        ),
    }
    out = {"model": name, "batch": batch, "warmup": warmup, "steps": steps}
    for key, (make, n_warm, n) in configs.items():
        run = make()
        for i in range(n_warm):
            run(*batches[i % len(batches)])
        out[key] = _block_ms(run, batches, n, device)
        net = getattr(run, "net", None)
        if net is not None:
            out[f"{key} execution"] = net.mode()
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for key in configs:
        unit = out["plain bf16+cl"] if "bf16" in key else out["plain"]
        out[f"{key} / plain"] = out[key] / unit
    out["plain bf16+cl / plain fp32"] = out["plain bf16+cl"] / out["plain"]
    out["r=1 f=0.25 / r=0"] = out["r=1 f=0.25"] / out["r=0 f=1.0"]
    for f in ("0.25", "1.0"):  # candidates probed in one forward, chosen on the device
        out[f"r=1 f={f} batched / each"] = out[f"r=1 f={f}"] / out[f"r=1 f={f} each"]
    out["r=1 f=0.25 bf16+cl / r=0"] = out["r=1 f=0.25 bf16+cl"] / out["r=0 f=1.0 bf16+cl"]
    out.update(scoring_costs(program, batches, device, execution, widths))
    return out


def scoring_costs(program, batches, device, execution="auto", widths: int = 12) -> dict:
    """ms of scoring a 50%-FLOPs candidate (5 calibration + 5 validation batches) against the
    slimmed model doing the same, fp32 and bf16 + channels-last; each scoring a new width."""
    out = {}
    for label, precision in (
        ("fp32", Precision("off", False, device)),
        ("bf16+cl", Precision("bf16", True, device)),
    ):
        net = precision.module(widthc.supernet(program, execution=execution).to(device))
        calib = [x for x, _ in batches[:5]]
        val = batches[3:8]
        scores, plains = [], []
        for seed in range(2 * widths):
            choice = program.candidates(program.random(seed, flops=0.5 * program.flops()))[0]
            _sync(device)
            t0 = time.perf_counter()
            score_choice(net, choice, calib, val, precision=precision)
            _sync(device)
            t1 = time.perf_counter()
            small = precision.module(widthc.slim(program, choice).to(device))
            for _ in range(2):  # the second run: the slimmed model's kernels are warm
                _sync(device)
                t2 = time.perf_counter()
                with torch.no_grad(), precision.autocast():
                    recalibrate(small, [precision.inputs(x) for x in calib])
                    small.eval()
                    total = sum(
                        (small(precision.inputs(x)).argmax(-1) == y).float().mean() for x, y in val
                    )
                    float(total)
                _sync(device)
                t3 = time.perf_counter()
            if seed >= widths:  # the first `widths` scorings warm the caches
                scores.append((t1 - t0) * 1e3)
                plains.append((t3 - t2) * 1e3)
        out[f"scoring {label} ms"] = sum(scores) / len(scores)
        out[f"slim eval {label} ms"] = sum(plains) / len(plains)
        out[f"scoring {label} / slim eval"] = sum(scores) / sum(plains)
    return out


class ConvShapes:
    """Records the distinct shapes every convolution module runs at: (input, weight, stride,
    groups). A convolution's backward runs at the shapes of its forward, so the forwards run
    with autograd on are the backward's shapes."""

    def __init__(self, model: torch.nn.Module):
        self.forward, self.backward = set(), set()
        self.hooks = [
            m.register_forward_pre_hook(self._record)
            for m in model.modules()
            if isinstance(m, torch.nn.modules.conv._ConvNd)
        ]

    def _record(self, m, args) -> None:
        key = (tuple(args[0].shape), tuple(m.weight.shape), m.stride, m.groups)
        self.forward.add(key)
        if torch.is_grad_enabled():
            self.backward.add(key)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def conv_shapes(program, execution: str, steps: int, batches: list) -> dict:
    """Distinct convolution shapes of `steps` min-min steps (r=1, f=0.25, a new width each),
    and how many steps trained (a step whose probes are not finite trains nothing). Learning
    rate 1e-3: every step must train (at 0.01, mobilenet_v2 on batches of 8 diverged after
    about 120 steps, sliced and masked alike)."""
    run = minmin_step(program, 1, 0.25, execution, Precision(), lr=1e-3)
    shapes = ConvShapes(program.gm)
    trained = 0
    try:
        for i in range(steps):
            run(*batches[i % len(batches)])
            trained += torch.is_tensor(run.last["loss"])
    finally:
        shapes.remove()
    return {"forward": len(shapes.forward), "backward": len(shapes.backward), "trained": trained}
