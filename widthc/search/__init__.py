"""Width search under a FLOPs budget (paper eq. 2 and 13, appendix A.2; DESIGN §8).

A searcher explores widths (rows of bin counts, see `widthc.space`) through an `Objective`:
it asks for FLOPs in bulk (`flops_many`), for a width's score (max-max over its candidates,
cached), and for repairs toward the budget. Searchers are registered by name, deterministic for
a seed, do no I/O, and never return a width above the budget. Every search first scores the
uniform width at the budget, the baseline every run compares with, and returns the best width
it evaluated among those in the budget band (only widths within [0.9, 1.0] of the budget
compete by default, so that a search does not drift to small widths), the baseline, and the
searcher's own proposals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from widthc import space as sp
from widthc.errors import WidthcError
from widthc.space import WidthSpace

ScoreFn = Callable[[np.ndarray], tuple[float, int]]  # width -> (score, winning candidate)
Progress = Callable[[int, float], None]  # (widths evaluated, best score so far)

SEARCHERS: dict[str, Callable] = {}
DEFAULT_BAND = (0.9, 1.0)


def register(name: str):
    """Register a searcher: `fn(objective, rng, **options) -> list of proposed widths`."""

    def deco(fn):
        SEARCHERS[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class Evaluation:
    """One scored width: its bins per searchable group, FLOPs (per sample), score, candidate."""

    width: tuple[int, ...]
    flops: float
    score: float
    candidate: int


class Exhausted(Exception):
    """The cap on evaluated widths is reached: the searcher stops exploring."""


class Objective:
    """What a searcher sees of the problem: the space, the budget and its band, FLOPs in bulk,
    cached scores (with the order they were first asked for: the history) and repairs."""

    def __init__(
        self,
        space: WidthSpace,
        flops_many: sp.FlopsMany,
        score: ScoreFn,
        budget: float,
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
        self.baseline: np.ndarray = sp.uniform(space, flops_many, budget)

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
        e = Evaluation(key, float(self.flops_many(row[None])[0]), float(value), int(candidate))
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

    def in_band(self, width) -> bool:
        return bool(sp.in_band(self.flops(width), self.budget, self.band)[0])

    def eligible(self, e: Evaluation) -> bool:
        return bool(sp.in_band(np.array([e.flops]), self.budget, self.band)[0])

    def repair(self, width, rng: np.random.Generator) -> np.ndarray:
        return sp.repair(self.space, self.flops_many, np.asarray(width), self.budget, rng)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        return sp.random(self.space, self.flops_many, rng, self.budget)


@dataclass
class SearchResult:
    """The outcome of one search: the chosen width and how it was found."""

    budget: float
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
    budget: float,
    searcher: str = "evolutionary",
    seed: int = 0,
    band: tuple[float, float] = DEFAULT_BAND,
    max_evals: int | None = None,
    progress: Progress | None = None,
    **options,
) -> SearchResult:
    """Search the best-scoring width whose FLOPs meet `budget` (eq. 2, 13). `options` go to
    the searcher (population, generations, samples, ...); those it does not take are ignored."""
    if searcher not in SEARCHERS:
        raise WidthcError(
            f"unknown searcher '{searcher}': choose one of {', '.join(sorted(SEARCHERS))}"
        )
    if not 0 < band[0] <= band[1]:
        raise WidthcError(f"the budget band must be 0 < low <= high, got {band[0]}, {band[1]}")
    if max_evals is not None and max_evals < 1:
        raise WidthcError(f"--max-evals must be at least 1, got {max_evals}")
    sp.check_budget(space, flops_many, budget)
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
        if e.flops <= budget and (objective.eligible(e) or e.width in extra)
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


# the searchers register themselves on import
from widthc.search import evolutionary, greedy, random_search, uniform  # noqa: E402, F401
