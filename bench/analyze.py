"""Time `widthc.compile` against Torch-Pruning's dependency graph (issue 2's benchmark).

    OMP_NUM_THREADS=1 .venv/bin/python bench/analyze.py [--repeat 5] [--blocks 10,100,1000]

One thread, median of `--repeat` runs after one warm-up run. First resnet50 and mobilenet_v2
at 1x3x224x224; then synthetic residual networks (conv-bn-relu-conv-bn + skip, 16 channels at
8x8) of 10, 100 and 1,000 blocks, to show how the cost grows with the number of graph nodes.
Also printed, for context: a plain `symbolic_trace` + `ShapeProp` (a full forward pass), the
cost widthc avoids by computing shapes from the op registry's formulas. `--breakdown` also
prints the median time of each compile stage and of a compile without the cyclic GC.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import fx, nn  # noqa: E402
from torch.fx.passes.shape_prop import ShapeProp  # noqa: E402

import widthc  # noqa: E402


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: first-call caches (dispatcher, imports) are not what we measure
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_pruning_build(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    import torch_pruning as tp

    return lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)


def trace_and_shapeprop(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run():
        gm = fx.symbolic_trace(model)
        with torch.no_grad():
            ShapeProp(gm).propagate(x)
        return gm

    return run


class Block(nn.Module):
    """conv-bn-relu-conv-bn with an identity skip: one residual stream through every block."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


# the stages of widthc.compile, by the module attribute that program.py calls
STAGES = (
    ("trace", "widthc.trace", "trace_graph"),
    ("shapes", "widthc.trace", "propagate_shapes"),
    ("coupling", "widthc.program", "couple"),
    ("flops", "widthc.passes.flops", "flops_table"),
    ("params", "widthc.passes.flops", "params_table"),
    ("bins", "widthc.passes.bins", "sensitivity"),
)


def stage_breakdown(model: nn.Module, x: torch.Tensor, repeat: int) -> dict[str, float]:
    """Median seconds of each compile stage (wrapping the functions program.py calls), and of
    the whole compile with the cyclic garbage collector switched off."""
    spent: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    originals = []
    for name, module_name, attr in STAGES:
        module = sys.modules[module_name]
        fn = getattr(module, attr, None)
        if fn is None:
            continue
        originals.append((module, attr, fn))

        def timed(*a, _fn=fn, _name=name, **kw):
            start = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                spent[_name].append(time.perf_counter() - start)

        setattr(module, attr, timed)
    try:
        for _ in range(repeat):
            widthc.compile(model, (x,))
    finally:
        for module, attr, fn in originals:
            setattr(module, attr, fn)
    out = {name: statistics.median(t) for name, t in spent.items() if t}
    gc.disable()
    try:
        out["no-gc total"] = median_seconds(lambda: widthc.compile(model, (x,)), repeat)
    finally:
        gc.enable()
    return out


def residual_net(blocks: int, c: int = 16) -> nn.Module:
    stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))
    return nn.Sequential(stem, *[Block(c) for _ in range(blocks)], head).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--blocks", default="10,100,1000")
    parser.add_argument("--no-torchvision", action="store_true")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each compile stage (synthetic nets)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))  # deep graphs in Torch-Pruning
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeat}")

    if not args.no_torchvision:
        import torchvision

        print(
            f"\n{'model':<14}{'widthc ms':>11}{'TP ms':>9}{'widthc/TP':>11}"
            f"{'trace+ShapeProp ms':>20}{'nodes':>7}"
        )
        for name in ("resnet50", "mobilenet_v2"):
            model = torchvision.models.get_model(name, weights=None).eval()
            x = torch.randn(1, 3, 224, 224)
            ours = median_seconds(lambda m=model, x=x: widthc.compile(m, (x,)), args.repeat)
            tp_time = median_seconds(torch_pruning_build(model, x), args.repeat)
            plain = median_seconds(trace_and_shapeprop(model, x), args.repeat)
            nodes = len(widthc.compile(model, (x,)).gm.graph.nodes)
            print(
                f"{name:<14}{ours * 1e3:>11.1f}{tp_time * 1e3:>9.1f}{ours / tp_time:>11.2f}"
                f"{plain * 1e3:>20.1f}{nodes:>7}"
            )

    print(
        f"\n{'blocks':>7}{'nodes':>7}{'widthc ms':>11}{'us/node':>9}{'TP ms':>10}"
        f"{'TP us/node':>12}{'widthc/TP':>11}"
    )
    for blocks in (int(b) for b in args.blocks.split(",")):
        model = residual_net(blocks)
        x = torch.randn(1, 3, 8, 8)
        ours = median_seconds(lambda m=model, x=x: widthc.compile(m, (x,)), args.repeat)
        tp_time = median_seconds(torch_pruning_build(model, x), args.repeat)
        nodes = len(widthc.compile(model, (x,)).gm.graph.nodes)
        print(
            f"{blocks:>7}{nodes:>7}{ours * 1e3:>11.1f}{ours / nodes * 1e6:>9.1f}"
            f"{tp_time * 1e3:>10.1f}{tp_time / nodes * 1e6:>12.1f}{ours / tp_time:>11.2f}"
        )
        if args.breakdown:
            parts = stage_breakdown(model, x, args.repeat)
            print("        " + "  ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items()) + " (ms)")


if __name__ == "__main__":
    main()
