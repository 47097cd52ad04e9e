"""The short table printed at the end of a run: one row per budget, the numbers of its files."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.table import Table

from widthc.report import text as t
from widthc.report.latency import run_latency
from widthc.report.rundir import RunData, load


def summary_table(run_dir: Path) -> Table:
    """Per budget: FLOPs and params after slimming (before: in the title), onnxruntime latency
    of slim.onnx (ms, and as a multiple of the original's), test accuracy of widthc vs the
    uniform width. Narrow enough for an 80-column terminal."""
    run = load(run_dir)
    latency, note = run_latency(run)
    model = run.config.get("model") or run.analysis.get("model") or str(run_dir)
    runtime = next(
        (b.metrics["latency"].get("runtime") for b in run.budgets if b.metrics.get("latency")),
        "onnxruntime",
    )
    warnings = [
        f"FLOPs, params: kept (share of the original's); latency: the slimmed model on "
        f"{runtime} (× the original's)"
    ]
    if str(run.config.get("data", "")).startswith("synthetic"):
        warnings.append("[bold red]random data (--data synthetic): the accuracies mean nothing[/]")
    if run.config.get("retrain_epochs") == 0:
        warnings.append("[yellow]no retraining: accuracies of the inherited supernet weights[/]")
    if run.config.get("pretrained"):
        warnings.append("started from the model's trained weights (--pretrained)")
    if not run.percent:
        warnings.append(f"test metric: {run.metric}")
    if note:
        warnings.append(note)
    warnings += [f"[bold red]{line}[/]" for line in run.latency_misses()]
    table = Table(title=_title(run, model, latency), caption="\n".join(warnings))
    for name in ("budget", "FLOPs", "params", "latency"):
        table.add_column(name, justify="left" if name == "budget" else "right")
    table.add_column("test acc." if run.percent else "test metric", justify="right", style="bold")
    table.add_column("uniform", justify="right")
    trained = next(
        (b.test("original") for b in run.budgets if b.test("original") is not None), None
    )
    if run.config.get("pretrained") and trained is not None:  # the model as given, beside them
        table.add_row("original", "100%", "100%", "1.00×", t.metric(trained), "")
    for b in run.budgets:
        ms = latency.get(b.text, {})
        slim, original = ms.get("widthc"), ms.get("original")
        table.add_row(
            b.text,
            _kept(*b.flops()),
            _kept(*b.params()),
            t.ms(slim) + (f" {t.ratio(slim, original)}" if slim and original else ""),
            t.metric(b.test("widthc"), run.percent),
            t.metric(b.test("uniform"), run.percent),
        )
    return table


def _kept(before: float | None, after: float | None) -> str:
    """'39.33M (48%)': after, and the share of before it keeps (before is in the title)."""
    if after is None:
        return t.MISSING
    return t.count(after) + (f" ({after / before:.0%})" if before else "")


def _title(run: RunData, model: str, latency: dict) -> str:
    """The model and its size before slimming: FLOPs, params, ONNX latency (the median of
    its measurements beside each budget's model)."""
    flops = next((b.flops()[0] for b in run.budgets if b.flops()[0]), run.analysis.get("flops"))
    params = next((b.params()[0] for b in run.budgets if b.params()[0]), run.analysis.get("params"))
    original = [ms["original"] for ms in latency.values() if ms.get("original")]
    sizes = [
        f"{t.count(flops)} FLOPs" if flops else "",
        f"{t.count(params)} params" if params else "",
    ]
    sizes.append(t.ms(statistics.median(original)) if original else "")
    sizes = ", ".join(s for s in sizes if s)
    return f"widthc: {model}" + (f" (original: {sizes})" if sizes else "")
