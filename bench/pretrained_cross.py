"""Why widthc-pretrained loses to Torch-Pruning magnitude pruning (issue 20): the widths, or the
channels kept? Both start from the same trained full model; they differ in two things:

- **the widths**: widthc's are searched on its supernet, within its bins; magnitude pruning's
  come from one global threshold on its normalised group importance;
- **the channels kept** at a width: widthc keeps the left-most channels of each group after
  sorting them by `--order-by` (l2: the norm of the producers' weights); magnitude pruning
  keeps the channels of largest importance over every layer of its dependency group
  (producers' outputs, consumers' inputs, batch-norm |gamma|, squared, averaged).

Per seed and budget, every pairing of the two widths with the two channel orders is
fine-tuned alike from the trained weights (`bench/plain.py`: the recipe's epochs, seed and
data order: the Torch-Pruning fine-tune's schedule), on the model sliced by widthc at one
channel per bin (so any width can be set). Magnitude pruning's own pairing is checked to
compute what Torch-Pruning's pruned model computes (the same function, its channels in
another order), and Torch-Pruning's own pruned modules (magnitude, Taylor) are fine-tuned in
the same run: the sliced copy against its original is the noise floor of a fine-tune (the
same function, trained alike, floating-point sums in another order).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/pretrained_cross.py --data mnist1d
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/pretrained_cross.py --data mnist1d \
        --lr 0.01 --pairs magnitude/torch-pruning,taylor/torch-pruning   # another fine-tune lr
    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrained_cross.py --table [--lr 0.01]

widthc's widths are the searched ones of the stored widthc-pretrained runs
(bench/results/quality/<data>/widthc-pretrained-s<seed>.json); rows are written as they come
to bench/results/pretrained/cross-<data>.json (a row there is not measured again). The tables
add the stored product runs at the same rate (quality, or levers/lr-<lr>: `bench/quality.py
--variant lr-0.01`) and the quality table's Torch-Pruning rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses
import json
import time
from pathlib import Path

import plain
import pretrained
import prune
import torch

import widthc
from widthc.ir import WidthChoice
from widthc.passes import order
from widthc.verify import relative_error

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = ("widthc", "magnitude")
ORDERS = ("l2", "magnitude")
# every pairing, and Torch-Pruning's own pruned modules (their channels in the model's order)
OWN = [("magnitude", "torch-pruning"), ("taylor", "torch-pruning")]
PAIRS = [(w, o) for w in WIDTHS for o in ORDERS] + OWN
MATCH_TOLERANCE = 1e-5  # the slice against Torch-Pruning's own pruned model, float32


def magnitude_scores(program, model) -> dict[int, torch.Tensor]:
    """Torch-Pruning's magnitude importance (p=2, its defaults) of every channel of each
    searchable group: the pruning group of the group's first producer, over its channels."""
    import torch_pruning as tp

    example = tuple(program.example_inputs)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    score = prune.importance("magnitude")
    out = {}
    for g in program.searchable:
        layer = model.get_submodule(g.producers[0])
        fn = graph.get_pruner_of_module(layer).prune_out_channels
        group = graph.get_pruning_group(layer, fn, idxs=list(range(g.block_size)))
        out[g.id] = score(group).double().cpu()
    return out


def magnitude_ordered(program, model):
    """`program` with its searchable groups' channels sorted by Torch-Pruning's magnitude
    importance of `model` (the program's model), one channel per bin."""
    gm = order.permuted(program, order.orders_of(magnitude_scores(program, model)))
    return one_channel_bins(program.with_model(gm))


def one_channel_bins(program):
    """The same program with one channel per bin: any width can be set."""
    return program.rebin(program.beta, align=1, uniform=max(g.block_size for g in program.groups))


def pruned_widths(program, model, budget: float, batches: list, criterion: str = "magnitude"):
    """Channels per searchable group of `program` that Torch-Pruning (`criterion`; Taylor reads
    `batches`) keeps of `model` at `budget` (bench/prune.py's bisection), and its pruned model."""
    example = tuple(program.example_inputs)
    net, _, _, _ = prune.to_budget(model, example, criterion, budget, batches)
    return {
        g.id: net.get_submodule(g.producers[0]).weight.shape[0] for g in program.searchable
    }, net


def seed_rows(
    model: str,
    data: str,
    seed: int,
    recipe,
    budgets: dict,
    searched: dict,
    done=(),
    lr=None,
    pairs=PAIRS,
):
    """Each fine-tuned pairing of one seed at each budget, as it comes (none of `done`):
    `searched` holds widthc's widths, {budget text: {group id: channels}}. `lr`: the
    fine-tuning's learning rate instead of the recipe's (the full model's stays the recipe's);
    `pairs`: the (widths, order) cells to fine-tune."""
    wrapper, full = pretrained.trained_model(model, data, seed, recipe)
    lr = lr or recipe.lr
    folder = pretrained.TRAINED / data / f"s{seed}" / "cross"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = plain.context(wrapper, data, seed, dataclasses.replace(recipe, lr=lr), folder)
    trained = ctx.source().model.eval()
    ordered = {"l2": one_channel_bins(ctx.ordering.program),
               "magnitude": magnitude_ordered(ctx.program, trained)}  # fmt: skip
    x = tuple(ctx.model_source.example_inputs)
    grad = prune.grad_batches(ctx, recipe.calib_batches)
    for text, budget in budgets.items():
        kept, pruned = pruned_widths(ctx.program, trained, budget, grad)
        error = relative_error(
            widthc.slim(ordered["magnitude"], WidthChoice.of(kept))(*x), pruned(*x)
        )
        if not error <= MATCH_TOLERANCE:
            raise RuntimeError(f"the slice differs from Torch-Pruning's model ({error:.1e})")
        widths = {"widthc": searched[text], "magnitude": kept}
        own = {"magnitude": pruned}
        for w, o in pairs:
            if (seed, text, w, o, lr) in done:
                continue
            t0 = time.perf_counter()
            if w not in widths:  # taylor: its own module only
                widths[w], own[w] = pruned_widths(ctx.program, trained, budget, grad, w)
            choice = WidthChoice.of(widths[w])
            start = own[w] if o == "torch-pruning" else widthc.slim(ordered[o], choice)
            flops = prune.flops_of(start, x)
            net = plain.train(ctx, start)
            yield {
                "seed": seed, "budget": text, "widths": w, "order": o, "lr": lr,
                "channels": {str(g): c for g, c in widths[w].items()},
                "flops": flops,
                "val": plain.accuracy(ctx, net, "val"), "test": plain.accuracy(ctx, net, "test"),
                "seconds": round(time.perf_counter() - t0, 1), "trained_full": full,
            }  # fmt: skip


