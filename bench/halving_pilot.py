"""Would successive halving pick the right candidate pattern (issue 16, session 10)? On finished
`--score-top K --score-steps N --score loss` runs (their stored supernets), every finalist's every
candidate (pattern) is fine-tuned N steps as the run tuned it, and scored (recalibrated and
measured, as widthc.evaluate scores) also at checkpoints on the way (N/4, N/2 of the same
cosine schedule over N) and after a separate full tuning of N/4 steps (its own cosine, as
`--score-steps N/4` tunes). Per width: is the pattern best at a checkpoint the one best after N?
And per budget: which width would halving (every pattern N/4 steps, then only the best on to N)
choose, beside the run's own choice (every pattern N steps)? The N-step scores are checked
against the run's stored ones (search.json `rescored`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/halving_pilot.py --json OUT.json RUN_DIR...
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from widthc.context import Context
from widthc.evaluate import recalibrate
from widthc.passes.slim import slim
from widthc.private_rows import rows_of
from widthc.run import BUDGET_PREFIXES, SEARCH


def measured(ctx: Context, small, seed: int) -> float:
    """`small` (a copy) recalibrated and measured as score_choice does, the random state kept."""
    small = copy.deepcopy(small)
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(seed)
        calib = ctx.calibration()
        if calib:
            recalibrate(small, list(calib))
        small.eval()
        total, n = 0.0, 0
        for x, y in ctx.validation():
            total += float(ctx.score_metric(small(x), y)) * len(y)
            n += len(y)
    return total / max(n, 1)


def tuned_scores(ctx: Context, net, choice, tuning, checks: list[int]) -> dict[int, float]:
    """One candidate tuned `tuning.steps` steps as Tuning.tuned does, scored at every step in
    `checks` (1-based counts of steps done) and at the end."""
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(ctx.config.seed)
        with torch.inference_mode(False), torch.enable_grad():
            with rows_of(net.private, choice, written=True):
                small = slim(net.program, choice).train()
            params = [p for p in small.parameters() if p.requires_grad]
            opt = torch.optim.SGD(params, lr=tuning.lr, momentum=tuning.momentum,
                                  weight_decay=tuning.weight_decay)  # fmt: skip
            for step in range(tuning.steps):
                x, y = tuning.batches[step % len(tuning.batches)]
                for group in opt.param_groups:
                    group["lr"] = tuning.rate(step)
                opt.zero_grad(set_to_none=True)
                tuning.loss(small(x), y).backward()
                opt.step()
                if step + 1 in checks or step + 1 == tuning.steps:
                    out[step + 1] = measured(ctx, small, ctx.config.seed)
    return out


def pilot(run: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "run"
        shutil.copytree(
            run, work, ignore=shutil.ignore_patterns(*(f"{p}*" for p in BUDGET_PREFIXES))
        )
        ctx = Context.open(work, progress=False)
        ctx.echo = lambda *a, **k: None
        net = ctx.supernet(trained=True)
        full = ctx.tuning()
        quarter = dataclasses.replace(full, steps=full.steps // 4)
        checks = [full.steps // 4, full.steps // 2]
        results = json.loads((run / SEARCH).read_text())["results"]
        budgets = []
        for r in results:
            rows = []
            for s in r["rescored"]["scores"]:
                choice = ctx.program.space.choice(np.array(s["width"]))
                pats = []
                for c in net.candidates(choice):
                    at = tuned_scores(ctx, net, c, full, checks)
                    at["q"] = tuned_scores(ctx, net, c, quarter, [])[quarter.steps]
                    pats.append(at)
                rows.append({"width": s["width"], "stored": s["candidates"], "patterns": pats})
                print(
                    run.name,
                    s["width"],
                    [round(p[full.steps], 5) for p in pats],
                    [round(v, 5) for v in s["candidates"]],
                    flush=True,
                )
            budgets.append({"text": r["text"], "chosen": r["rescored"]["chosen"], "rows": rows})
    return {"run": str(run), "steps": full.steps, "checks": checks, "budgets": budgets}


def first_best(values) -> int:
    return max(range(len(values)), key=lambda j: (values[j], -j))  # the first best, as MaxMax


def task_of(d: dict) -> str:
    return Path(d["run"]).name.rsplit("-s", 1)[0]


def tally(runs: list[dict], select) -> dict:
    """How `select(patterns, shared_score)` -> a pattern fares on `runs`: widths whose selected
    pattern is the best after N, budgets whose chosen width is all-mode's, the score lost."""
    n, out = str(runs[0]["steps"]), {"agree": 0, "widths": 0, "same": 0, "budgets": 0, "lost": []}
    for d in runs:
        data = json.loads((Path(d["run"]) / SEARCH).read_text())["results"]
        for b, r in zip(d["budgets"], data):
            shared = {tuple(h["width"]): h for h in r["history"]}  # the search's own scores
            scores = []
            for row in b["rows"]:
                pats = row["patterns"]
                final = first_best([x[n] for x in pats])
                j = select(pats, shared[tuple(row["width"])]) if len(pats) > 1 else final
                scores.append(pats[j][n])
                if len(pats) > 1:
                    out["widths"] += 1
                    out["agree"] += j == final
                    out["lost"].append(pats[final][n] - pats[j][n])
            out["budgets"] += 1
            out["same"] += first_best(scores) == b["chosen"]
    return out


def table(done: list[dict]) -> None:
    """Per selector of the one pattern tuned on to N (the best at a checkpoint of the N-step
    tuning, after N/4 steps alone, or on the shared weights: --score-candidates best): how often
    it is the best pattern after N, and per budget whether the width chosen (each width scored by
    its selected pattern's N-step score) is the one chosen with every pattern tuned N steps."""
    n, c = str(done[0]["steps"]), [str(k) for k in done[0]["checks"]]
    best_at = lambda key: lambda p, h: first_best([x[key] for x in p])  # noqa: E731
    pick = {f"step {c[0]} of {n} (halving)": best_at(c[0]), f"step {c[1]} of {n}": best_at(c[1]),
            f"{c[0]} steps alone (own cosine)": best_at("q"),
            "shared weights (best)": lambda p, h: h["candidate"]}  # fmt: skip
    tasks = sorted({task_of(d) for d in done})
    counts = [len(r["patterns"]) for d in done for b in d["budgets"] for r in b["rows"]]
    chance = sum(1 / k for k in counts if k > 1)
    print(f"chance (a pattern drawn at random): {chance:.0f} of {sum(k > 1 for k in counts)}")
    print(f"| selector | task | best pattern after {n} | the same width as all | "
          "score lost per width, median / max |\n|---|---|---:|---:|---:|")  # fmt: skip
    for name, select in pick.items():
        for task in [*tasks, "all tasks"]:
            t = tally([d for d in done if task in ("all tasks", task_of(d))], select)
            print(f"| {name} | {task} | {t['agree']}/{t['widths']} "
                  f"({100 * t['agree'] / t['widths']:.0f}%) | {t['same']}/{t['budgets']} | "
                  f"{np.median(t['lost']):.4f} / {max(t['lost']):.4f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*")
    p.add_argument("--json", required=True)
    p.add_argument("--table", action="store_true", help="only the summary of --json")
    args = p.parse_args()
    out = Path(args.json)
    if args.table:
        return table(json.loads(out.read_text()))
    done = json.loads(out.read_text()) if out.exists() else []
    for run in args.runs:
        if any(d["run"] == run for d in done):
            continue
        done.append(pilot(Path(run)))
        out.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
