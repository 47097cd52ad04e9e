"""Width search under a budget (paper eq. 2 and 13, appendix A.2; DESIGN §8): FLOPs, params,
latency, or several of them at once (`widthc.space.Budget`).

A searcher explores widths (rows of bin counts, see `widthc.space`) through an `Objective`:
it asks for loads in bulk (a width's largest cost over its limit), for a width's score
(max-max over its candidates, cached), and for repairs toward the budget. Searchers are registered by name, deterministic for
a seed, do no I/O, and never return a width above the budget. Every search first scores the
uniform width at the budget, the baseline every run compares with, and returns the best width
it evaluated among those in the budget band (only widths within [0.9, 1.0] of the budget
compete by default, so that a search does not drift to small widths), the baseline, and the
searcher's own proposals.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from widthc import space as sp
from widthc.config import SearchConfig, default
from widthc.errors import WidthcError
from widthc.search import evolutionary, greedy, random_search, uniform  # noqa: F401 - register
from widthc.search.objective import (
    DEFAULT_BAND,
    Evaluation,
    Exhausted,
    Objective,
    Progress,
    ScoreFn,
)
from widthc.search.registry import SEARCHERS, register
from widthc.space import Budget, WidthSpace

__all__ = [
    "DEFAULT_BAND", "SEARCHERS", "Evaluation", "Exhausted", "Objective", "Progress", "ScoreFn",
    "SearchResult", "pareto_front", "register", "search",
]  # fmt: skip


@dataclass
class SearchResult:
    """The outcome of one search: the chosen width and how it was found."""

    budget: Budget
    searcher: str
    seed: int
    best: Evaluation
    uniform: Evaluation
    history: list[Evaluation] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    @property
    def width(self) -> np.ndarray:
        return np.array(self.best.width, dtype=np.int64)


def search(
    space: WidthSpace,
    flops_many: sp.FlopsMany,
    score: ScoreFn,
    budget: float | Budget,
    searcher: str = default(SearchConfig, "search"),
    seed: int = 0,
    band: tuple[float, float] = DEFAULT_BAND,
    max_evals: int | None = None,
    progress: Progress | None = None,
    **options,
) -> SearchResult:
    """Search the best-scoring width that meets `budget` (eq. 2, 13): FLOPs (a number, with
    `flops_many`), or a `Budget` of any limits (`flops_many` then only records each width's
    FLOPs). `options` go to the searcher (population, generations, samples, ...); those it does
    not take are ignored."""
    if searcher not in SEARCHERS:
        raise WidthcError(
            f"unknown searcher '{searcher}': choose one of {', '.join(sorted(SEARCHERS))}"
        )
    if not 0 < band[0] <= band[1]:
        raise WidthcError(f"the budget band must be 0 < low <= high, got {band[0]}, {band[1]}")
    if max_evals is not None and max_evals < 1:
        raise WidthcError(f"--max-evals must be at least 1, got {max_evals}")
    if not isinstance(budget, Budget):
        sp.check_budget(space, flops_many, budget)
        budget = Budget.of_flops(flops_many, budget)
    objective = Objective(space, flops_many, score, budget, band, max_evals, progress)
    rng = np.random.default_rng(seed)
    baseline = objective.evaluate(objective.baseline, capped=False)
    fn = SEARCHERS[searcher]
    taken = inspect.signature(fn).parameters
    options = {k: v for k, v in options.items() if k in taken and v is not None}
    try:
        proposals = fn(objective, rng, **options)
    except Exhausted:
        proposals = []
    extra = {baseline.width} | {
        objective.evaluate(w, capped=False).width for w in proposals
    }  # proposals are scored even past the cap: a searcher's answer is never unscored
    pool = [
        e
        for e in objective.history
        if e.load <= 1.0 and (objective.eligible(e) or e.width in extra)
    ]
    best = max(pool, key=lambda e: e.score)  # the first evaluated among equals
    return SearchResult(budget, searcher, seed, best, baseline, objective.history, options)


def pareto_front(evaluations: list[Evaluation]) -> list[Evaluation]:
    """The widths no other width beats on both FLOPs (fewer) and score (higher), by FLOPs."""
    front: list[Evaluation] = []
    for e in sorted(evaluations, key=lambda e: (e.flops, -e.score)):
        if not front or e.score > front[-1].score:
            front.append(e)
    return front
