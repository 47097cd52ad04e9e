"""A latency model of a width: per-layer costs fitted to measured latencies.

    latency(width) = overhead + sum over layers of a_layer * MACs_layer(width)
                     + m * (elements every node writes)(width)

MACs and elements are counted on channel counts rounded up to a channel block (a runtime that
computes in blocks of B channels pays for whole blocks; B is measured, see
`widthc.latency.align`). Whether a model's layers pay for whole blocks is itself measured: the
runtime's block is found on 2-D convolutions, and a model whose layers run on other kernels (the
1-D convolutions of examples/mnist1d_cnn.py) does not pay for it. `fit_block` fits every block
that divides the runtime's and keeps a smaller one only where the widths measured say so (its
leave-one-out error clearly below the runtime block's). The coefficients are fitted to the end-to-end latencies of sampled
widths by non-negative least squares on relative errors, each layer's coefficient pulled toward
one shared by its kind (dense: channels x channels, like a convolution or a linear layer; per
channel: a depthwise convolution), so that a few dozen measured widths fit a model of a hundred
layers. The fitted model is itself a cost table over the program's channel layouts: costing a
width is what `flops_many` does, and every layer's share can be read off (`per_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from widthc.errors import WidthcError
from widthc.ir import WidthChoice
from widthc.passes.flops import CostTable

__all__ = ["SHRINK", "LatencyModel", "Measurement", "fit", "fit_block", "nnls"]

SHRINK = 0.1  # how strongly a layer's coefficient is pulled toward its kind's (standardised)
CLEARLY = 0.8  # a smaller block is kept when its leave-one-out error is below this x the block's
DENSE, PER_CHANNEL = "dense", "per-channel"


def kind(n_factors: int) -> str:
    """A FLOPs term over two or more channel layouts is dense (channels in x channels out)."""
    return DENSE if n_factors >= 2 else PER_CHANNEL


@dataclass(frozen=True)
class Measurement:
    """One measured width: channels per block of every group, and its median latency (ms)."""

    counts: tuple[float, ...]
    ms: float

    def to_json(self) -> dict:
        return {"counts": list(self.counts), "ms": self.ms}

    @staticmethod
    def from_json(data: dict) -> Measurement:
        return Measurement(tuple(float(c) for c in data["counts"]), float(data["ms"]))


class LatencyModel:
    """Predicted latency (ms) of widths of one program on one runtime.

    `coefficients`: ms per MAC of every (layer, kind); `memory`: ms per element written;
    `overhead`: ms of a forward pass that no width changes; `block`: the runtime's channel block.
    """

    def __init__(
        self,
        program,
        coefficients: dict[tuple[str, str], float],
        memory: float,
        overhead: float,
        block: int = 1,
        runtime: str = "",
    ):
        self.program, self.coefficients = program, dict(coefficients)
        self.memory, self.overhead, self.block, self.runtime = memory, overhead, block, runtime
        macs = program.flops_table.weighted(lambda o, n: self.coefficients.get((o, kind(n)), 0.0))
        acts = program.activations_table.weighted(lambda o, n: memory)
        self.table = _joined(macs, acts)
        space = program.space
        sizes = np.array([g.block_size for g in program.groups], dtype=np.float64)
        self._many = self.table.partial(space.ids, sizes, block)

    def latency_many(self, widths: np.ndarray) -> np.ndarray:
        """Predicted ms of every row of `widths` (bins per searchable group, `space.ids` order;
        the left-most pattern)."""
        return self.overhead + self._many(self.program.space.searchable_counts(widths))

    def latency_many_counts(self, counts: np.ndarray) -> np.ndarray:
        """Predicted ms of each row of channel counts per block of every group."""
        return self.overhead + self.table.evaluate_many(counts, self.block)

    def latency(self, choice: WidthChoice | None = None) -> float:
        return float(self.latency_many_counts(self._counts(choice))[0])

    def per_layer(self, choice: WidthChoice | None = None) -> dict[str, float]:
        """Predicted ms of every layer (the overhead is not any layer's)."""
        return self.table.per_owner(self._counts(choice)[0], self.block)

    def sensitivity(self) -> np.ndarray:
        """Per searchable group (`space.ids` order), the ms one more channel adds with every
        other group at full width (eq. 7's FLOPs sensitivity, in ms): its last bin's ms over
        that bin's channels (per block); NaN for a group of one bin."""
        space = self.program.space
        full, idx = space.full(), np.arange(space.size)
        rows = np.repeat(full[None], space.size + 1, axis=0)
        rows[idx + 1, idx] = np.maximum(full - 1, 1)
        ms = self.latency_many(rows)
        channels = space.channels[idx, full] - space.channels[idx, rows[idx + 1, idx]]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(channels > 0, (ms[0] - ms[1:]) / channels, np.nan)

    def for_program(self, program) -> LatencyModel:
        """The same fitted costs on another program of the same layers (a later stage of a
        multi-stage search: the model slimmed and analysed again, its layers named alike)."""
        return LatencyModel(
            program, self.coefficients, self.memory, self.overhead, self.block, self.runtime
        )

    def _counts(self, choice: WidthChoice | None) -> np.ndarray:
        return self.program.counts(choice)[None, :]

    def to_json(self) -> dict:
        return {
            "runtime": self.runtime,
            "block": self.block,
            "overhead_ms": self.overhead,
            "ms_per_element": self.memory,
            "ms_per_mac": [[o, k, c] for (o, k), c in self.coefficients.items()],
        }

    @staticmethod
    def from_json(program, data: dict) -> LatencyModel:
        coefficients = {(o, k): float(c) for o, k, c in data["ms_per_mac"]}
        return LatencyModel(
            program, coefficients, float(data["ms_per_element"]), float(data["overhead_ms"]),
            int(data["block"]), data.get("runtime", ""),
        )  # fmt: skip


def fit(
    program,
    measurements: Sequence[Measurement],
    block: int = 1,
    runtime: str = "",
    shrink: float = SHRINK,
) -> LatencyModel:
    """The model whose predictions best match `measurements` in relative error."""
    if len(measurements) < 3:
        raise WidthcError("a latency model needs at least 3 measured widths")
    counts = np.array([m.counts for m in measurements], dtype=np.float64)
    if counts.shape[1] != len(program.groups):
        raise WidthcError("these latency measurements were made on a model with other groups")
    ms = np.array([m.ms for m in measurements], dtype=np.float64)
    flops = program.flops_table
    keys = list(dict.fromkeys((owner, kind(n)) for owner, n in flops.owners()))
    onehot = np.zeros((len(flops.terms), len(keys)))
    index = {k: i for i, k in enumerate(keys)}
    for j, (_, idx, owner) in enumerate(flops.terms):
        onehot[j, index[(owner, kind(len(idx)))]] = 1.0
    per_layer = flops.term_values(counts, block) @ onehot  # [n, layers]
    memory = program.activations_table.evaluate_many(counts, block)
    data = np.column_stack([np.ones(len(ms)), memory, per_layer]) / ms[:, None]
    scale = np.sqrt((data**2).mean(axis=0))
    used = scale > 0
    kinds = [k for _, k in keys]
    names = sorted(set(kinds))
    # columns: overhead, memory, every layer, every kind (in the penalty rows only)
    n_cols = 2 + len(keys) + len(names)
    a = np.zeros((len(ms) + len(keys), n_cols))
    a[: len(ms), : 2 + len(keys)] = np.where(used, data / np.where(used, scale, 1.0), 0.0)
    kind_scale = {k: scale[2:][[i for i, x in enumerate(kinds) if x == k]].mean() for k in names}
    weight = np.sqrt(shrink * len(ms))
    for i, k in enumerate(kinds):  # s_L * (a_L - a_kind) = 0, standardised
        if used[2 + i]:
            a[len(ms) + i, 2 + i] = weight
            a[len(ms) + i, 2 + len(keys) + names.index(k)] = -weight * scale[2 + i] / kind_scale[k]
    b = np.concatenate([np.ones(len(ms)), np.zeros(len(keys))])
    x = nnls(a, b)[: 2 + len(keys)] / np.where(used, scale, 1.0)
    coefficients = {key: float(c) for key, c in zip(keys, x[2:]) if c > 0}
    return LatencyModel(program, coefficients, float(x[1]), float(x[0]), block, runtime)


def fit_block(
    program, measurements: Sequence[Measurement], block: int = 1, runtime: str = ""
) -> LatencyModel:
    """`fit` at the channel block the measurements support: the runtime's `block`, or a smaller
    power of two dividing it whose leave-one-out median relative error is CLEARLY below the
    block's (the layers do not pay for whole blocks of `block`); the same block where the
    measured channel counts cannot tell them apart."""
    counts = np.array([m.counts for m in measurements], dtype=np.float64)
    candidates = [b for b in (2**i for i in range(block.bit_length())) if block % b == 0]
    varying = counts[:, counts.min(axis=0) < counts.max(axis=0)]
    if len(candidates) < 2 or len(measurements) < 4 or not (varying % block).any():
        return fit(program, measurements, block, runtime)
    errors = {b: _loo_error(program, measurements, b) for b in candidates}
    best = min(errors, key=errors.get)
    chosen = best if errors[best] < CLEARLY * errors[block] else block
    return fit(program, measurements, chosen, runtime)


def _loo_error(program, measurements: Sequence[Measurement], block: int) -> float:
    """The median relative error of each measured width predicted by the model fitted to the
    others."""
    errors = []
    for i, m in enumerate(measurements):
        model = fit(program, [x for j, x in enumerate(measurements) if j != i], block)
        errors.append(abs(model.latency_many_counts(np.array([m.counts]))[0] / m.ms - 1))
    return float(np.median(errors))


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method)."""
    m, n = a.shape
    tol = 10 * np.finfo(float).eps * np.abs(a).sum(axis=0).max(initial=0) * max(m, n)
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(max_iter or 3 * n):
        w = a.T @ (b - a @ x)
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            bad = passive & (z <= tol)
            gap = x[bad] - z[bad]
            step = np.min(np.divide(x[bad], gap, out=np.zeros_like(gap), where=gap > 0))
            x = x + step * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
    return x


def _joined(first: CostTable, second: CostTable) -> CostTable:
    """One table holding the terms of both (over the same groups)."""
    table = CostTable(first.n_groups)
    for source in (first, second):
        for coef, idx, owner in source.terms:
            table.add(coef, [source.layouts[i] for i in idx], owner)
    return table.compile()
