"""Greedy slimming (AutoSlim style; paper table 9): start from the full width and repeatedly
remove bins from the group whose removal costs the least score per load saved (FLOPs, for a
FLOPs budget), until the budget is met. Each move scores one shrunk width per group; the step (bins removed per move)
grows with the model so that the moves fit the cap on evaluated widths (`max_evals`, 2,000 by
default). When the cap is reached anyway, the width is scaled down to the budget."""

from __future__ import annotations

import math

import numpy as np

from widthc.search.objective import Exhausted, Objective
from widthc.search.registry import register


@register("greedy")
def greedy(objective: Objective, rng: np.random.Generator, step: int | None = None) -> list:
    space = objective.space
    width = space.full()
    if step is None:
        to_remove = int((space.full() - objective.baseline).sum())
        budget_evals = objective.max_evals or 2000
        step = max(1, math.ceil(to_remove * space.size / budget_evals))
    try:
        score, load = objective(width), objective.load(width)[0]
        while load > 1.0:
            movable = np.flatnonzero(width > 1)
            if not len(movable):  # the smallest width: a latency predicted above the budget
                break
            rows = np.repeat(width[None], len(movable), axis=0)
            rows[np.arange(len(movable)), movable] = np.maximum(1, width[movable] - step)
            loads = objective.load(rows)
            scores = np.array([objective(r) for r in rows])
            loss = (score - scores) / np.maximum(load - loads, 1e-12)
            pick = int(np.argmin(loss))  # the first among equals
            width, score, load = rows[pick], scores[pick], loads[pick]
    except Exhausted:
        width = objective.repair(width, np.random.default_rng(0))
    return [width]
