"""Budgets: limits on a width's costs, of any kind, met all at once (DESIGN §8).

A budget is one or more limits, each on a cost of a width: FLOPs (multiply-accumulates per
sample), params, or latency (ms on a runtime, predicted by a fitted model, see
widthc.latency). A width meets the budget when it meets every limit. Its *load* is the largest
of its costs over their limits, so a width meets the budget when its load is at most 1; the
search's band, the repair step and the uniform baseline (widthc.space) all read that one
number, with 1 as their budget (`uniform(space, budget.load, 1.0)`), whatever the limits are.

Budgets as text: `parse_budgets` checks the syntax of a comma list once, `parse_budget` gives a
value against the full model's, `budget_specs` pairs budgets of several kinds, `budget_label`
names one in a run (its key in search.json, its folder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from widthc.errors import WidthcError

__all__ = [
    "KINDS", "Budget", "CostMany", "Limit", "budget_label", "budget_specs", "human",
    "parse_budget", "parse_budgets",
]  # fmt: skip

CostMany = Callable[[np.ndarray], np.ndarray]  # widths [B, S] -> a cost [B]

KINDS = ("flops", "params", "latency")
_WORDS = {"flops": "FLOPs", "params": "params", "latency": "latency"}
_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_TIMES = {"MS": 1.0, "US": 1e-3, "S": 1e3}  # to milliseconds (µs is written us)
_EXAMPLES = {
    "flops": "300M, 1.2G, 4.1e9 or 50% (of the full model)",
    "params": "1M, 250K or 50% (of the full model)",
    "latency": "2ms, 500us or 50% (of the full model's measured latency)",
}


@dataclass(frozen=True)
class Limit:
    """One limit of a budget: `kind`, the text the user gave, and its value in the kind's unit
    (MACs per sample, parameters, milliseconds)."""

    kind: str
    text: str
    value: float

    def label(self) -> str:
        return f"{self.kind} {self.text}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "text": self.text, "value": self.value}


class Budget:
    """Limits a width must all meet, with the vectorised cost of each kind (widths -> costs)."""

    def __init__(self, limits: Sequence[Limit], costs: Mapping[str, CostMany]):
        if not limits:
            raise WidthcError("a budget needs at least one limit")
        self.limits = tuple(limits)
        self.costs = {lim.kind: costs[lim.kind] for lim in self.limits}

    @staticmethod
    def of_flops(flops_many: CostMany, flops: float, text: str | None = None) -> Budget:
        return Budget([Limit("flops", text or human(flops), float(flops))], {"flops": flops_many})

    @property
    def label(self) -> str:
        return budget_label({lim.kind: lim.text for lim in self.limits})

    def value(self, kind: str) -> float | None:
        return next((lim.value for lim in self.limits if lim.kind == kind), None)

    def load(self, widths: np.ndarray) -> np.ndarray:
        """The largest cost/limit of each row of `widths`: at most 1 where it meets them all."""
        widths = np.atleast_2d(widths)
        return np.max([self.costs[lim.kind](widths) / lim.value for lim in self.limits], axis=0)

    def check(self, ranges: Mapping[str, tuple[float, float, str]]) -> Budget:
        """Every limit within its kind's reachable range (lo, hi, where measured): one sentence
        stating the range for the first that is not."""
        for lim in self.limits:
            lo, hi, where = ranges[lim.kind]
            if lo <= lim.value <= hi * (1 + 1e-9):
                continue
            head = f"a {_WORDS[lim.kind]} budget of {human(lim.value, lim.kind)} is out of reach"
            if lim.kind == "latency":
                raise WidthcError(
                    f"{head}: the smallest width runs {human(lo, lim.kind)} and the full model "
                    f"{human(hi, lim.kind)}{where}"
                )
            raise WidthcError(
                f"{head}: this model can be slimmed to between {human(lo)} and {human(hi)} "
                f"{_WORDS[lim.kind]}{where}"
            )
        return self

    def toward(self, start: Mapping[str, float], fraction: float, costs=None) -> Budget:
        """Every limit moved from `start[kind]` toward its value by `fraction` (multi-stage
        search, eq. 10), with other cost functions where given (a later stage's program)."""
        limits = [
            Limit(lim.kind, lim.text, start[lim.kind] - (start[lim.kind] - lim.value) * fraction)
            for lim in self.limits
        ]
        return Budget(limits, costs or self.costs)

    def scaled(self, kind: str, factor: float) -> Budget:
        """The same budget with its `kind` limit times `factor`."""
        limits = [Limit(m.kind, m.text, m.value * factor if m.kind == kind else m.value)
                  for m in self.limits]  # fmt: skip
        return Budget(limits, self.costs)

    def to_json(self) -> list[dict]:
        return [lim.to_json() for lim in self.limits]


def parse_budget(text: str, full: float, kind: str = "flops") -> float:
    """A budget's value: FLOPs or params '300M', '1.2G', '4.1e9' or '50%' (of `full`, the full
    model's); latency '2ms', '500us', '0.1s' or '50%' (of `full`, in ms) -> ms."""
    s = _compact(text).replace("µ", "u").upper()
    scale, number = 1.0, s
    if s.endswith("%"):
        scale, number = full / 100, s[:-1]
    elif kind == "latency":
        unit = next((u for u in sorted(_TIMES, key=len, reverse=True) if s.endswith(u)), None)
        scale, number = (_TIMES[unit], s[: -len(unit)]) if unit else (float("nan"), s)
    elif s[-1:] in _UNITS:
        scale, number = _UNITS[s[-1]], s[:-1]
    try:
        value = float(number) * scale
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise WidthcError(
            f"--{kind} '{text}' is not a {_WORDS[kind]} budget: write e.g. {_EXAMPLES[kind]}, "
            f"several separated by commas"
        )
    return value


def _compact(text: str) -> str:
    """'2 ms' -> '2ms': a budget's text without spaces before its unit (a label's parts are
    separated by spaces)."""
    return re.sub(r"(?<=[\d.])\s+(?=[A-Za-zµ%])", "", text.strip())


def parse_budgets(text: str, kind: str = "flops") -> list[str]:
    """'300M, 200M,300M' -> ['300M', '200M']: the budgets of a comma list, first of each, each
    one's syntax checked (its value needs the full model's: `parse_budget`)."""
    texts = list(dict.fromkeys(_compact(t) for t in text.split(",") if t.strip()))
    if not texts:
        raise WidthcError(f"--{kind} is empty: give a budget such as {_EXAMPLES[kind]}")
    for t in texts:
        parse_budget(t, 1.0, kind)
    return texts


def budget_specs(**given: Sequence[str]) -> list[dict[str, str]]:
    """The budgets of a run, each {kind: text}: several budgets of one kind are several runs of
    the search; of several kinds, they pair up in order, and a kind given once joins every
    budget (`--flops 50%,25% --latency 2ms`: two budgets, each under 2 ms)."""
    given = {k: tuple(v) for k, v in given.items() if v}
    unknown = set(given) - set(KINDS)
    if unknown:
        raise WidthcError(f"unknown budget kind {sorted(unknown)[0]}: choose among {KINDS}")
    if not given:
        raise WidthcError(
            "no budget: give --flops (e.g. 300M or 50%), --params (e.g. 1M) or --latency (e.g. 2ms)"
        )
    n = max(len(v) for v in given.values())
    for kind, texts in given.items():
        if len(texts) not in (1, n):
            many = next(k for k, v in given.items() if len(v) == n)
            raise WidthcError(
                f"--{kind} gives {len(texts)} budgets and --{many} {n}: give as many, or one "
                f"--{kind} budget that every --{many} budget also meets"
            )
    return [{k: v[i % len(v)] for k, v in sorted(given.items(), key=_order)} for i in range(n)]


def budget_label(spec: Mapping[str, str]) -> str:
    """A budget's name in a run (its key in search.json, its folder): a FLOPs budget alone is
    its text (`50%`), others name every limit (`latency 2ms`, `flops 50% + latency 2ms`)."""
    if list(spec) == ["flops"]:
        return spec["flops"]
    return " + ".join(f"{kind} {text}" for kind, text in spec.items())


def _order(item) -> int:
    return KINDS.index(item[0])


def human(value: float, kind: str = "flops") -> str:
    """A cost as text, the inverse of `parse_budget` to 4 significant digits: 4.089G, 300M
    (FLOPs, params), 2.31 ms (latency)."""
    if kind == "latency":
        return f"{value:.3g} ms"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{unit}"
    return f"{value:.4g}"
