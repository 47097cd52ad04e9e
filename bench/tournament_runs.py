"""The tournament of `--score-retrain M` (issue 16) run by run: which contender won each budget,
and a lever's runs paired with another set of runs of the same seeds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tournament_runs.py \
        --run 'runs/bench/levers/retrain-3/mnist1d/widthc-s*' \
        --json bench/results/tournament/mnist1d-retrain-3.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/tournament_runs.py \
        --lever bench/results/levers/retrain-3/mnist1d --base bench/results/quality-s10/mnist1d

`--run DIR` (repeatable, a glob): per run and budget, each contender's validation score from
its tournament retraining (the search's own width first, the uniform width last), the one
chosen and whether the search's own pick was kept (then the run's searched width, retrained by
the retrain stage under the run's seed, is what a run without the tournament would have
retrained), and the test metric the retrain stage measured, if it ran. `--json`: those records,
kept beside the results (run folders are git-ignored).
`--lever A --base B` (bench/quality.py summary folders): per seed in both, the searched width's
validation and test accuracy of A minus B's, per budget (after the levers' table of both: widthc −
uniform of each run), and both supernets' validation accuracy
at the largest width (equal: the same supernet, so a paired comparison of what came after it).
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from quality_table import levers  # bench/

from widthc.run import METRICS, SEARCH, budget_folder

BUDGETS = ("25%", "50%")


def tournaments(run: Path) -> dict[str, dict]:
    """{budget: its tournament record} of a run's search.json (none without --score-retrain)."""
    results = json.loads((Path(run) / SEARCH).read_text())["results"]
    return {r["text"]: r["tournament"] for r in results if r.get("tournament")}


def winner(t: dict) -> str:
    """Which contender the tournament chose, in words."""
    n = len(t["scores"])
    if t["chosen"] == n - 1:
        return "uniform"
    return "the search's own (kept)" if t["chosen"] == 0 else f"contender {t['chosen'] + 1}"


def tested(run: Path, text: str) -> str:
    """The retrain stage's test metric of the budget's width and of uniform, if it ran."""
    path = Path(run) / budget_folder(text) / METRICS
    test = json.loads(path.read_text()).get("test", {}) if path.exists() else {}
    return " / ".join(f"{test[k]:.4f}" for k in ("widthc", "uniform") if k in test) or "-"


def rows(run: Path, records: dict[str, dict]) -> list[str]:
    """One table row per budget: the contenders' validation scores, the winner, the test."""
    out = []
    for text, t in records.items():
        vals = " / ".join(f"{s['val']:.4f}" for s in t["scores"])
        out.append(f"| {run.name} | {text} | {t['seed']} | {t['epochs']} | {vals} | {winner(t)} "
                   f"| {tested(run, text)} |")  # fmt: skip
    return out


def paired(lever: Path, base: Path) -> list[str]:
    """Per seed in both folders: lever − base, the searched width's val and test, per budget."""
    out = []
    for path in sorted(Path(lever).glob("widthc-s*.json")):
        other = Path(base) / path.name
        if not other.exists():
            continue
        a, b = json.loads(path.read_text()), json.loads(other.read_text())
        cells = [
            f"{100 * (a['rows']['widthc'][t][s] - b['rows']['widthc'][t][s]):+.2f}"
            for s in ("val", "test")
            for t in BUDGETS
        ]
        nets = " / ".join(f"{100 * r['supernet']['val_acc_largest']:.2f}" for r in (a, b))
        out.append(f"| {a['seed']} | {' | '.join(cells)} | {nets} |")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="a run dir or glob (repeatable)")
    p.add_argument("--json", default=None, help="write the tournament records here")
    p.add_argument("--lever", default=None, help="a quality.py summary folder (with --base)")
    p.add_argument("--base", default=None, help="the summary folder it is paired with")
    args = p.parse_args(argv)
    runs = [Path(r) for pattern in args.run for r in sorted(glob.glob(pattern))]
    records = {r.name: tournaments(r) for r in runs}
    if runs:
        head = "validation: search's width / … / uniform"
        print(f"| run | budget | seed | epochs | {head} | chose | test: chosen / uniform |")
        print("|---|---|---:|---:|---|---|---|")
        print("\n".join(line for r in runs for line in rows(r, records[r.name])))
        chosen = [t["chosen"] for rec in records.values() for t in rec.values()]
        print(f"the search's own width kept in {chosen.count(0)} of {len(chosen)} budgets")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1))
    if args.lever and args.base:
        print(levers({"base": Path(args.base), "lever": Path(args.lever)}))
        head = [f"{b} Δ {s}" for s in ("val", "test") for b in BUDGETS]
        print(f"\n{args.lever} − {args.base}, the searched width (points)")
        print(f"| seed | {' | '.join(head)} | supernet val, largest width (lever / base) |")
        print("|---:" + "|---:" * len(head) + "|---|")
        print("\n".join(paired(Path(args.lever), Path(args.base))))


if __name__ == "__main__":
    main()
