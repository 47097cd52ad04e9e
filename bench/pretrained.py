"""widthc from a trained model (issue 20), for bench/quality.py, and the measurements behind
`--pretrained`'s defaults.

Per seed the full model is trained with the benchmark's recipe (`bench/plain.py`: the same
model, seed and recipe as the full model Torch-Pruning prunes in bench/prune.py), its weights
saved, and a model file written whose model() loads them: how a user's trained model arrives.
Then, with the same total epochs after the trained model as Torch-Pruning fine-tuned (the
recipe's):

- **widthc-pretrained** (bench/quality.py runs it): `widthc slim MODEL --pretrained --epochs E`:
  channels sorted by importance, a supernet trained for a share of E, the search, each width
  (and the uniform one) fine-tuned for the rest;
- **uniform ordered finetune**: the uniform width of the ordered trained model, fine-tuned
  for E epochs: no supernet, no search (what ordering alone gives).

    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrained.py --importance --data mnist1d
        # each importance measure on the validation split: the ordered model's uniform width
        # at 25% and 50% FLOPs, batch norms recalibrated, as it is and fine-tuned briefly
    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrained.py --shares --data mnist1d
        # the supernet's share of --epochs, from the quality runs' variants (validation split)
    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrained.py --lr-scales --data mnist1d
        # the supernet's learning rate (--supernet-lr-scale), likewise

Trained models are cached under runs/bench/trained/<data>/s<seed>/ (git-ignored).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json
import time
from pathlib import Path

import plain
import torch
from mean_std import mean_std

import widthc
from widthc.evaluate import recalibrate
from widthc.passes.order import METHODS

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "runs" / "bench" / "trained"


def trained_model(model: str, data: str, seed: int, recipe: plain.Recipe) -> tuple[str, dict]:
    """A model file whose model() loads the full model trained under `seed` with `recipe`
    (trained once, then cached), and that model's accuracies."""
    folder = TRAINED / data / f"s{seed}"
    weights, info = folder / "weights.pt", folder / "full.json"
    path = folder / f"{Path(model).stem}_trained.py"
    if not (weights.exists() and info.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ctx = plain.context(model, data, seed, recipe, folder)
        net = plain.train(ctx, ctx.source().model).cpu().eval()
        torch.save(net.state_dict(), weights)
        full = {
            "test": plain.accuracy(ctx, net, "test"), "val": plain.accuracy(ctx, net, "val"),
            "seconds": round(time.perf_counter() - t0, 1), "recipe": recipe.__dict__,
        }  # fmt: skip
        info.write_text(json.dumps(full, indent=1))
    path.write_text(
        "import importlib.util\n\nimport torch\n\n"
        f"_spec = importlib.util.spec_from_file_location('_example', {str(Path(model).resolve())!r})\n"
        "_example = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_example)\n"
        "input_shape = _example.input_shape\n\n\n"
        "def model(num_classes=10):\n"
        "    net = _example.model(num_classes)\n"
        f"    net.load_state_dict(torch.load({str(weights)!r}, weights_only=True))\n"
        "    return net\n"
    )
    return str(path), json.loads(info.read_text())


def ordered_uniform(model: str, data: str, seed: int, recipe, budgets: dict, folder: Path) -> dict:
    """The uniform width of each budget on the ordered trained model (`model` loads it),
    fine-tuned with the recipe: {budget text: result}."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = plain.context(model, data, seed, recipe, folder)
    program = ctx.ordering.program
    out = {}
    for text, budget in budgets.items():
        t0 = time.perf_counter()
        choice = program.uniform(flops=budget)
        net = plain.train(ctx, widthc.slim(program, choice))
        out[text] = {
            "test": plain.accuracy(ctx, net, "test"), "val": plain.accuracy(ctx, net, "val"),
            "flops": program.flops(choice), "budget": budget,
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
    return out


def budgets_of(model: str, texts) -> dict[str, float]:
    """Each budget text in FLOPs per sample of the example model."""
    from widthc.frontends.models import load_model
    from widthc.space import parse_budget

    src = load_model(model)
    full = widthc.compile(src.model, src.example_inputs).flops()
    return {t: parse_budget(t, full) for t in texts}


# --- the measurements behind the defaults ----------------------------------------------------


KINDS = ("none", *METHODS)  # none: the trained model's own channel order


def importance(model, data, seeds, recipe, budgets: dict, epochs: int, done=()) -> list[dict]:
    """Per seed, importance (or none) and budget: the validation accuracy of the ordered
    trained model's uniform width, batch norms recalibrated, as it is and after `epochs` of
    fine-tuning. Rows already in `done` are kept, not measured again."""
    rows = list(done)
    have = {(r["seed"], r["method"]) for r in rows}
    for seed in seeds:
        wrapper, _ = trained_model(model, data, seed, recipe)
        folder = TRAINED / data / f"s{seed}" / "importance"
        folder.mkdir(parents=True, exist_ok=True)
        for method in KINDS:
            if (seed, method) in have:
                continue
            ctx = plain.context(wrapper, data, seed, recipe, folder)
            if method != "none":
                ctx.config = ctx.config.updated(order_by=method)
            program = ctx.program if method == "none" else ctx.ordering.program
            for text, budget in budgets.items():
                net = widthc.slim(program, program.uniform(flops=budget))
                with torch.no_grad():
                    recalibrate(net, ctx.calibration(), seed)
                as_is = plain.accuracy(ctx, net, "val")
                tuned = plain.accuracy(ctx, plain.train(ctx, net, epochs), "val")
                rows.append({"seed": seed, "method": method, "budget": text, "val": as_is,
                             "val_finetuned": tuned, "finetune_epochs": epochs})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def importance_table(rows: list[dict]) -> str:
    lines = [
        "| importance | 25% val, as is | 25% val, fine-tuned | 50% val, as is | 50% val, fine-tuned |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in KINDS:
        cells = []
        for text in ("25%", "50%"):
            sel = [r for r in rows if r["method"] == method and r["budget"] == text]
            cells += [
                percent([r["val"] for r in sel]),
                percent([r["val_finetuned"] for r in sel]),
            ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_table(folders: dict[str, Path]) -> str:
    """widthc-pretrained per supernet setting (the first of `folders`: the default), from the
    quality runs' JSON summaries: validation (what a setting is judged on) and test accuracy,
    the paired difference per seed against the default, and the supernet's validation
    accuracy at its largest width at the last epoch (how much of the trained model it kept)."""
    head = ["setting", "seeds"]
    head += [f"{b} {s}" for s in ("val", "test") for b in ("25%", "50%")]
    head += [f"{b} Δ {s} vs default" for s in ("val", "test") for b in ("25%", "50%")]
    lines = ["| " + " | ".join(head) + " | supernet val, largest |",
             "|---" + "|---:" * (len(head) - 1) + "|---:|"]  # fmt: skip
    runs = {name: _pretrained_runs(folder) for name, folder in folders.items()}
    default = next(iter(runs.values()))
    for name, by_seed in runs.items():
        if not by_seed:
            continue
        rows = [r["rows"]["widthc-pretrained"] for r in by_seed.values()]
        cells = [
            percent([r[b][k] for r in rows if b in r])
            for k in ("val", "test")
            for b in ("25%", "50%")
        ]
        for k in ("val", "test"):
            for b in ("25%", "50%"):
                diffs = [
                    r["rows"]["widthc-pretrained"][b][k] - default[s]["rows"]["widthc-pretrained"][b][k]
                    for s, r in by_seed.items() if s in default
                ]  # fmt: skip
                cells.append("-" if by_seed is default else percent(diffs))
        largest = [r["supernet"]["val_acc_largest"] for r in by_seed.values() if r.get("supernet")]
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + f" | {percent(largest)} |")
    return "\n".join(lines)


def _pretrained_runs(folder: Path) -> dict[int, dict]:
    """The widthc-pretrained summaries of a results folder, by seed."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("widthc-pretrained-s*.json"))]
    return {r["seed"]: r for r in runs}


def percent(values: list[float]) -> str:
    """Accuracies (fractions) as percent, mean ± std."""
    return mean_std(values, 100)


def main() -> None:
    import quality

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist1d", choices=sorted(quality.DATASETS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--importance", action="store_true")
    p.add_argument("--shares", action="store_true")
    p.add_argument("--lr-scales", action="store_true")
    p.add_argument("--finetune-epochs", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(1)
    bench = quality.DATASETS[a.data]
    model = str(ROOT / bench.model)
    if a.importance:
        out = ROOT / "bench" / "results" / "pretrained" / f"importance-{a.data}.json"
        done = json.loads(out.read_text())["rows"] if out.exists() else []
        budgets = budgets_of(model, quality.BUDGETS)
        seeds = [int(s) for s in a.seeds.split(",")]
        rows = importance(model, a.data, seeds, bench.recipe, budgets, a.finetune_epochs, done)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"data": a.data, "rows": rows}, indent=1))
        print(importance_table(rows))
    for flag, prefix in ((a.shares, "share-"), (a.lr_scales, "supernet-lr-")):
        if flag:
            levers = ROOT / "bench" / "results" / "levers"
            folders = {"default": ROOT / "bench" / "results" / "quality" / a.data}
            for v in sorted(quality.VARIANTS):
                if v.startswith(prefix):
                    folders[v] = levers / v / a.data
            print(settings_table(folders))


if __name__ == "__main__":
    main()
