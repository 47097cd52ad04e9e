"""Why a known-answer supernet scores the teacher's width below uniform (issue 16): what changes
the max-max score of a very narrow (4-channel) layer, measured on the stored default runs of
`bench/known_answer.py` (runs/bench/known/default/<task>-s<seed>, made by
`bench/known_answer.py --levers default`).

Per run:
- the oracle's and the uniform width's score per candidate (CafeNet offset) after batch-norm
  recalibration on `--calib-batches` (10) and on every training batch (62);
- the oracle's score with the narrow layer's width swept (the other layers at the oracle's);
- the narrow layer's left-most channels against its most important ones (|BN scale| times the
  norm of the next layer's input column);
- continued min-min training of the trained supernet (`--steps`, SGD lr 0.01, momentum 0.9,
  batch 64, probe every candidate, train the min-loss one) with the width drawn four ways:
  uniform per group (control); the narrow layer uniform over 1..8 bins and the others at the
  oracle's; the narrow layer exactly at the oracle's width and the others uniform; then the
  oracle's and the uniform width's score again.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_narrow.py --task bottleneck --seeds 0,1,2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys
from pathlib import Path

import numpy as np
import torch

from widthc import loop
from widthc.evaluate import MaxMax, batches
from widthc.ir import GroupWidth, WidthChoice

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "known"))
import known_answer as ka  # noqa: E402

LAWS = ("uniform", "narrow 1..8, others the oracle's", "narrow exactly the oracle's")


def scorer(ctx, net, n_batches: int | None = None) -> MaxMax:
    data, n = ctx.splits.train, ctx.config.train.batch_size
    calibration = ctx.calibration()
    if n_batches is not None:
        order = loop.epoch_order(len(data), ctx.config.seed, -1)
        calibration = [x for x, _ in batches(data, order, n, n_batches)]
    return MaxMax(net.eval(), calibration, ctx.validation(), ctx.score_metric, seed=0)


def narrow_group(oracle: np.ndarray, program) -> int:
    """The oracle's narrowest group, as a share of its bins."""
    return int(np.argmin(oracle / program.space.n_bins))


def draw(law: str, oracle: np.ndarray, g: int, n_bins: np.ndarray, gen) -> np.ndarray:
    w = np.minimum(
        (torch.rand(len(n_bins), generator=gen).numpy() * n_bins).astype(int) + 1, n_bins
    )
    if law == LAWS[1]:
        w = oracle.copy()
        w[g] = int(torch.randint(1, 9, (1,), generator=gen))
    elif law == LAWS[2]:
        w[g] = oracle[g]
    return w


def continued(ctx, law: str, oracle: np.ndarray, g: int, steps: int):
    """The run's supernet after `steps` more min-min steps with widths drawn by `law`."""
    net, program, loss = ctx.supernet(trained=True), ctx.program, ctx.loss
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    data = ctx.splits.train
    for _ in range(steps):
        x, y = data[torch.randint(len(data), (64,), generator=gen)]
        width = draw(law, oracle, g, program.space.n_bins, gen)
        cands = net.candidates(program.space.choice(width))
        net.train()
        with torch.no_grad(), net.probing():
            probe = []
            for c in cands:
                net.set_choice(c)
                probe.append(float(loss(net(x), y)))
        net.set_choice(cands[int(np.argmin(probe))])
        opt.zero_grad()
        loss(net(x), y).backward()
        opt.step()
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="bottleneck", help="an MLP task (not residual)")
    p.add_argument("--lever", default="default")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    for seed in map(int, args.seeds.split(",")):
        ctx = ka._context(ka.RUNS / args.lever / f"{args.task}-s{seed}")
        program = ctx.program
        target = ka.oracle_of(args.task, program)
        uniform = program.uniform(flops=ka.budget_of(args.task))
        oracle = program.space.array(target)
        g = narrow_group(oracle, program)
        net = ctx.supernet(trained=True)
        print(
            f"{args.task} s{seed} (narrow group {g}: {oracle[g]} of {program.space.n_bins[g]} bins)"
        )
        for n in (None, 62):
            sc = scorer(ctx, net, n)
            o, u = sc(target), sc(uniform)
            print(f"  calibration {n or ctx.config.search.calib_batches} batches: oracle "
                  f"{_c(o)}, uniform {_c(u)}")  # fmt: skip
        sc = scorer(ctx, net)
        sweep = []
        for k in (2, 4, 8, 16, 32):
            w = oracle.copy()
            w[g] = min(k, program.space.n_bins[g])
            sweep.append(f"{k}: {sc(program.space.choice(w)).value:.3f}")
        print(f"  oracle with the narrow group at k bins: {', '.join(sweep)}")
        print(f"  {_importance(net, target, g, sc)}")
        for law in LAWS:
            after = scorer(ctx, continued(ctx, law, oracle, g, args.steps))
            print(f"  +{args.steps} steps, {law}: oracle {_c(after(target))}, uniform "
                  f"{after(uniform).value:.3f}", flush=True)  # fmt: skip


def _importance(net, target: WidthChoice, g: int, sc: MaxMax) -> str:
    """The narrow group's left-most channels against its most important ones (an MLP task:
    the group is the output of the (g+1)-th linear layer and its batch norm)."""
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    importance = norms[g].weight.detach().abs() * linears[g + 1].weight.detach().norm(dim=0)
    k = target.as_dict()[g].k
    top = sorted(torch.argsort(importance, descending=True)[:k].tolist())
    widths = target.as_dict()
    widths[g] = GroupWidth(k, tuple(top))
    moved = WidthChoice.of(widths, binning=target.binning)
    return (f"most important {k} channels {top}: score {sc.candidate(moved):.3f} (left-most "
            f"{sc.candidate(net.candidates(target)[0]):.3f})")  # fmt: skip


def _c(score) -> str:
    return f"{score.value:.3f} (candidates {', '.join(f'{v:.3f}' for v in score.candidates)})"


if __name__ == "__main__":
    main()
