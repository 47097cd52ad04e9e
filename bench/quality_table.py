"""The tables of bench/quality.py, made from its JSON summaries (bench/results/quality/<data>/).

Per method and budget: the retrained test accuracy, mean ± sample standard deviation over
seeds (and how many), the per-seed difference to the uniform width of the same seed (paired:
both start from the same initial weights), the FLOPs reached as a share of the budget, and the
mean wall time of a run.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mean_std import mean_std

BUDGETS = ("25%", "50%")
ORDER = ["full", "widthc", "uniform", "fixed pattern", "random candidate", "uniform bins",
         "widthc finetune", "uniform finetune",
         "greedy search", "random search", "multi-stage", "tp-magnitude-scratch",
         "tp-magnitude-finetune", "tp-taylor-scratch", "tp-taylor-finetune",
         "widthc-pretrained", "uniform pretrained", "widthc-pretrained from supernet",
         "uniform pretrained from supernet", "uniform ordered finetune"]  # fmt: skip
NOTES = {
    "uniform": "retrained inside the widthc run",
    "greedy search": "on the widthc supernet: search + retraining only",
    "random search": "on the widthc supernet: search + retraining only",
    "multi-stage": "one run per budget",
    "widthc finetune": "widthc's widths retrained from the supernet's weights (--finetune)",
    "uniform finetune": "the uniform width, alike",
    "full": "the unpruned model, plain training",
    "widthc-pretrained": "--pretrained on the trained full model: ordered channels, supernet, "
    "search, fine-tuned from the trained weights",
    "uniform pretrained": "the uniform width inside that run, alike",
    "widthc-pretrained from supernet": "the same widths fine-tuned from the supernet's weights "
    "(--finetune)",
    "uniform pretrained from supernet": "the uniform width, alike",
    "uniform ordered finetune": "the ordered trained model's uniform width, fine-tuned: no "
    "supernet, no search",
}


def load(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def collect(runs: list[dict]) -> dict:
    """{row: {budget: {seed: entry}}} and the wall seconds of the runs behind each row."""
    rows: dict[str, dict] = {}
    walls: dict[str, list[float]] = {}
    for run in runs:
        for row, per_budget in run["rows"].items():
            if row == "uniform" and run["method"] != "widthc":
                continue  # every run retrains the uniform width; the table shows widthc's
            for text, entry in per_budget.items():
                rows.setdefault(row, {}).setdefault(text, {})[run["seed"]] = entry
            if row.startswith("tp-"):
                walls.setdefault(row, []).extend(e["seconds"] for e in per_budget.values())
            elif row != "uniform":
                walls.setdefault(row, []).append(run["wall_seconds"])
        if "full" in run:
            for text in BUDGETS:
                rows.setdefault("full", {}).setdefault(text, {})[run["seed"]] = run["full"]
            walls.setdefault("full", []).append(run["full"]["seconds"])
    return {"rows": rows, "walls": walls}


def uniform_consistency(runs: list[dict]) -> float | None:
    """The largest difference between the uniform width's accuracy retrained in two runs of
    the same seed and budget (same width, initial weights and recipe: expected 0)."""
    seen: dict[tuple, list[float]] = {}
    for run in runs:
        for text, e in run["rows"].get("uniform", {}).items():
            # the retrained candidate of the uniform width is the max-max winner of the run's
            # own supernet: runs agree where they chose the same one (same FLOPs and index)
            key = (
                run["seed"],
                text,
                e["flops"],
                e.get("candidate"),
                run["method"] == "uniform bins",
            )
            seen.setdefault(key, []).append(e["test"])
    spreads = [max(v) - min(v) for v in seen.values() if len(v) > 1]
    return max(spreads) if spreads else None


def _ms(values: list[float]) -> str:
    return mean_std(values, 100)


def table(folder: Path, split: str = "test") -> str:
    """The markdown table of one data set's summaries, on the `split` accuracies."""
    runs = load(folder)
    if not runs:
        return f"(no results in {folder})"
    c = collect(runs)
    rows, walls = c["rows"], c["walls"]
    uniform = rows.get("uniform", {})
    head = "| method | " + " | ".join(
        f"{b} {split} % | {b} Δ vs uniform (paired) | {b} FLOPs/budget" for b in BUDGETS
    )
    lines = [
        head + " | seeds | wall s/run | note |",
        "|---" + "|---:" * (3 * len(BUDGETS) + 2) + "|---|",
    ]
    for row in ORDER + sorted(set(rows) - set(ORDER)):
        if row not in rows:
            continue
        cells, seeds = [], set()
        for b in BUDGETS:
            per_seed = rows[row].get(b, {})
            seeds |= set(per_seed)
            accs = [e[split] for e in per_seed.values()]
            diffs = [e[split] - uniform[b][s][split] for s, e in per_seed.items()
                     if s in uniform.get(b, {})]  # fmt: skip
            share = [e["flops"] / e["budget"] for e in per_seed.values() if e.get("budget")]
            cells += [
                _ms(accs),
                "-" if row in ("uniform", "full") else _ms(diffs),
                f"{statistics.mean(share):.3f}" if share else "-",
            ]
        wall = walls.get(row, [])
        mean_wall = f"{statistics.mean(wall):.0f}" if wall else "-"
        lines.append(
            f"| {row} | {' | '.join(cells)} | {len(seeds)} | {mean_wall} | {NOTES.get(row, '')} |"
        )
    spread = uniform_consistency(runs)
    if spread is not None:
        lines.append("")
        lines.append(
            f"The uniform width retrained in several runs of a seed (same width, candidate, initial "
            f"weights and recipe): largest difference between runs {100 * spread:.2f} points."
        )
    pretrained = versus(folder, split)
    if pretrained:
        lines += ["", "From the trained full model, on the seeds widthc-pretrained ran "
                  "(Δ: per seed, the same trained model):", "", pretrained]  # fmt: skip
    return "\n".join(lines)


