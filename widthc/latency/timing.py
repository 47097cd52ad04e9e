"""Timing runs side by side: every round runs each model once, in a new random order (seeded),
after a warm-up, so that a machine that slows down or speeds up during the measurement shifts
every model alike, and no model always follows the same one (what ran before leaves the caches
in its own state); the medians (and their ratios) are what is reported.

On a CPU with one thread the clock is the calling thread's CPU time (`time.thread_time`): the
latency the model would have on a core of its own, which other processes on a shared machine
(here: two cores and several engineers) barely move, where the wall clock of the same runs
varied by 2x. Elsewhere the wall clock (`time.perf_counter`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["CLOCKS", "load_average", "medians", "times"]

CLOCKS = {"thread": time.thread_time, "wall": time.perf_counter}
WARMUP = 2


def times(
    runners: Sequence[Callable], rounds: int, clock: str = "wall", seed: int = 0
) -> list[list[float]]:
    """Seconds of every run of each runner: `rounds` rounds after `WARMUP` runs of each, each
    round in an order drawn from `seed`."""
    if rounds < 1:
        raise ValueError(f"timing needs at least one round, got {rounds}")
    now = CLOCKS[clock]
    for run in runners:
        for _ in range(WARMUP):
            run()
    out: list[list[float]] = [[] for _ in runners]
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(len(runners)):
            t0 = now()
            runners[i]()
            out[i].append(now() - t0)
    return out


def medians(runners: Sequence[Callable], rounds: int, clock: str = "wall") -> list[float]:
    """The median milliseconds of each runner, timed side by side (`times`)."""
    return [1e3 * statistics.median(t) for t in times(runners, rounds, clock)]


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the system does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
