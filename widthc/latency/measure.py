"""Measuring widths of one program on one runtime, and the latency model fitted to them.

Every width is slimmed (`widthc.slim`) and run for real: exported to ONNX for an onnxruntime
runtime, as the PyTorch module for a torch one, on SESSIONS copies of it (each copy's place in
memory moves its latency by a few percent on a busy machine; their mean is the width's).
Widths are timed in chunks, side by side (`widthc.latency.timing`), and every chunk also times
the full model: each width's latency is taken relative to the full model's in the same chunk,
then scaled by the full model's median over all chunks, so that a machine that was busier
during one chunk than another does not tilt the model. The measurements are cached (`widthc.latency.cache`): a second run of the same
model, bins and runtime on the same machine measures nothing.

Widths measured to fit the model: the full and the smallest width, the same share of channels
in every group at 25%, 50% and 75%, then widths drawn uniformly over bins (seeded).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import widthc
from widthc import space as sp
from widthc.export import export_onnx
from widthc.latency import cache, timing
from widthc.latency.model import LatencyModel, Measurement, fit_block
from widthc.latency.runtimes import Runtime
from widthc.loop import Bar

__all__ = [
    "CHUNK", "NOISE", "Measurer", "on_budget_scale", "over_budget", "plan", "side_by_side",
]  # fmt: skip

CHUNK = 8  # widths timed side by side with the full model (each one's files are in memory)
SESSIONS = 2  # copies of each model timed
ROUND_MS = 1000.0  # timing per copy and chunk: rounds = this / the full model's ms ...
ROUNDS = (7, 301)  # ... within these bounds
NOISE = 0.05  # a measured latency this much over its budget is within the measurement's noise


def plan(program, samples: int, seed: int = 0) -> list[np.ndarray]:
    """The widths measured to fit a model: full, smallest, uniform at 25/50/75%, random."""
    space = program.space
    widths = [space.full(), space.smallest(), *sp.at_ratio(space, [0.25, 0.5, 0.75])]
    rng = np.random.default_rng(seed)
    while len(widths) < samples:
        widths.append(rng.integers(1, space.n_bins + 1))
    return widths[:samples]


class Measurer:
    """The measurements of one program's widths on one runtime (cached on disk)."""

    def __init__(self, program, runtime: Runtime, cache_root: Path, echo=print, progress=True):
        self.program, self.runtime = program, runtime
        self.echo, self.progress = echo, progress
        folder = cache.folder(cache_root, runtime)
        self.file = folder / f"{cache.model_key(program)}-{program.binning}.json"
        data = cache.read(self.file) or {}
        self.records: list[dict] = [r for r in data.get("measurements", []) if _valid(r)]
        self.rounds: int | None = data.get("rounds")
        self._full, self._folder = None, None  # the full model, made once (`_reference`)

    # --- what was measured ------------------------------------------------------------------

    def full_ms(self, records: list[dict] | None = None) -> float:
        """The full model's latency: the median of its medians over every chunk (of
        `records`, default all)."""
        return statistics.median(r["reference"] for r in records or self.records)

    def measured(self, records: list[dict] | None = None) -> list[Measurement]:
        """Every width measured (of `records`, default all), in ms relative to the full
        model's (see the module doc)."""
        records = records or self.records
        full = self.full_ms(records)
        return [Measurement(tuple(r["counts"]), r["ms"] / r["reference"] * full) for r in records]

    def ms(self, width: np.ndarray) -> float | None:
        key = tuple(float(c) for c in self.program.space.counts(width)[0])
        found = [m.ms for m in self.measured() if m.counts == key]
        return statistics.median(found) if found else None

    # --- measuring ------------------------------------------------------------------------

    def anchors(self) -> tuple[float, float]:
        """The measured latency (ms) of the smallest width and of the full model."""
        space = self.program.space
        self.measure([space.smallest()], "the smallest width and the full model")
        return self.ms(space.smallest()), self.full_ms()

    def model(self, samples: int, block: int = 1) -> LatencyModel:
        """The latency model fitted to `samples` measured widths (measuring those not yet),
        channels counted in the runtime's `block` (or a smaller one: `fit_block`); those widths alone, so that widths measured
        later (a search's finalists) do not move it: a run's budgets stay where they were."""
        widths = plan(self.program, samples)
        self.measure(widths, f"{samples} widths (once, then cached)")
        keys = {tuple(float(c) for c in row) for row in self.program.space.counts(np.stack(widths))}
        planned = [r for r in self.records if tuple(r["counts"]) in keys]
        return fit_block(self.program, self.measured(planned), block, self.runtime.describe())

    def measure(self, widths: list[np.ndarray], what: str, again: bool = False) -> None:
        """Measure those of `widths` not measured yet (`again`: all of them, once more); save
        them to the cache."""
        space = self.program.space
        known = set() if again else {tuple(r["counts"]) for r in self.records}
        keys: dict = {}  # each distinct width once (the first of equal channel counts)
        for w in widths:
            keys.setdefault(tuple(float(c) for c in space.counts(w)[0]), np.asarray(w))
        todo = {key: w for key, w in keys.items() if key not in known}
        if not todo:
            return
        cached = f" ({len(keys) - len(todo)} of them cached)" if len(todo) < len(keys) else ""
        self.echo(
            f"latency: measuring {what} of {self.program.traced.name}{cached} on "
            f"{self.runtime.describe()} ({self.runtime.clock} clock); cache {self.file}"
        )
        pending = list(todo.items())
        with Bar(
            ["latency", "{task.fields[rate]} widths/s"], len(pending), 0, self.progress
        ) as bar:
            for start in range(0, len(pending), CHUNK):
                self._chunk(pending[start : start + CHUNK])
                bar.move(min(start + CHUNK, len(pending)))
                cache.write(self.file, self._json())

    def _chunk(self, chunk: list) -> None:
        program = self.program
        with tempfile.TemporaryDirectory(prefix="widthc-latency-") as tmp:
            models = [self._reference(), *(widthc.slim(program, program.space.choice(w))
                                           for _, w in chunk)]  # fmt: skip
            ms = _timed(self.runtime, models, program.example_inputs, Path(tmp), self)
        load = timing.load_average()
        for (key, _), value in zip(chunk, ms[1:]):
            self.records.append(
                {"counts": list(key), "ms": value, "reference": ms[0], "load": load,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            )  # fmt: skip

    def _reference(self):
        """The full model every chunk times afresh (on new sessions or copies), slimmed and,
        for an onnxruntime runtime, exported once (not again in every chunk: a ninth of a
        chunk's exports)."""
        if self._full is None:
            program = self.program
            full = widthc.slim(program, program.space.choice(program.space.full()))
            if self.runtime.engine == "onnxruntime":
                self._folder = tempfile.TemporaryDirectory(prefix="widthc-latency-full-")
                path = Path(self._folder.name) / "full.onnx"
                export_onnx(full.cpu().eval(), program.example_inputs, path)
                full = path
            self._full = full
        return self._full

    def _json(self) -> dict:
        return {
            "model": self.program.traced.name,
            "binning": self.program.binning,
            "runtime": self.runtime.describe(),
            "clock": self.runtime.clock,
            "rounds": self.rounds,
            "measurements": self.records,
        }


def _valid(record) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("counts"), list)
        and all(isinstance(record.get(k), int | float) for k in ("ms", "reference"))
        and record["ms"] > 0
        and record["reference"] > 0
    )