REFERENCES = {"magnitude, sliced": ("magnitude", "magnitude"), "tp-magnitude": OWN[0],
              "tp-taylor": OWN[1]}  # fmt: skip


def table(rows: list[dict], split: str, stored: dict | None = None) -> str:
    """Mean ± std over seeds of each pairing per budget, and the paired difference per seed
    against each of REFERENCES (magnitude pruning's widths and order through widthc's slicing;
    Torch-Pruning's own modules, magnitude and Taylor, fine-tuned in the same run). `stored`:
    rows of earlier runs, {(widths, label): {seed: {budget: row}}}, each a row of its own."""
    head = " | ".join(f"Δ vs {name}" for name in REFERENCES)
    lines = [f"| budget | widths | channels kept | seeds | {split} | {head} |",
             "|---|---|---|---:|---:|" + "---:|" * len(REFERENCES)]  # fmt: skip
    for text in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == text]
        cells = {(w, o): {r["seed"]: r[split] for r in at if (r["widths"], r["order"]) == (w, o)}
                 for w, o in PAIRS}  # fmt: skip
        for pair, runs in (stored or {}).items():
            cells[pair] = {s: v[text][split] for s, v in runs.items() if text in v}
        for pair, by_seed in cells.items():
            if not by_seed:  # a cell not measured (at this rate)
                continue
            deltas = []
            for ref in (cells[r] for r in REFERENCES.values()):
                diffs = [v - ref[s] for s, v in by_seed.items() if s in ref]
                deltas.append("-" if by_seed is ref else pretrained.percent(diffs))
            lines.append(f"| {text} | {pair[0]} | {pair[1]} | {len(by_seed)} | "
                         f"{pretrained.percent(list(by_seed.values()))} | {' | '.join(deltas)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    import quality

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist1d", choices=sorted(quality.DATASETS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--budgets", default=",".join(quality.BUDGETS))
    p.add_argument("--lr", type=float, help="fine-tune at this rate (default: the recipe's)")
    p.add_argument("--pairs", help="widths/order cells, comma-separated (default: all)")
    p.add_argument("--table", action="store_true", help="print the tables of the stored rows")
    a = p.parse_args()
    torch.set_num_threads(1)
    bench = quality.DATASETS[a.data]
    out = ROOT / "bench" / "results" / "pretrained" / f"cross-{a.data}.json"
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    lr = a.lr or bench.recipe.lr
    pairs = [tuple(c.split("/")) for c in a.pairs.split(",")] if a.pairs else PAIRS
    if unknown := [c for c in pairs if c not in PAIRS]:
        raise SystemExit(f"unknown cells {unknown}: choose among {PAIRS}")
    for r in rows:
        r.setdefault("lr", bench.recipe.lr)
    if not a.table:
        model = str(ROOT / bench.model)
        budgets = pretrained.budgets_of(model, a.budgets.split(","))
        results = ROOT / "bench" / "results" / "quality" / a.data
        for seed in [int(s) for s in a.seeds.split(",")]:
            run = json.loads((results / f"widthc-pretrained-s{seed}.json").read_text())
            searched = {t: {int(g): c for g, c in r["channels"].items()}
                        for t, r in run["rows"]["widthc-pretrained"].items()}  # fmt: skip
            done = {(r["seed"], r["budget"], r["widths"], r["order"], r["lr"]) for r in rows}
            for row in seed_rows(
                model, a.data, seed, bench.recipe, budgets, searched, done, lr, pairs
            ):
                print(json.dumps(row), flush=True)
                rows.append(row)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"data": a.data, "rows": rows}, indent=1))
    print(f"fine-tuning lr {lr}")
    for split in ("val", "test"):
        print(table([r for r in rows if r["lr"] == lr], split, stored_rows(a.data, lr, bench)))


def stored_rows(data: str, lr: float, bench) -> dict:
    """The quality runs at this rate: widthc-pretrained (the product: supernet, search, its
    fine-tuning) and the uniform width in it, and at the recipe's rate the quality table's
    Torch-Pruning fine-tuned."""
    results = ROOT / "bench" / "results"
    folder = results / "quality" / data
    if lr != bench.recipe.lr:
        folder = results / "levers" / f"lr-{lr:g}" / data
    named = {("widthc", "widthc-pretrained run"): "widthc-pretrained",
             ("uniform", "widthc-pretrained run"): "uniform pretrained",
             ("magnitude", "quality run"): "tp-magnitude-finetune",
             ("taylor", "quality run"): "tp-taylor-finetune"}  # fmt: skip
    out: dict = {}
    for path in sorted(folder.glob("*-s*.json")):
        run = json.loads(path.read_text())
        for pair, row in named.items():
            if row in run["rows"]:
                out.setdefault(pair, {})[run["seed"]] = run["rows"][row]
    return out


if __name__ == "__main__":
    main()
