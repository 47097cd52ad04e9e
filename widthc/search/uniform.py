"""The baseline: the same share of channels in every group, the largest that meets the budget.
`search` scores it first for every searcher; this searcher proposes nothing else."""

from __future__ import annotations

from widthc.search.objective import Objective
from widthc.search.registry import register


@register("uniform")
def uniform(objective: Objective, rng) -> list:
    return [objective.baseline]
