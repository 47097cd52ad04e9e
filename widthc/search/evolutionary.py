"""Evolutionary search (paper A.2: population 40, 50 generations).

The first population is the uniform width plus random widths in the budget band. Each
generation takes the best quarter as parents and breeds a population of new children, half by
mutation (every group's bin count redrawn with probability `mutation_prob`) and half by
uniform crossover of two parents; children are repaired toward the budget and kept only when
they land in the band and are new. The next population is the best of parents and children.
"""

from __future__ import annotations

import numpy as np

from widthc.config import SearchConfig, default
from widthc.search.objective import Objective
from widthc.search.registry import register


@register("evolutionary")
def evolutionary(
    objective: Objective,
    rng: np.random.Generator,
    population: int = default(SearchConfig, "population"),
    generations: int = default(SearchConfig, "generations"),
    parents: int | None = None,
    mutation_prob: float = 0.1,
) -> list:
    if population < 2 or generations < 0:
        raise ValueError("population must be at least 2 and generations 0 or more")
    n_parents = parents or max(2, population // 4)
    space = objective.space
    pop = [objective.baseline]
    pop += _new(objective, rng, population - 1, lambda: objective.random(rng), pop)
    scores = {tuple(w): objective(w) for w in pop}
    for _ in range(generations):
        ranked = sorted(pop, key=lambda w: -scores[tuple(w)])  # stable: first among equals
        top = ranked[:n_parents]

        children = _new(
            objective, rng, population // 2, _mutant(top, space, rng, mutation_prob), pop
        )
        crossed = _crossed(top, space, rng)
        children += _new(objective, rng, population - len(children), crossed, pop + children)
        for w in children:
            scores[tuple(w)] = objective(w)
        pop = sorted(pop + children, key=lambda w: -scores[tuple(w)])[:population]
    return [max(pop, key=lambda w: scores[tuple(w)])]


def _mutant(top: list, space, rng, p: float):
    """Children of a random parent with each group's bin count redrawn with probability p."""

    def make():
        parent = top[rng.integers(len(top))]
        redraw = rng.random(space.size) < p
        return np.where(redraw, rng.integers(1, space.n_bins + 1), parent)

    return make


def _crossed(top: list, space, rng):
    """Children taking each group's bin count from one of two random parents."""

    def make():
        a, b = rng.choice(len(top), size=2, replace=len(top) < 2)
        return np.where(rng.random(space.size) < 0.5, top[a], top[b])

    return make


def _new(objective: Objective, rng, n: int, make, taken: list) -> list:
    """Up to `n` widths from `make()`, repaired to the budget, in the band, not seen before."""
    keys = {tuple(w) for w in taken}
    out, attempts = [], 0
    while len(out) < n and attempts < 20 * max(n, 1):
        attempts += 1
        width = objective.repair(make(), rng)
        key = tuple(width)
        if key in keys or objective.seen(width) or not objective.in_band(width):
            continue
        keys.add(key)
        out.append(width)
    return out
