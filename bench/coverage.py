"""How much of each zoo model widthc can search: a Markdown table for BENCHMARKS.md.

    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py [MODEL ...] > coverage.md
    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py --foreign [SPEC ...]
    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py --timm-sample | --timm-variants
    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py --slim-to 0.5 SPEC ...
    OMP_NUM_THREADS=1 .venv/bin/python bench/coverage.py --heads SPEC ...

`--foreign`: the models nobody here wrote (tests/foreign.py: transformers, one small model per
timm module and one more architecture per module, torchvision segmentation, video and detection,
segmentation_models_pytorch, diffusers, ultralytics), each verified / refused / limited, per
model and per family with the searchable channel share. `--timm-sample` and `--timm-variants`
print the two timm rules' lists from the installed timm. `--slim-to SHARE`: the smallest FLOPs
each model's space reaches, and a uniform width at SHARE of its FLOPs slimmed and verified.
`--heads`: per transformer, the searchable share with and without the network's outputs and
its head groups.

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
from pathlib import Path

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


def _timm_sizes(module: str) -> list[tuple[int, str]]:
    """(parameters, name) of every model of a timm module that builds (on the meta device: no
    memory), the fewest first, by name on a tie."""
    import timm

    sizes = []
    for name in timm.list_models(module=module):
        try:
            with torch.device("meta"):
                n = sum(p.numel() for p in timm.create_model(name).parameters())
        except Exception:  # noqa: BLE001, S112 - a model that does not build is no candidate
            continue
        sizes.append((n, name))
    return sorted(sizes)


def timm_sample(max_params: int = 30_000_000, variants: bool = False) -> list[str]:
    """Of each timm module, the model with the fewest parameters where that is at most
    `max_params`: tests/foreign.py's TIMM_SAMPLE. `variants`: instead, the smallest model of
    another architecture of the module (its name's leading letters differ from the smallest
    model's: `mobileone_s1` beside `cpubone_nano`), also at most `max_params`: TIMM_VARIANTS."""
    import re

    import timm

    def arch(name: str) -> str:
        return re.match(r"[a-z]*", name).group(0)

    out = []
    for module in timm.list_modules():
        sizes = _timm_sizes(module)
        if variants and sizes:
            sizes = [(n, m) for n, m in sizes[1:] if arch(m) != arch(sizes[0][1])]
        if sizes and sizes[0][0] <= max_params:
            out.append(sizes[0][1])
    return sorted(out)


def foreign_sweep(specs: list[str]) -> None:
    """Per model and per family: verified / refused / limited (tests/foreign.py's states) and
    the searchable share of conv/linear output channels (a model that fails to compile: 0)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import foreign

    families: dict[str, Counter] = {}
    fractions: dict[str, list[float]] = {}
    print("| model | state | searchable conv/linear channels | s | detail |")
    print("|---|---|---:|---:|---|")
    for spec in specs:
        family = _family(spec)
        start = time.perf_counter()
        try:
            outcome = foreign.run(spec)
            state, detail, fraction = outcome.state, outcome.detail, outcome.searchable_fraction
        except ImportError as e:  # the family's package is not installed
            state, detail, fraction = "skipped", f"{type(e).__name__}: {e}", 0.0
        except Exception as e:  # noqa: BLE001 - a known limitation (foreign.LIMITS) or a bug
            state = "limited" if spec in foreign.LIMITS else "ERROR"
            detail, fraction = f"{type(e).__name__}: {e}", 0.0
        detail = " ".join(detail.split())[:160].replace("|", "/")
        families.setdefault(family, Counter())[state] += 1
        fractions.setdefault(family, []).append(fraction)
        seconds = time.perf_counter() - start
        print(f"| {spec} | {state} | {fraction:.0%} | {seconds:.1f} | {detail} |", flush=True)
    print()
    print(
        "| family | models | verified | refused | limited | mean searchable conv/linear channels |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for family, counts in families.items():
        mean = sum(fractions[family]) / len(fractions[family])
        errors = f" (+{counts['ERROR']} errors)" if counts["ERROR"] else ""
        errors += f" (+{counts['skipped']} not installed)" if counts["skipped"] else ""
        print(
            f"| {family} | {sum(counts.values())} | {counts['verified']} | {counts['refused']} "
            f"| {counts['limited']}{errors} | {mean:.0%} |"
        )


def slim_to(specs: list[str], share: float = 0.5) -> None:
    """Per model: the smallest FLOPs the space reaches (every group at its fewest bins), and a
    uniform width at `share` of the FLOPs slimmed and verified (equal to the reference or the
    supernet, FLOPs recounted, ONNX parity)."""
    from widthc.verify import verify

    print(f"| model | input | searchable conv/linear channels | smallest FLOPs | FLOPs at "
          f"{share:.0%} | checks | s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---:|")
    for spec in specs:
        start = time.perf_counter()
        torch.manual_seed(0)
        src = load_model(spec)
        program = widthc.compile(src.model, src.example_inputs)
        full = program.flops()
        least = program.flops(program.smallest()) / full
        if least > share:
            checks = f"not reachable: the smallest width keeps {least:.0%}"
            got = "-"
        else:
            choice = program.uniform(flops=share * full)
            checks = verify(program, choice, widthc.slim(program, choice)).summary()
            got = f"{program.flops(choice) / full:.1%}"
        shape = "x".join(str(s) for s in src.example_inputs[0].shape[1:])
        fraction = program.to_json()["searchable_channel_fraction"]
        seconds = time.perf_counter() - start
        print(f"| {spec} | {shape} | {fraction:.0%} | {least:.1%} | {got} | {checks} | "
              f"{seconds:.0f} |", flush=True)  # fmt: skip


def heads_row(spec: str) -> str:
    """One transformer: the searchable share of conv/linear channels, the same share without
    the groups that are the network's outputs (a 1,000- or 21,841-class classifier weighs
    heavily in a tiny model; a backbone's residual stream is its output), its head groups (searchable / all) and the most common other
    freeze reason."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import foreign

    torch.manual_seed(0)
    if spec.startswith("hf:"):
        make, inputs = foreign.source(spec)
        model = make().eval()
    else:
        src = load_model(spec)
        model, inputs = src.model, src.example_inputs
    program = widthc.compile(model, inputs)
    out = {g.id for g in program.groups if any(r.op == "output" for r in g.frozen)}
    kept = [g for g in program.groups if g.id not in out and g.producers]
    inner = sum(g.width for g in kept if g.searchable) / max(1, sum(g.width for g in kept))
    heads = [g for g in program.groups if g.unit > 1]
    share = program.to_json()["searchable_channel_fraction"]
    return (
        f"| {spec} | {share:.0%} | {inner:.0%} | {sum(g.searchable for g in heads)}/{len(heads)} "
        f"| {main_reason(program)} |"
    )


def _family(spec: str) -> str:
    import foreign

    source, name = spec.split(":", 1)
    if source == "torchvision":
        for kind in ("segmentation", "video", "detection"):
            if name in getattr(foreign, f"TORCHVISION_{kind.upper()}"):
                return f"torchvision {kind}"
    if source == "timm":
        return "timm variants" if name in foreign.TIMM_VARIANTS else "timm"
    return {"hf": "transformers", "smp": "segmentation_models_pytorch"}.get(source, source)


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if sys.argv[1:2] in (["--timm-sample"], ["--timm-variants"]):
        print("\n".join(timm_sample(variants=sys.argv[1] == "--timm-variants")))
        return
    if sys.argv[1:2] == ["--heads"]:
        print("| model | searchable conv/linear channels | without the network's outputs "
              "| head groups searchable | most common freeze reason (groups) |")  # fmt: skip
        print("|---|---:|---:|---:|---|")
        for spec in sys.argv[2:]:
            print(heads_row(spec), flush=True)
        return
    if sys.argv[1:2] == ["--slim-to"]:
        slim_to(sys.argv[3:], float(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--foreign"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import foreign

        foreign_sweep(sys.argv[2:] or foreign.specs())
        return
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
