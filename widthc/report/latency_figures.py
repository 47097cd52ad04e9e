"""The report's latency figures: latency against FLOPs of every scored width (predicted by the
run's latency model; measured for the chosen ones and the original), and the predicted latency
of every layer, full model and chosen widths (beside the paper's figure 4). Drawn only for runs
that model latency (a latency budget, or `--runtime`)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from widthc.report.rundir import RunData
from widthc.space import human

_MAX_LABELS = 80
NO_MODEL = "the run has no latency model (give a latency budget, or --runtime)"


def latency_figure(run: RunData) -> Figure | str:
    """Latency vs FLOPs: the scored widths (predicted), each budget's chosen and uniform width
    (predicted: filled; measured: hollow), the original model (measured), the latency budgets."""
    results = [r for r in run.search.get("results", []) if _has(r)]
    if not results:
        return NO_MODEL
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    budgets = {b.text: b for b in run.budgets}
    original = None
    for i, r in enumerate(results):
        color, text = f"C{i % 10}", r.get("text", "?")
        points = [h for h in r.get("history", []) if _has(h)]
        if points:
            ax.scatter([h["flops"] for h in points], [h["latency"] for h in points], s=10,
                       alpha=0.35, color=color, label=f"{text}: {len(points)} widths")  # fmt: skip
        budget = budgets.get(text)
        measured = budget.latency() if budget else {}
        for which, entry, marker in (("widthc", r, "*"), ("uniform", r.get("uniform", {}), "X")):
            if not _has(entry):
                continue
            ax.scatter(entry["flops"], entry["latency"], marker=marker, s=160, color=color,
                       edgecolors="k", zorder=5, label=f"{text}: {which}, predicted")  # fmt: skip
            if which in measured:
                ax.scatter(entry["flops"], measured[which], marker=marker, s=160,
                           facecolors="none", edgecolors=color, linewidths=1.5, zorder=5,
                           label=f"{text}: {which}, measured")  # fmt: skip
        original = original or measured.get("original")
        if budget is not None and budget.latency_budget():
            ax.axhline(budget.latency_budget(), ls=":", color=color, lw=1)
    flops = next((b.flops()[0] for b in run.budgets if b.flops()[0]), run.analysis.get("flops"))
    if original and flops:
        ax.scatter(flops, original, marker="s", s=80, color="k", zorder=5,
                   label="original, measured")  # fmt: skip
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    ax.set_xlabel("FLOPs per sample")
    ax.set_ylabel(f"latency, ms ({_runtime(run)}; dotted: the budgets)")
    ax.set_title("Latency vs FLOPs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def layers_figure(run: RunData) -> Figure | str:
    """Predicted ms of every layer: the full model, and each budget's chosen width."""
    model = run.search.get("latency_model") or {}
    full = model.get("full_by_layer") or {}
    results = [r for r in run.search.get("results", []) if r.get("latency_by_layer")]
    if not full or not results:
        return NO_MODEL
    layers = list(full)
    fig = Figure(figsize=(min(30, max(8, 0.16 * len(layers))), 5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(layers))
    width = 0.8 / (1 + len(results))
    ax.bar(x, [full[k] for k in layers], width, color="0.6", label="full model")
    for i, r in enumerate(results, 1):
        ms = r["latency_by_layer"]
        ax.bar(x + i * width, [ms.get(k, math.nan) for k in layers], width, color=f"C{i - 1}",
               label=f"{r.get('text', '?')}: chosen width")  # fmt: skip
    step = max(1, math.ceil(len(layers) / _MAX_LABELS))
    ticks = list(range(0, len(layers), step))
    ax.set_xticks(ticks, [layers[t] for t in ticks], rotation=90, fontsize=6)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_xlabel("layer, in graph order")
    ax.set_ylabel("predicted latency, ms")
    overhead = model.get("overhead_ms")
    ax.set_title(
        f"Latency per layer, predicted ({_runtime(run)}"
        + (f"; plus {human(overhead, 'latency')} that no width changes)" if overhead else ")")
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _has(entry: dict) -> bool:
    return isinstance(entry.get("flops"), int | float) and isinstance(
        entry.get("latency"), int | float
    )


def _runtime(run: RunData) -> str:
    return (run.search.get("latency_model") or {}).get("runtime") or "onnxruntime-cpu"
