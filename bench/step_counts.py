"""What one min-min step asks of an accelerator, counted on a CPU (issue 15): host reads that
would stop a GPU, operator launches, model forwards, and CPU step time, for candidates probed one
forward each with the host choosing (`--probes each`) against probed in one forward and chosen
on the device (`--probes batched`, widthc/stacked.py), both under masked execution.

- host reads (`Reads`): a torch dispatch mode marks every tensor computed from the supernet's
  parameters, buffers or the batch (what lives on the GPU in a CUDA run); a function mode and
  the dispatch mode count the reads of such tensors by the host: `item`, `float`/`int`/`bool`
  (`aten._local_scalar_dense`), `tolist`, `cpu`, `numpy`, and the operators whose output size
  depends on values (`nonzero`, `masked_select`, `unique`: CUDA synchronises inside them).
  `torch.cuda.set_sync_debug_mode` is CUDA-only; this count is its CPU-side stand-in.
- operator launches, two ways: the aten operators a dispatch mode sees below autograd and vmap
  (views left out; a composite operator counts once), and the torch profiler's kernel-like
  events (the lowest aten event on each path, views, allocations and no-op conversions left
  out: a convolution counts its kernel, not its wrappers; vmap's reshapes count nothing).
- forwards: calls of the supernet (one per probed candidate and one per trained width).
- CPU time: median ms per step, the configurations taking turns step by step (one thread).

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_counts.py [--models resnet18,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

import widthc
from widthc.loop import sgd
from widthc.precision import Precision
from widthc.train import MinMinStep, TrainConfig, cross_entropy

aten = torch.ops.aten
VALUE_SIZED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
               aten.unique_dim.default, aten.unique_consecutive.default}  # fmt: skip
READS = {"tolist", "cpu", "numpy"}
# profiler events that launch no kernel of their own: allocations (ALLOC: a kernel's children),
# views and composite views, no-op conversions; host scalars (SKIP: with everything below them)
ALLOC = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_"}
SKIP = {"aten::scalar_tensor", "aten::item", "aten::_local_scalar_dense"}
NO_KERNEL = ALLOC | {f"aten::{n}" for n in (
    "view", "reshape", "_reshape_alias", "_unsafe_view", "as_strided", "as_strided_", "flatten",
    "unflatten", "contiguous", "expand", "expand_as", "view_as", "movedim", "moveaxis", "squeeze",
    "unsqueeze", "split", "chunk", "unbind", "narrow", "t", "transpose", "permute", "select",
    "slice", "detach", "alias", "lift_fresh", "resolve_conj", "resolve_neg", "to", "type_as",
    "numpy_T", "split_with_sizes", "diagonal", "indices", "values", "real", "imag")}  # fmt: skip


class Reads(TorchDispatchMode):
    """Counts operators and host reads of device-resident tensors (see the module docstring)."""

    def __init__(self, seeds):
        super().__init__()
        self.device = WeakIdKeyDictionary()
        for t in seeds:
            self.device[t] = True
        self.ops, self.reads, self.where, self.views = 0, 0, [], set()
        self.functions = _FunctionReads(self)

    def __enter__(self):
        self.functions.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.functions.__exit__(*exc)

    def on_device(self, values) -> bool:
        return any(isinstance(t, torch.Tensor) and t in self.device for t in tree_leaves(values))

    def read(self, what: str) -> None:
        self.reads += 1
        frame = next(
            (f for f in reversed(traceback.extract_stack()) if "/widthc/" in f.filename), None
        )
        self.where.append(f"{what} at {frame.filename.split('/widthc/')[-1]}:{frame.lineno}"
                          if frame else what)  # fmt: skip

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view:
            self.views.add(func._schema.name)  # "aten::view": no kernel
        else:
            self.ops += 1
        if self.on_device((args, kwargs)):
            if func in (aten._local_scalar_dense.default, *VALUE_SIZED):
                self.read(str(func))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.device[t] = True
        return out


class _FunctionReads(TorchFunctionMode):
    def __init__(self, reads: Reads):
        super().__init__()
        self.counter = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS and args and self.counter.on_device(args[0]):
            self.counter.read(name)
        return func(*args, **(kwargs or {}))


class _Loop:
    def __init__(self, opt):
        self.opt, self.precision, self.step, self.total_steps = opt, Precision(), 0, 10**9


def _run(program, probes: str, offset: int, fraction: float):
    net = widthc.supernet(program, offset, execution="masked").train()
    cfg = TrainConfig(lr=0.01, select_batch_fraction=fraction, probes=probes)
    step = MinMinStep(net, net, cfg, cross_entropy())
    opt = sgd(list(net.parameters()), cfg.lr, cfg.momentum, cfg.weight_decay)
    step.trainer = _Loop(opt)
    step.sampler.manual_seed(0)
    forwards = [0]
    net.register_forward_pre_hook(lambda m, a: forwards.__setitem__(0, forwards[0] + 1))

    def one(x, y):
        record = step(x, y)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step.trainer.step += 1
        return record

    one.net, one.forwards = net, forwards
    return one


def counts(program, batches, probes: str, offset: int, fraction: float) -> dict:
    """Per step, averaged over the batches after one warm-up step: host reads (and where),
    operators, profiler leaf events, supernet forwards."""
    run = _run(program, probes, offset, fraction)
    run(*batches[0])
    seeds = [*run.net.parameters(), *run.net.buffers()]
    reads = Reads(seeds)
    f0 = run.forwards[0]
    with reads:
        for x, y in batches[1:]:
            reads.device[x] = reads.device[y] = True
            run(x, y)
    n = len(batches) - 1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches[1:]:
            run(x, y)
    no_kernel = NO_KERNEL | {f"{v}_" for v in reads.views} | reads.views
    launches = sum(_kernels(e, no_kernel) for e in prof.events() if e.cpu_parent is None)
    return {
        "host reads": reads.reads / n,
        "read at": sorted(set(reads.where)),
        "operators": reads.ops / n,
        "profiler kernel-like ops": launches / n,
        "forwards": (run.forwards[0] - f0) / (2 * n),
    }


def _kernels(event, no_kernel: set) -> int:
    """Kernel-like operators under a profiler event: an aten event counts once when nothing
    below it but allocations counts (a convolution's own kernel, not its wrappers) and it is
    not in `no_kernel` (views, allocations, no-op conversions)."""
    if event.name in SKIP:
        return 0
    below = sum(_kernels(c, no_kernel) for c in event.cpu_children if c.name not in ALLOC)
    if below or not event.name.startswith("aten::"):
        return below
    return int(event.name not in no_kernel)


def times(program, batches, configs, warmup: int) -> dict:
    """Median ms per step of each configuration, taking turns step by step."""
    runs = {k: _run(program, *v) for k, v in configs.items()}
    taken: dict = {k: [] for k in runs}
    keys = list(runs)
    for i, (x, y) in enumerate(batches):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            t = time.perf_counter()
            runs[key](x, y)
            if i >= warmup:
                taken[key].append(time.perf_counter() - t)
    out = {f"{k} ms": 1e3 * statistics.median(v) for k, v in taken.items()}
    base = taken[keys[0]]
    for key in keys[1:]:
        out[f"{key} / {keys[0]}"] = statistics.median(a / b for a, b in zip(taken[key], base))
    return out


def main() -> None:
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--count-steps", type=int, default=4)
    p.add_argument("--steps", type=int, default=15, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    configs = {
        "r=1 f=0.25 each": ("each", 1, 0.25),
        "r=1 f=0.25 batched": ("batched", 1, 0.25),
        "r=1 f=1.0 each": ("each", 1, 1.0),
        "r=1 f=1.0 batched": ("batched", 1, 1.0),
    }
    results = {}
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), batch {args.batch}"
    )
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=10)
        program = widthc.compile(model, torch.randn(1, 3, 32, 32))
        gen = torch.Generator().manual_seed(0)
        batches = [
            (torch.randn(args.batch, 3, 32, 32, generator=gen),
             torch.randint(10, (args.batch,), generator=gen))
            for _ in range(max(args.count_steps, args.steps + args.warmup) + 1)
        ]  # fmt: skip
        found = {"model": name}
        for key, config in configs.items():
            found[key] = counts(program, batches[: args.count_steps + 1], *config)
            print(name, key, json.dumps(found[key]))
        for f in ("0.25", "1.0"):
            pair = {k: v for k, v in configs.items() if f"f={f} " in k}
            found.update(times(program, batches[: args.steps + args.warmup], pair, args.warmup))
        print(name, json.dumps({k: v for k, v in found.items() if "ms" in k or "/" in k}))
        results[name] = found
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
