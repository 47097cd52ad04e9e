"""The stages of `widthc slim`, each a function of the run's Context (DESIGN §1, §10).

    analyze -> train (min-min) -> search (max-max) -> slim -> export -> retrain -> report

A stage reads what the earlier stages wrote (through `widthc.run`), writes its own files and
marks itself done; `run_stages` skips the stages already done, so a run killed anywhere resumes
from the stage it was in (training and search resume from their own checkpoints). The order of
the stages is the run directory's (`widthc.run.STAGES`); this table says which module runs each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from widthc import interrupt
from widthc.context import Context
from widthc.run import STAGES as ORDER
from widthc.stages import analyze, export, multistage, report, retrain, slim, train

__all__ = ["ORDER", "STAGES", "run_stages"]

STAGES: dict[str, Callable[[Context], None]] = {
    "analyze": analyze.run,
    "train": train.run,
    "search": multistage.run,  # one stage (stages/search.py), or --stages T
    "slim": slim.run,
    "export": export.run,
    "retrain": retrain.run,
    "report": report.run,
}


def run_stages(ctx: Context, stages: Iterable[str] = ORDER) -> None:
    """Run `stages` in order, skipping those already done. Ctrl-C stops at the next safe
    point, after the training checkpoint or the search snapshot is saved."""
    with interrupt.deferred():
        for name in stages:
            if ctx.run.done(name):
                continue
            with ctx.run.stage(name):
                STAGES[name](ctx)
