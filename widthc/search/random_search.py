"""Random search (paper A.2: 2,000 widths): widths drawn uniformly over bins, repaired to the
budget, kept when they land in the budget band and were not drawn before."""

from __future__ import annotations

import numpy as np

from widthc.config import SearchConfig, default
from widthc.search.objective import Objective
from widthc.search.registry import register


@register("random")
def random_search(
    objective: Objective, rng: np.random.Generator, samples: int = default(SearchConfig, "samples")
) -> list:
    if samples < 1:
        raise ValueError("samples must be at least 1")
    scored, attempts = 0, 0
    while scored < samples and attempts < 20 * samples:  # a small space runs out of new widths
        attempts += 1
        width = objective.random(rng)
        if objective.seen(width) or not objective.in_band(width):
            continue
        objective(width)
        scored += 1
    return []
