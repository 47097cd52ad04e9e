"""Scoring sub-networks of a supernet: batch-norm recalibration, a metric, and max-max (eq. 13).

The supernet's running statistics are shared by every sub-network that trained them, so they
belong to none: before a sub-network is scored its statistics are re-estimated on a few training
batches (a cumulative average, `momentum=None`, train mode, no gradients), then its metric is
measured on validation data in eval mode (DESIGN §8). Scoring runs on `Supernet.isolated`: the
sub-network's weights are gathered once for all its batches and every buffer is a private copy,
so the supernet is bit-for-bit unchanged by any number of scorings, and the random state too
(calibration may run dropout: it runs under a fixed seed, so a score does not depend on when it
was computed).

With a `Tuning` (`--score-steps`, widthc/tuning.py) each sub-network is scored once it has its
own weights: a private copy of it (widthc.slim) is trained a few SGD steps, the same steps for
every width, before the recalibration; the supernet is unchanged all the same.

A width's score is the best of its candidates' (max-max); the winning candidate is the one that
is exported. With `--score-candidates best` (a `shared` scorer) only the candidate that scores
best on the supernet's shared weights is fine-tuned, and its tuned score is the width's.
`MaxMax` caches scores by width (bin counts), across budgets and searchers, and scores every
width with one `Precision` (autocast, memory format): the same way in every searcher and
budget. On an accelerator the supernet runs masked (one set of shapes for every
width) and the metric stays on the device until the width's score is complete.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data import default_collate as _collate

from widthc.ir import WidthChoice
from widthc.precision import Precision
from widthc.supernet import Supernet, device_of
from widthc.tuning import Tuning

__all__ = [
    "Chance",
    "MaxMax",
    "Metric",
    "Score",
    "accuracy",
    "against_chance",
    "batch",
    "batches",
    "evaluate",
    "measure",
    "recalibrate",
    "score_choice",
]

# (output, target) -> the batch's mean (a number or a 0-dim tensor), higher is better
Metric = Callable[[torch.Tensor, torch.Tensor], "float | torch.Tensor"]


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of a batch of logits (a 0-dim tensor on their device)."""
    return (output.argmax(-1) == target).float().mean()


def metric_name(metric: Metric | None) -> str:
    """What reports call a metric: 'top-1 accuracy' (the default), else the first line of its
    docstring (without the full stop), else its name with '()'."""
    if metric is None or metric is accuracy:
        return "top-1 accuracy"
    doc = (getattr(metric, "__doc__", None) or "").strip().splitlines()
    if doc and doc[0].strip():
        return doc[0].strip().rstrip(".")
    return f"{getattr(metric, '__name__', type(metric).__name__)}()"