def side_by_side(runtime: Runtime, models: dict, example_inputs) -> dict[str, float]:
    """The ms of each model (a module, or an ONNX file for an onnxruntime runtime), timed side
    by side on `runtime` as a width is measured (SESSIONS copies each)."""
    with tempfile.TemporaryDirectory(prefix="widthc-latency-") as tmp:
        ms = _timed(runtime, list(models.values()), example_inputs, Path(tmp))
    return dict(zip(models, ms))


def _timed(runtime: Runtime, models: list, example_inputs, folder: Path, rounds=None) -> list:
    """The mean over SESSIONS copies of each model's median ms, the copies made in a random
    order (a copy made early in a process ran up to 10% slower here) and timed side by side.
    `rounds`: an object whose `.rounds` keeps the number of rounds once chosen."""
    makers = [runtime.prepare(m, example_inputs, folder) for m in models]
    copies = [i for i in range(len(models)) for _ in range(SESSIONS)]
    copies = [copies[j] for j in np.random.default_rng(len(copies)).permutation(len(copies))]
    flat = [(i, makers[i]()) for i in copies]
    n = getattr(rounds, "rounds", None)
    if n is None:  # from the first model's latency
        first = timing.medians([next(r for i, r in flat if i == 0)], 3, runtime.clock)[0]
        n = int(np.clip(math.ceil(ROUND_MS / max(first, 1e-3)), *ROUNDS))
        if rounds is not None:
            rounds.rounds = n
    ms = timing.medians([run for _, run in flat], n, runtime.clock)
    per_model = [[] for _ in models]
    for (i, _), value in zip(flat, ms):
        per_model[i].append(value)
    return [float(np.mean(v)) for v in per_model]


def on_budget_scale(slim_ms: float, original_ms: float, full_ms: float) -> float:
    """A slimmed model's measured latency on the scale its budget is on: its share of the
    original's (timed side by side) times the latency model's full-model latency, as every
    width of the model is measured; a machine busier now than then does not move it."""
    return slim_ms / original_ms * full_ms


def over_budget(measured: float, budget: float | None) -> float | None:
    """How far a measured latency (`on_budget_scale`) is over its budget (0.15: 15% over);
    None when it is not over or there is no latency budget."""
    if budget is None or measured <= budget:
        return None
    return measured / budget - 1
