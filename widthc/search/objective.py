"""What a searcher sees of the problem (`Objective`): the width space, the budget and its band,
costs in bulk, cached scores with their history, repairs toward the budget.

A budget may limit FLOPs, params and latency at once (`widthc.space.Budget`); a searcher only
sees a width's *load*, the largest of its costs over their limits: a width meets the budget
when its load is at most 1, and competes when its load is in the band ([0.9, 1] by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from widthc import space as sp
from widthc.config import SearchConfig, default
from widthc.space import Budget, WidthSpace

ScoreFn = Callable[[np.ndarray], tuple[float, int]]  # width -> (score, winning candidate)
Progress = Callable[[int, float], None]  # (widths evaluated, best score so far)

DEFAULT_BAND = (default(SearchConfig, "budget_band"), 1.0)


@dataclass(frozen=True)
class Evaluation:
    """One scored width: its bins per searchable group, FLOPs (per sample), score, candidate,
    and its load (the largest cost over its limit: at most 1 within the budget)."""

    width: tuple[int, ...]
    flops: float
    score: float
    candidate: int
    load: float = float("nan")


class Exhausted(Exception):
    """The cap on evaluated widths is reached: the searcher stops exploring."""


class Objective:
    """What a searcher sees of the problem: the space, the budget and its band, loads in bulk,
    cached scores (with the order they were first asked for: the history) and repairs."""

    def __init__(
        self,
        space: WidthSpace,
        flops_many: sp.FlopsMany,
        score: ScoreFn,
        budget: Budget,
        band: tuple[float, float] = DEFAULT_BAND,
        max_evals: int | None = None,
        progress: Progress | None = None,
    ):
        self.space, self.flops_many, self._score = space, flops_many, score
        self.budget, self.band = budget, band
        self.max_evals, self.progress = max_evals, progress
        self.history: list[Evaluation] = []
        self._seen: dict[tuple[int, ...], Evaluation] = {}
        self._best: float | None = None  # the best score in the band so far
        self.baseline: np.ndarray = sp.uniform(space, budget.load, 1.0)

    def __call__(self, width) -> float:
        """The score of `width` (cached); raises Exhausted past the cap on new widths."""
        return self.evaluate(width, capped=True).score

    def evaluate(self, width, capped: bool = True) -> Evaluation:
        key = tuple(int(k) for k in width)
        if key in self._seen:
            return self._seen[key]
        if capped and self.max_evals is not None and len(self.history) >= self.max_evals:
            raise Exhausted
        row = np.array(key, dtype=np.int64)
        value, candidate = self._score(row)
        e = Evaluation(
            key, float(self.flops_many(row[None])[0]), float(value), int(candidate),
            float(self.load(row)[0]),
        )  # fmt: skip
        self.history.append(e)
        self._seen[key] = e
        if self.eligible(e) and (self._best is None or e.score > self._best):
            self._best = e.score
        if self.progress is not None:
            self.progress(len(self.history), e.score if self._best is None else self._best)
        return e

    def seen(self, width) -> bool:
        return tuple(int(k) for k in width) in self._seen

    def flops(self, widths: np.ndarray) -> np.ndarray:
        return self.flops_many(np.atleast_2d(widths))

    def load(self, widths: np.ndarray) -> np.ndarray:
        """The largest cost over its limit of every row: at most 1 within the budget."""
        return self.budget.load(np.atleast_2d(widths))

    def in_band(self, width) -> bool:
        return bool(sp.in_band(self.load(width), 1.0, self.band)[0])

    def eligible(self, e: Evaluation) -> bool:
        return bool(sp.in_band(np.array([e.load]), 1.0, self.band)[0])

    def repair(self, width, rng: np.random.Generator) -> np.ndarray:
        return sp.repair(self.space, self.budget.load, np.asarray(width), 1.0, rng)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        return sp.random(self.space, self.budget.load, rng, 1.0)