def negative_loss(loss_fn: Callable) -> Metric:
    """A loss as a metric (higher is better): minus its batch mean. Continuous, so widths
    that tie on accuracy still differ."""

    def metric(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """minus the validation loss"""
        return -loss_fn(output, target).detach().float()  # on the device: no host read

    return metric


@dataclass(frozen=True)
class Chance:
    """A model's metric beside its chance level: the same outputs scored against targets
    shuffled within each batch (mean and standard deviation over the shuffles)."""

    value: float
    chance: float
    spread: float

    @property
    def trained(self) -> bool:
        """Above chance by a tenth of the way to a perfect score (1, for a metric in [0, 1];
        else a tenth of the chance level's size) and by three standard deviations of the
        shuffles: an untrained network's outputs already depend on its inputs, and so on
        their classes, by a few points of accuracy."""
        perfect = 1.0 if 0 <= self.chance <= 1 and self.value <= 1 else None
        margin = 0.1 * (perfect - self.chance if perfect is not None else abs(self.chance))
        return self.value - self.chance > max(margin, 3 * self.spread)

    def to_json(self) -> dict:
        return {"value": self.value, "chance": self.chance, "spread": self.spread,
                "trained": self.trained}  # fmt: skip


@torch.no_grad()
def against_chance(
    model: torch.nn.Module, batches: Iterable, metric: Metric = None, shuffles: int = 20, seed=0
) -> Chance:
    """`metric` (default top-1 accuracy) of `model` in eval mode on (inputs, targets) `batches`
    (batch-size weighted mean), and its chance level."""
    metric = metric or accuracy
    device = device_of(model)
    was_training = model.training
    model.eval()
    try:
        seen = [(model(x.to(device)), y.to(device)) for x, y in batches]
    finally:
        model.train(was_training)
    n = sum(len(y) for _, y in seen)
    mean = lambda pairs: sum(float(metric(o, y)) * len(y) for o, y in pairs) / max(n, 1)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    chance = [
        mean((o, y[torch.randperm(len(y), generator=gen).to(y.device)]) for o, y in seen)
        for _ in range(shuffles)
    ]
    mu = sum(chance) / len(chance)
    sd = (sum((c - mu) ** 2 for c in chance) / max(len(chance) - 1, 1)) ** 0.5
    return Chance(mean(seen), mu, sd)


@dataclass(frozen=True)
class Score:
    """A width's max-max score: the best candidate's metric, which candidate, and all of them.
    With `shared` (--score-candidates best): every candidate's shared-weight score, of which
    `candidate` is the best and the only one tuned; the others' `candidates` are None."""

    value: float
    candidate: int
    candidates: tuple[float | None, ...]
    shared: tuple[float, ...] | None = None

    def to_json(self) -> dict:
        shared = {"shared_candidates": list(self.shared)} if self.shared is not None else {}
        return {
            "score": self.value,
            "candidate": self.candidate,
            "candidates": list(self.candidates),
            **shared,
        }

    @staticmethod
    def from_json(data: dict) -> Score:
        """A score as search.json holds it (older files hold no `candidates`)."""
        values = tuple(data.get("candidates", (data["score"],)))
        shared = data.get("shared_candidates")
        shared = tuple(shared) if shared is not None else None
        return Score(float(data["score"]), int(data["candidate"]), values, shared)


def score_choice(
    net: Supernet,
    choice: WidthChoice,
    calibration: Sequence[torch.Tensor],
    val: Iterable,
    metric: Metric | None = None,
    seed: int = 0,
    clock: dict | None = None,
    timer=time.perf_counter,
    precision: Precision | None = None,
    tuning: Tuning | None = None,
) -> float:
    """The metric of one sub-network on `val` ((input, target) batches), after re-estimating its
    batch-norm statistics on the `calibration` input batches (and, with `tuning`, after training
    a private copy of it). The supernet is unchanged. `clock` accumulates the seconds (of
    `timer`) spent in "tuning", "calibration" and "validation"."""
    metric = metric or accuracy
    device = device_of(net)
    clock = clock if clock is not None else {}
    precision = precision or Precision()

    def moved(x):
        return precision.inputs(x.to(device, non_blocking=True))

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        tuned = timer()
        with _network(net, choice, tuning) as gm, precision.autocast():
            t0 = timer()
            if calibration:
                recalibrate(gm, [moved(x) for x in calibration])
            t1 = timer()
            gm.eval()
            total, n = 0.0, 0
            for x, y in val:
                value = metric(gm(moved(x)), y.to(device, non_blocking=True))
                total = total + value * len(y)  # a tensor stays on the device
                n += len(y)
            total = float(total)
            t2 = timer()
    if tuning is not None:
        clock["tuning"] = clock.get("tuning", 0.0) + t0 - tuned
    clock["calibration"] = clock.get("calibration", 0.0) + t1 - t0
    clock["validation"] = clock.get("validation", 0.0) + t2 - t1
    return total / max(n, 1)


@contextlib.contextmanager
def _network(net: Supernet, choice: WidthChoice, tuning: Tuning | None):
    """The sub-network to score: the supernet's own (isolated), or a fine-tuned private copy."""
    if tuning is None:
        with net.isolated(choice) as gm:
            yield gm
        return
    small = tuning.tuned(net, choice)
    with torch.inference_mode():
        yield small


class MaxMax:
    """score(width) -> Score: every candidate sub-network of the width (the supernet's offset)
    is recalibrated and measured; the width scores as its best candidate (eq. 13). Cached by
    the width's bin counts. `calibration`: input batches; `val`: (input, target) batches, a list
    or anything iterable more than once (a DataLoader); `tuning`: fine-tune each sub-network
    alone before it is scored (widthc/tuning.py); `shared` (with `tuning`): max-max on the
    same supernet untuned, and only the candidate it scores best is tuned and scored
    (--score-candidates best: one fine-tuning per width)."""

    def __init__(
        self,
        net: Supernet,
        calibration: Sequence[torch.Tensor],
        val: Iterable,
        metric: Metric | None = None,
        seed: int = 0,
        timer=time.perf_counter,
        precision: Precision | None = None,
        tuning: Tuning | None = None,
        shared: MaxMax | None = None,
    ):
        self.net, self.calibration, self.val = net, list(calibration), val
        self.tuning, self.shared = tuning, shared
        self.metric, self.seed, self.timer = metric, seed, timer
        self.precision = precision or Precision()
        self.cache: dict[tuple, Score] = {}
        self.scored = 0  # candidate sub-networks actually evaluated (cache misses)
        self.clock: dict[str, float] = {}  # seconds in calibration and validation

    def __call__(self, width: WidthChoice) -> Score:
        key = width.ks()
        if key not in self.cache:
            cands = self.net.candidates(width)
            if self.shared is not None and len(cands) > 1:
                self.cache[key] = self._shared_best(width, cands)
                return self.cache[key]
            values = tuple(self.candidate(c) for c in cands)
            best = max(range(len(values)), key=lambda j: (values[j], -j))  # first best on ties
            self.cache[key] = Score(values[best], best, values)
        return self.cache[key]

    def _shared_best(self, width: WidthChoice, cands: list) -> Score:
        """`width` scored by its shared-weight winner alone, tuned (--score-candidates best)."""
        shared = self.shared(width)
        value = self.candidate(cands[shared.candidate])
        tuned = tuple(value if j == shared.candidate else None for j in range(len(cands)))
        return Score(value, shared.candidate, tuned, shared.candidates)

    def on(self, space):
        """The score function a searcher takes: a width's bin counts in `space` (a row of
        `program.space`) -> (score, winning candidate)."""

        def score(width) -> tuple[float, int]:
            s = self(space.choice(width))
            return s.value, s.candidate

        return score

    def candidate(self, choice: WidthChoice) -> float:
        """The score of one sub-network (not cached)."""
        self.scored += 1
        return score_choice(
            self.net, choice, self.calibration, self.val, self.metric, self.seed, self.clock,
            self.timer, self.precision, self.tuning,
        )  # fmt: skip

    def preload(self, widths: Iterable[tuple[WidthChoice, Score]]) -> None:
        """Scores known already (a resumed search): they are not computed again."""
        for width, score in widths:
            self.cache[width.ks()] = score


@torch.no_grad()
def evaluate(
    net: Supernet,
    choice: WidthChoice,
    data: Dataset,
    batch_size: int = 256,
    calibration: list | None = None,
    metric: Metric | None = None,
    precision: Precision | None = None,
) -> float:
    """`metric` (default: top-1 accuracy) of `choice` on `data`, in eval mode, after
    re-estimating batch-norm statistics on the `calibration` (input, label) batches. The
    supernet is unchanged."""
    val = (
        batch(data, torch.arange(start, min(start + batch_size, len(data))))
        for start in range(0, len(data), batch_size)
    )
    calib = [x for x, _ in calibration or []]
    return score_choice(net, choice, calib, val, metric, precision=precision)


def recalibrate(net: torch.nn.Module, batches: list, seed: int | None = None) -> None:
    """Re-estimate every batch norm's running statistics for the current choice: reset, then a
    cumulative average over `batches` in training mode. With `seed`, under that random seed
    (dropout in training mode) and leaving the random state as it was."""
    if seed is not None:
        device = device_of(net)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return recalibrate(net, batches)
    norms = [
        m
        for m in net.modules()
        if hasattr(m, "reset_running_stats") and getattr(m, "track_running_stats", False)
    ]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
        net.train()
        for x in batches:
            net(x)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom


def batch(data: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, labels) at positions `idx` of a dataset of (input, label) pairs."""
    if isinstance(data, TensorDataset):
        x, y = data.tensors[0][idx], data.tensors[1][idx]
    else:
        x, y = _collate([data[int(i)] for i in idx])
    y = torch.as_tensor(y)
    return x, y if y.is_floating_point() else y.long()  # class labels as long, targets as given


def batches(data, order: torch.Tensor, n: int, count: int | None = None) -> list:
    """(inputs, targets) batches of `data` in `order`: indexed from tensors, loaded by a
    DataLoader otherwise."""
    starts = list(range(0, len(order), n))[:count]
    if isinstance(data, TensorDataset):
        return [batch(data, order[s : s + n]) for s in starts]
    chunks = [order[s : s + n].tolist() for s in starts]
    return [(x, torch.as_tensor(y)) for x, y in DataLoader(data, batch_sampler=chunks)]


@torch.no_grad()
def measure(model: torch.nn.Module, data: Dataset, metric: Metric, device) -> float:
    """The metric of `model` on `data` in eval mode (batch-size weighted mean)."""
    model = model.to(device).eval()
    total, n = 0.0, 0
    for x, y in batches(data, torch.arange(len(data)), 256):
        total += float(metric(model(x.to(device)), y.to(device))) * len(y)
        n += len(y)
    return total / max(n, 1)
