"""The report's figures, drawn from a run directory's files into PNGs beside them.

Figures are built with `matplotlib.figure.Figure` and its Agg canvas, never pyplot: drawing is
headless on any machine and leaves no global state behind. Each drawer returns a figure, or
one line saying which input it lacks; a partial run gets the figures its files allow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from widthc import run as run_files
from widthc.config import RunConfig
from widthc.files import write_atomic
from widthc.report.latency_figures import latency_figure, layers_figure
from widthc.report.rundir import RunData
from widthc.space import human

_DPI = 110
_MAX_LABELS = 80  # more group names than this: label every k-th so they stay legible


def write_figures(run: RunData) -> dict[str, Path | str]:
    """Per PNG name: the file written (atomically) into the run directory, or why not."""
    out: dict[str, Path | str] = {}
    for name, draw in _DRAWERS.items():
        fig = draw(run)
        if isinstance(fig, str):
            out[name] = fig
            continue
        out[name] = write_atomic(
            run.path / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=_DPI)
        )
    return out


def widths_figure(run: RunData) -> Figure | str:
    """Paper figure 4: retained width ratio per searchable group, one line per budget, the
    uniform width of the same budget dashed in the same colour. Groups of attention heads are
    squares labelled with the heads each budget keeps."""
    groups = run.searchable()
    heads = run.heads()
    drawn = [(b, run.ratios(b), run.ratios(b, uniform=True)) for b in run.budgets]
    drawn = [d for d in drawn if d[1]]
    if not groups:
        return "no searchable channel group (or no analysis.json)"
    if not drawn:
        return "no searched width yet (no widths.json and no search.json result)"
    fig = Figure(figsize=(min(30, max(8, 0.22 * len(groups))), 5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(groups))
    for i, (budget, ratios, uniform) in enumerate(drawn):
        color = f"C{i % 10}"
        ax.plot(x, [ratios.get(g, math.nan) for g, _ in groups], "o-", color=color, ms=3,
                label=f"{budget.text}: widthc")  # fmt: skip
        for j, (g, _) in enumerate(groups):
            if g in heads and g in ratios:
                kept = round(ratios[g] * heads[g])
                ax.plot(j, ratios[g], "s", color=color, ms=5)
                ax.annotate(f"{kept}/{heads[g]}", (j, ratios[g]), fontsize=6, color=color,
                            xytext=(2, 2), textcoords="offset points")  # fmt: skip
        if uniform:
            ax.plot(x, [uniform.get(g, math.nan) for g, _ in groups], "--", color=color,
                    alpha=0.7, label=f"{budget.text}: uniform")  # fmt: skip
    _group_ticks(ax, [(g, f"{name} (heads)" if g in heads else name) for g, name in groups])
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("retained width (channels or heads after / before)")
    ax.set_title("Width per layer (paper figure 4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, 2 * len(drawn)))
    return fig


def bins_figure(run: RunData) -> Figure | str:
    """Paper figure 5: bin size and bin count per searchable group (two panels)."""
    groups = [g for g in run.groups if g.get("searchable") and g.get("bins")]
    if not groups:
        return "no analysis.json with searchable groups"
    fig = Figure(figsize=(min(30, max(8, 0.22 * len(groups))), 6), layout="constrained")
    size_ax, count_ax = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(groups))
    size_ax.bar(x, [g["bins"][0] for g in groups], color="C0")
    size_ax.set_ylabel("bin size (channels)")
    size_ax.set_title("Bins per layer (paper figure 5)")
    count_ax.bar(x, [len(g["bins"]) for g in groups], color="C1")
    count_ax.set_ylabel("bin number")
    _group_ticks(count_ax, [(g["id"], g.get("name", str(g["id"]))) for g in groups])
    for ax in (size_ax, count_ax):
        ax.grid(axis="y", alpha=0.3)
    return fig


def search_figure(run: RunData) -> Figure | str:
    """Score vs FLOPs: every width the search scored (a cloud per budget), the Pareto front,
    the chosen and the uniform widths, the budgets as vertical lines."""
    results = run.search.get("results", [])
    if not results:
        return "no search.json results (the search has not run)"
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    scores = []
    for i, r in enumerate(results):
        color = f"C{i % 10}"
        history = [h for h in r.get("history", []) if _point(h)]
        text = r.get("text", "?")
        if history:
            flops, score = [h["flops"] for h in history], [h["score"] for h in history]
            ax.scatter(flops, score, s=10, alpha=0.35, color=color,
                       label=f"{text}: {len(history)} widths")  # fmt: skip
            scores += score
        if r.get("budget"):
            ax.axvline(r["budget"], ls=":", color=color, lw=1)
        if _point(r):
            ax.scatter(r["flops"], r["score"], marker="*", s=220, color=color, edgecolors="k",
                       zorder=5, label=f"{text}: chosen")  # fmt: skip
            scores.append(r["score"])
        uniform = r.get("uniform", {})
        if _point(uniform):
            ax.scatter(uniform["flops"], uniform["score"], marker="X", s=90, color=color,
                       edgecolors="k", zorder=5, label=f"{text}: uniform")  # fmt: skip
            scores.append(uniform["score"])
    front = [p for p in run.search.get("front") or _front(results) if _point(p)]
    if front:
        front = sorted(front, key=lambda p: p["flops"])
        ax.plot([p["flops"] for p in front], [p["score"] for p in front], "-", color="k",
                lw=1.2, drawstyle="steps-post", label="Pareto front")  # fmt: skip
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    if run.percent and scores and all(0 <= s <= 1 for s in scores):
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("FLOPs per sample (dotted: the budgets)")
    ax.set_ylabel("validation score (max-max over candidates)")
    ax.set_title("Search: score vs FLOPs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def retrained_figure(run: RunData) -> Figure | str:
    """Test metric of widthc vs uniform per budget (bars), the original model's as a line."""
    budgets = [
        b for b in run.budgets if b.test("widthc") is not None or b.test("uniform") is not None
    ]
    if not budgets:
        return "no test accuracy yet (no metrics.json: the retraining has not run)"
    fig = Figure(figsize=(max(6, 1.6 * len(budgets)), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(budgets))
    for offset, which, color in ((-0.2, "widthc", "C0"), (0.2, "uniform", "C7")):
        values = [b.test(which) for b in budgets]
        bars = ax.bar(x + offset, [math.nan if v is None else v for v in values], 0.38,
                      color=color, label=which)  # fmt: skip
        ax.bar_label(bars, labels=[_value(v, run.percent) for v in values], fontsize=8)
    original = next((b.test("original") for b in budgets if b.test("original") is not None), None)
    shown = [v for b in budgets for v in (b.test("widthc"), b.test("uniform"), original)]
    top = max(v for v in shown if v is not None)
    if run.percent:
        ax.set_ylim(0, 1.12 * top if top > 0 else 1)  # room for the labels above the bars
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if original is not None:
        ax.axhline(original, ls="--", color="k", lw=1,
                   label=f"original {_value(original, run.percent)}")  # fmt: skip
    ax.set_xticks(x, [b.text for b in budgets])
    ax.set_xlabel("FLOPs budget")
    what = f"test {run.metric or 'accuracy'}"
    ax.set_ylabel(what)
    schedule = RunConfig.from_json(run.config).schedule() if run.config else None
    epochs = schedule.retrain if schedule else None
    tuned = schedule and (schedule.finetune or run.config.get("pretrained"))
    how = "fine-tuning" if tuned else "retraining"
    ax.set_title(
        f"{what.capitalize()} of the inherited supernet weights (no retraining)"
        if epochs == 0
        else f"{what.capitalize()} after {how}{f' ({epochs} epochs)' if epochs else ''}"
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def training_figure(run: RunData) -> Figure | str:
    """Supernet training: loss per step, and the validation metric of the largest and the
    smallest width per epoch (logs before metrics were named: their accuracy)."""
    steps = [r for r in run.train_log if isinstance(r.get("loss"), int | float)]
    epochs = [
        {k.replace("val_acc_", "val_"): v for k, v in r.items()}
        for r in run.train_log
        if any(k.startswith(("val_largest", "val_smallest", "val_acc_")) for k in r)
    ]
    if not steps and not epochs:
        return "no train.jsonl (the supernet was not trained in this run directory)"
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    if steps:
        x = [r.get("step") for r in steps]
        if None in x or any(b <= a for a, b in zip(x, x[1:])):  # a resumed or staged log
            x = list(range(1, len(steps) + 1))
        loss = np.array([r["loss"] for r in steps], dtype=float)
        loss_ax.plot(x, loss, color="C0", alpha=0.3, lw=0.8, label="loss")
        window = max(1, len(loss) // 50)
        if window > 1:
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            loss_ax.plot(x[window - 1 :], smooth, color="C0", label=f"mean of {window} steps")
        loss_ax.legend(fontsize=8)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (min-min candidate)")
    loss_ax.set_title("Supernet training loss")
    for key, label, color in (
        ("val_largest", "largest width", "C2"),
        ("val_smallest", "smallest width", "C3"),
    ):
        points = [
            (r.get("epoch", i + 1), r[key]) for i, r in enumerate(epochs) if r.get(key) is not None
        ]
        if points:
            acc_ax.plot(*zip(*points), "o-", color=color, label=label)
    if epochs:
        if run.percent:
            acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        acc_ax.legend(fontsize=8)
    else:
        acc_ax.text(0.5, 0.5, "no validation records", ha="center", transform=acc_ax.transAxes)
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel(f"validation {run.metric or 'accuracy'}")
    acc_ax.set_title(f"Supernet validation {run.metric or 'accuracy'}")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    return fig


_DRAWERS: dict[str, Callable[[RunData], Figure | str]] = {
    run_files.WIDTHS_PNG: widths_figure,
    run_files.BINS_PNG: bins_figure,
    run_files.SEARCH_PNG: search_figure,
    run_files.RETRAINED_PNG: retrained_figure,
    run_files.TRAINING_PNG: training_figure,
    run_files.LATENCY_PNG: latency_figure,
    run_files.LAYERS_LATENCY_PNG: layers_figure,
}
FIGURES = tuple(_DRAWERS)


def _group_ticks(ax, groups: list[tuple[int, str]]) -> None:
    """Group names under the x axis, in graph order; every k-th one when there are many."""
    step = max(1, math.ceil(len(groups) / _MAX_LABELS))
    ticks = list(range(0, len(groups), step))
    ax.set_xticks(ticks, [groups[i][1] for i in ticks], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xlabel("channel group (its first producer), in graph order")


def _point(p: dict) -> bool:
    return isinstance(p.get("flops"), int | float) and isinstance(p.get("score"), int | float)


def _front(results: list[dict]) -> list[dict]:
    """The Pareto front of every scored width: fewer FLOPs and a higher score win."""
    front: list[dict] = []
    points = [h for r in results for h in r.get("history", []) if _point(h)]
    for p in sorted(points, key=lambda p: (p["flops"], -p["score"])):
        if not front or p["score"] > front[-1]["score"]:
            front.append(p)
    return front


def _value(x: float | None, percent: bool) -> str:
    """A bar's label: '97.1%' for accuracy, 4 digits for any other metric."""
    if x is None:
        return ""
    return f"{100 * x:.1f}%" if percent else f"{x:.4g}"
