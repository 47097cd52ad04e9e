"""How much of each zoo model widthc can search: a Markdown table for BENCHMARKS.md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py [MODEL ...] > coverage.md

For every torchvision classification model (at its weights' crop size) and a sample of timm
models (at their default input size): channel groups, searchable groups, the fraction of
conv/linear output channels in searchable groups, FLOPs (multiply-accumulates), and the most
common reason among the frozen groups other than the network's output, and the most common op
the registry does not know (a barrier: opaque leaf modules, unregistered functions).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import Counter

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

import widthc  # noqa: E402
from widthc import ops  # noqa: E402
from widthc.frontends.models import load_model  # noqa: E402
from widthc.ir import TensorMeta  # noqa: E402
from widthc.space import human  # noqa: E402
from widthc.trace import VALUE  # noqa: E402

# the timm sample of tests/test_zoo_sweep.py
TIMM = [
    "mobilevit_xxs", "tf_efficientnet_lite0", "dm_nfnet_f0", "convnext_nano",
    "vit_tiny_patch16_224", "ghostnet_100", "resnet50d", "efficientnet_b0",
    "mobilenetv3_large_100", "regnetx_002", "deit_tiny_patch16_224", "mixer_b16_224",
    "hrnet_w18_small", "dla34", "rexnet_100", "mobilevitv2_050", "levit_128s", "poolformer_s12",
    "cspdarknet53", "res2net50_14w_8s", "lcnet_050", "resnest14d", "edgenext_xx_small",
    "repvgg_a0", "efficientformer_l1", "xception41", "coatnet_0_rw_224", "fastvit_t8",
    "swin_tiny_patch4_window7_224",
]  # fmt: skip


def main_reason(program) -> str:
    """The most common first reason of frozen groups, the network's outputs left out."""
    whys = Counter(
        g.frozen[0].why for g in program.groups if g.frozen and g.frozen[0].op != "output"
    )
    if not whys:
        return ""
    why, count = whys.most_common(1)[0]
    return f"{why} ({count})"


def _makes_tensor(node) -> bool:
    """Asserts and size arithmetic touch no channels: only tensor-valued nodes count."""
    return any(isinstance(v, TensorMeta) for v in tree_flatten(node.meta.get(VALUE))[0])


def unknown_ops(program) -> str:
    """The most common op without a registry entry (a barrier), and how many nodes call it."""
    modules = dict(program.gm.named_modules())
    names = Counter(
        ops.op_name(n, modules)
        for n in program.gm.graph.nodes
        if n.op in ("call_module", "call_function", "call_method")
        and ops.lookup(n, modules) is None
        and _makes_tensor(n)
    )
    if not names:
        return ""
    name, count = names.most_common(1)[0]
    more = f", +{len(names) - 1} other" if len(names) > 1 else ""
    return f"{name} ({count}{more})"


def row(spec: str) -> str:
    src = load_model(spec)
    start = time.perf_counter()
    program = widthc.compile(src.model, src.example_inputs)
    seconds = time.perf_counter() - start
    data = program.to_json()
    shape = "x".join(str(s) for s in src.example_inputs[0].shape[1:])
    return (
        f"| {spec} | {shape} | {len(program.groups)} | {len(program.searchable)} | "
        f"{data['searchable_channel_fraction']:.0%} | {human(program.flops())} | "
        f"{seconds:.2f} | {main_reason(program)} | {unknown_ops(program)} |"
    )


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if len(sys.argv) > 1:
        specs = sys.argv[1:]
    else:
        import torchvision

        specs = [f"torchvision:{n}" for n in torchvision.models.list_models(torchvision.models)]
        specs += [f"timm:{n}" for n in TIMM]
    print(
        "| model | input | groups | searchable | searchable conv/linear channels | FLOPs "
        "| compile s | most common freeze reason (groups) | unknown ops (nodes) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for spec in specs:
        print(row(spec), flush=True)


if __name__ == "__main__":
    main()
