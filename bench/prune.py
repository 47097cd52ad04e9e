"""The Torch-Pruning baselines of bench/quality.py (issue 10): what users pick instead of a
width search.

Per seed: the full model, built under the seed exactly as widthc builds it, is trained with
the benchmark's recipe (`bench/plain.py`). For each criterion (global magnitude, global
Taylor) and budget, a copy is pruned by Torch-Pruning to the largest width whose FLOPs,
counted by widthc (`widthc.compile(pruned, example).flops()`), meet the budget: the global
pruning ratio is found by bisection. Then

- **scratch**: the same channels (Torch-Pruning's pruning history, replayed) are removed from
  a freshly initialised copy (the seed's initial weights, the ones widthc's retraining starts
  from) and that model is trained with the recipe;
- **finetune**: the pruned trained model is trained again with the same recipe (same epochs).

Test accuracy after the recipe's batch-norm recalibration, as for every widthc row.
"""

from __future__ import annotations

import copy
import time

import torch

import widthc

CRITERIA = ("magnitude", "taylor")
BISECTION_STEPS = 14


def importance(criterion: str):
    import torch_pruning as tp

    if criterion == "magnitude":
        return tp.importance.MagnitudeImportance(p=2)
    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    raise ValueError(f"unknown criterion {criterion}")


def pruned(model, example, criterion: str, ratio: float, grad_batches: list):
    """A pruned copy of `model` at the global pruning `ratio`, and Torch-Pruning's history of
    the removed channels. Taylor importance reads gradients of the loss on `grad_batches`."""
    import torch_pruning as tp

    net = copy.deepcopy(model).eval()
    pruner = tp.pruner.MetaPruner(
        net, example, importance=importance(criterion), global_pruning=True,
        pruning_ratio=ratio, ignored_layers=[_classifier(net)],
    )  # fmt: skip
    if criterion == "taylor":
        net.zero_grad()
        for x, y in grad_batches:  # eval mode: batch-norm statistics stay as trained
            torch.nn.functional.cross_entropy(net(x), y).backward()
    pruner.step()
    net.zero_grad(set_to_none=True)
    return net, pruner.DG.pruning_history()


def to_budget(model, example, criterion: str, budget: float, grad_batches: list):
    """The pruned copy with the smallest global ratio whose widthc-counted FLOPs meet `budget`
    (bisection), its ratio, FLOPs and pruning history."""
    lo, hi = 0.0, 1.0  # lo misses the budget, hi meets it (hi = 1 prunes all it may)
    best = None
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        net, history = pruned(model, example, criterion, mid, grad_batches)
        flops = flops_of(net, example)
        if flops <= budget:
            hi, best = mid, (net, mid, flops, history)
        else:
            lo = mid
    if best is None:
        net, history = pruned(model, example, criterion, hi, grad_batches)
        best = (net, hi, flops_of(net, example), history)
    if best[2] > budget:
        raise RuntimeError(f"Torch-Pruning cannot reach {budget:.0f} FLOPs ({best[2]:.0f})")
    return best


def flops_of(model, example) -> float:
    return widthc.compile(model, example).flops()


def replayed(fresh, example, history):
    """`fresh` with the channels of `history` removed (Torch-Pruning's own replay)."""
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(fresh, example_inputs=example)
    dg.load_pruning_history(history)
    return fresh


def run_seed(model_path: str, data: str, seed: int, recipe, budgets: dict, folder) -> dict:
    """Every Torch-Pruning row of one seed: {method: {budget text: result}}, plus the full
    model's own test accuracy."""
    import plain

    ctx = plain.context(model_path, data, seed, recipe, folder)
    example = tuple(ctx.model_source.example_inputs)
    t0 = time.perf_counter()
    full = plain.train(ctx, ctx.source().model).cpu().eval()
    out = {"full": {"test": plain.accuracy(ctx, full, "test"), "val": plain.accuracy(ctx, full, "val"),
                    "flops": flops_of(full, example), "seconds": time.perf_counter() - t0}}  # fmt: skip
    grad = grad_batches(ctx, recipe.calib_batches)
    for criterion in CRITERIA:
        for text, budget in budgets.items():
            t0 = time.perf_counter()
            net, ratio, flops, history = to_budget(full, example, criterion, budget, grad)
            search_s = time.perf_counter() - t0
            scratch = replayed(ctx.source().model.eval(), example, history)
            if flops_of(scratch, example) != flops:
                raise RuntimeError("the replayed pruning differs from the pruned model")
            for mode, start in (("scratch", scratch), ("finetune", net)):
                t1 = time.perf_counter()
                trained = plain.train(ctx, start).cpu().eval()
                out.setdefault(f"tp-{criterion}-{mode}", {})[text] = {
                    "test": plain.accuracy(ctx, trained, "test"),
                    "val": plain.accuracy(ctx, trained, "val"), "flops": flops,
                    "budget": budget, "ratio": ratio,
                    "seconds": round(search_s + time.perf_counter() - t1, 1),
                }  # fmt: skip
    return out


def grad_batches(ctx, count: int) -> list:
    """The first `count` training batches of the run (Taylor importance reads their loss)."""
    from widthc.evaluate import batch

    n = ctx.config.train.batch_size
    return [batch(ctx.splits.train, torch.arange(i * n, (i + 1) * n)) for i in range(count)]


def _classifier(net) -> torch.nn.Module:
    """The last Linear of the model: its outputs are the classes (never pruned)."""
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