FROM_TRAINED = ("widthc-pretrained", "uniform pretrained", "uniform ordered finetune",
                "widthc-pretrained from supernet", "tp-magnitude-finetune", "tp-taylor-finetune",
                "full")  # fmt: skip
VERSUS = ("tp-magnitude-finetune", "tp-taylor-finetune")


def versus(folder: Path, split: str = "test") -> str:
    """From a trained model (issue 20), on the seeds widthc-pretrained ran alone: each row's
    accuracy and its per-seed difference to Torch-Pruning fine-tuned, magnitude and Taylor
    (paired: the same trained full model of the seed)."""
    rows = collect(load(folder))["rows"]
    if "widthc-pretrained" not in rows:
        return ""
    seeds = sorted(set.intersection(*(set(rows["widthc-pretrained"][b]) for b in BUDGETS)))
    head = ["method", "seeds"] + [
        f"{b} {x}" for b in BUDGETS for x in (f"{split} %", *(f"Δ vs {v}" for v in VERSUS))
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in (r for r in FROM_TRAINED if r in rows):
        cells, used = [], set()
        for b in BUDGETS:
            mine = {s: e[split] for s, e in rows[row].get(b, {}).items() if s in seeds}
            used |= set(mine)
            cells.append(_ms(list(mine.values())))
            for v in VERSUS:
                theirs = rows.get(v, {}).get(b, {})
                diffs = [a - theirs[s][split] for s, a in mine.items() if s in theirs]
                cells.append("-" if row == v else _ms(diffs))
        lines.append(f"| {row} | {len(used)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(folder: Path, split: str = "test") -> str:
    """The table of one data set's folder, or of every data set under `folder`."""
    folder = Path(folder)
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if any(folder.glob("*.json")) or not subs:
        return table(folder, split)
    return "\n\n".join(f"### {p.name}\n\n{table(p, split)}" for p in subs)


def levers(variants: dict[str, Path], seeds: set[int] | None = None) -> str:
    """One row per lever (a variant of the widthc run): the paired difference widthc - uniform
    on the validation split (what a lever is judged on) and on the test split (reported only),
    and the trained supernet's validation accuracy at its largest width (a diagnostic). With
    `seeds`, only those seeds' runs (levers run on fewer seeds than the default)."""
    head = ["lever", "seeds"] + [f"{b} Δ {s}" for s in ("val", "test") for b in BUDGETS]
    lines = ["| " + " | ".join(head) + " | supernet val, largest width |",
             "|---" + "|---:" * len(head) + "|"]  # fmt: skip
    for name, folder in variants.items():
        runs = [
            r for r in load(folder)
            if r["method"] == "widthc" and (seeds is None or r["seed"] in seeds)
        ]  # fmt: skip
        if not runs:
            continue
        cells = []
        for split in ("val", "test"):
            for b in BUDGETS:
                diffs = [r["rows"]["widthc"][b][split] - r["rows"]["uniform"][b][split]
                         for r in runs if b in r["rows"]["widthc"]]  # fmt: skip
                cells.append(_ms(diffs))
        largest = [r["supernet"]["val_acc_largest"] for r in runs if r.get("supernet")]
        lines.append(f"| {name} | {len(runs)} | {' | '.join(cells)} | {_ms(largest)} |")
    return "\n".join(lines)


def figure(folder: Path, path: Path, split: str = "test") -> Path:
    """One dot per method and budget, the mean retrained accuracy with a bar of ± one std over
    seeds, widthc and uniform marked: the table above, for the eye (README "Does it work?")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = collect(load(folder))["rows"]
    names = [r for r in ORDER if r in rows and r != "full"]
    fig, axes = plt.subplots(1, len(BUDGETS), figsize=(9, 0.32 * len(names) + 1.2), sharey=True)
    for ax, b in zip(axes, BUDGETS, strict=True):
        for y, name in enumerate(names):
            accs = [100 * e[split] for e in rows[name].get(b, {}).values()]
            if not accs:
                continue
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            color = {"widthc": "C3", "uniform": "C0"}.get(name, "0.35")
            ax.errorbar(statistics.mean(accs), y, xerr=sd, fmt="o", color=color, capsize=3)
        if "uniform" in rows and rows["uniform"].get(b):
            mean = statistics.mean(100 * e[split] for e in rows["uniform"][b].values())
            ax.axvline(mean, color="C0", lw=0.8, ls="--")
        ax.set_title(f"{b} of the FLOPs")
        ax.set_xlabel(f"retrained {split} accuracy (%), mean ± std")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.suptitle(f"{Path(folder).name}: every method, same recipe and budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
