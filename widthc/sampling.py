"""Which width a min-min step trains (DESIGN §7): the supernet only learns to score widths it
samples, so the sampling law decides which widths it can rank.

- `uniform` (the paper's eq. 1): every searchable group's bin count uniform over its bins. A
  width that is narrow in one group and wide in its neighbours is drawn rarely: with three
  groups, "the middle one in its lowest tenth, the others in their highest" is 0.1% of draws.
- `extremes`: every group's share of its bins from the arcsine law (Beta(1/2, 1/2)), whose mass
  sits at both ends, so lopsided widths are drawn more often (the same example: 0.86%).
- `log`: every group's bin count log-uniform, P(k) = log((k+1)/k) / log(n+1): each octave of
  widths gets the same share of the steps, so a group's narrow widths train far more often
  (4 bins of 128: 4.6% of draws, against 0.8%) at the cost of its wide ones.
- `flops`: a FLOPs target uniform between the smallest and the full width, then a uniform
  width moved to it (`space.repair`): cheap and costly widths are drawn alike, where per-group
  sampling mostly draws cheap ones (FLOPs multiply the shares of coupled layers: on a
  three-layer MLP 46% of its draws fall in the cheapest quarter of the FLOPs range).

`budget_share` of the steps instead draw their width inside a budget's FLOPs band (the search's
[band, 1] x budget, the budgets known before training): a FLOPs target uniform in the band of
one budget (chosen uniformly), then a width of the sampling law's shape moved to it. Each draw
uses the step's torch generator only, so a resumed run draws the same widths.

`WidthSet` draws one of a given set of widths, uniformly: the steps of `--refine-epochs`,
which train only the budgets' finalists after a first search (widthc/stages/refine.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from widthc import space as sp
from widthc.config import SAMPLINGS
from widthc.errors import WidthcError
from widthc.ir import WidthChoice

__all__ = ["SAMPLINGS", "WidthSampler", "WidthSet", "sample_width"]


def sample_width(program, gen: torch.Generator) -> WidthChoice:
    """A width drawn uniformly over each searchable group's bins (eq. 1), left-most pattern."""
    groups = program.searchable
    u = torch.rand(len(groups), generator=gen, dtype=torch.float64)
    widths = {g.id: int(x * len(g.bins)) + 1 for g, x in zip(groups, u.tolist())}
    return WidthChoice.of(widths, binning=program.binning)


class WidthSampler:
    """`sampler(gen) -> WidthChoice`: the width of one min-min step (see the module docstring).
    `bands`: the budgets' FLOPs bands (low, high), needed when `budget_share` > 0."""

    def __init__(
        self,
        program,
        law: str = "uniform",
        budget_share: float = 0.0,
        bands: Sequence[tuple[float, float]] = (),
    ):
        if law not in SAMPLINGS:
            raise WidthcError(f"--sampling {law} is not a sampling law: choose one of "
                              f"{', '.join(SAMPLINGS)}")  # fmt: skip
        if budget_share > 0 and not bands:
            raise WidthcError(
                "--budget-sampling needs the budgets: give them with --flops (widthc slim)"
            )
        self.program, self.law, self.budget_share = program, law, budget_share
        self.bands = [(float(lo), float(hi)) for lo, hi in bands]
        self.space = program.space

    def __call__(self, gen: torch.Generator) -> WidthChoice:
        if self.law == "uniform" and self.budget_share == 0:
            return sample_width(self.program, gen)  # eq. 1, the very draws of earlier versions
        in_band = self.budget_share > 0 and float(torch.rand((), generator=gen)) < self.budget_share
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=gen)))
        if in_band:
            lo, hi = self.bands[int(rng.integers(len(self.bands)))]
            return self._at(self._shape(rng), lo, hi, rng)
        if self.law == "flops":
            lo, hi = self.program.flops_many(np.stack([self.space.smallest(), self.space.full()]))
            return self._at(self._shape(rng), lo, hi, rng)
        return self.space.choice(self._shape(rng))

    def _shape(self, rng: np.random.Generator) -> np.ndarray:
        """A width of the law's shape: arcsine shares for `extremes`, log-uniform bins for
        `log`, uniform bins otherwise."""
        n = self.space.n_bins
        u = rng.random(len(n))
        if self.law == "extremes":
            u = np.sin(0.5 * math.pi * u) ** 2  # Beta(1/2, 1/2): mass at both ends
        elif self.law == "log":  # (n + 1)^u - 1 in [0, n): bin count k with P ~ log((k+1)/k)
            u = ((n + 1.0) ** u - 1.0) / n
        return np.minimum((u * n).astype(np.int64) + 1, n)

    def _at(self, width: np.ndarray, lo: float, hi: float, rng) -> WidthChoice:
        """`width` moved to a FLOPs target uniform in [lo, hi]: scaled down keeping its shape if
        over, then grown bin by bin while it fits (space.repair); grown on towards `hi` if that
        left it under `lo`."""
        flops = self.program.flops_many
        floor = float(flops(self.space.smallest()[None])[0])
        width = sp.repair(self.space, flops, width, max(rng.uniform(lo, hi), floor), rng)
        if flops(width[None])[0] < lo:
            width = sp.repair(self.space, flops, width, max(hi, floor), rng)
        return self.space.choice(width)


class WidthSet:
    """`sampler(gen) -> WidthChoice`: one of `widths` (distinct, in order), uniformly."""

    def __init__(self, widths: Sequence[WidthChoice]):
        self.widths = list(dict.fromkeys(widths))
        if not self.widths:
            raise WidthcError("a width set to train needs at least one width")

    def __call__(self, gen: torch.Generator) -> WidthChoice:
        return self.widths[int(torch.randint(len(self.widths), (), generator=gen))]
