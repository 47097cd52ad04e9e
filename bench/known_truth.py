"""Kendall τ against a truth of more retraining seeds (issue 16): per lever and task, τ between
each run's max-max scores of the 22 truth widths and their retrained test metric, the mean over
the retraining seeds 0-2 (the stored tables' truth) beside the mean over every seed the task's
truth has complete (`known_answer.truth_seeds`); mean ± std over the lever's runs, and the
truth's agreement with itself (`known_answer.agreement`). Reruns read as `rerun/<lever>`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_truth.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402
from mean_std import mean_std  # noqa: E402

BASE = (0, 1, 2)  # the stored tables' truth


def cell(runs: list[dict], task: str) -> str:
    """'τ (seeds 0-2) → τ (all seeds)', each mean ± std over the runs with truth scores."""
    base, every = ka.truth_taus(runs, task, BASE), ka.truth_taus(runs, task)
    shown = [mean_std(t, digits=2) if t else "-" for t in (base, every)]
    return f"{shown[0]} → {shown[1]} ({max(len(base), len(every))})" if base or every else ""


def levers() -> list[str]:
    """The levers with stored runs, then the reruns (`rerun/<lever>`)."""
    stored = [lv for lv in ka.LEVERS if (ka.RESULTS / lv).is_dir()]
    reruns = sorted(p.name for p in (ka.RESULTS / "rerun").glob("*") if p.is_dir())
    return stored + [f"rerun/{lv}" for lv in reruns]


def table(names: list[str]) -> str:
    """Levers down, tasks across; a lever whose runs have no truth scores (other bins) is left
    out, a task without runs or truth is empty."""
    tasks = list(ka.TASKS)
    seeds = {t: ",".join(map(str, ka.truth_seeds(t))) or "none" for t in tasks}
    head = [f"| lever | {' | '.join(f'{t} (τ seeds 0-2 → {seeds[t]})' for t in tasks)} |",
            "|---|" + "---:|" * len(tasks)]  # fmt: skip
    rows = []
    for lever in names:
        cells = [cell(ka.summaries(lever, t), t) for t in tasks]
        if any(cells):
            rows.append(f"| {lever} | {' | '.join(cells)} |")
    return "\n".join(head + rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args()
    print(table(levers()))
    print(ka.agreement(BASE))
    print(ka.agreement())


if __name__ == "__main__":
    main()
