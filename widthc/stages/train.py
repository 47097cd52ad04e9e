"""The train stage: the CafeNet supernet trained with min-min (paper §3.1; widthc/train.py),
resumed from its checkpoint when the run was interrupted."""

from __future__ import annotations

from widthc.context import Context
from widthc.evaluate import accuracy
from widthc.run import SUPERNET
from widthc.train import train_supernet


def run(ctx: Context) -> None:
    net = ctx.supernet(trained=False)
    result = train_supernet(
        net, ctx.splits.train, ctx.splits.val, ctx.config.train, ctx.run.path,
        resume=ctx.run.file(SUPERNET).exists(), progress=ctx.progress,
        loss_fn=None if ctx.model_source.loss is None else ctx.loss, metric=ctx.metric,
        bands=ctx.bands() if ctx.config.train.budget_sampling else (),
    )  # fmt: skip
    last = result.validation[-1] if result.validation else {}
    shown = (lambda v: f"{v:.1%}") if ctx.metric is accuracy else (lambda v: f"{v:.4g}")
    ctx.echo(
        f"trained {result.steps} steps; candidates chosen {result.histogram}"
        + (f"; selection agreement {result.agreement:.1%}" if result.agreement is not None else "")
        + (
            f"; validation {ctx.metric_name} largest {shown(last['val_largest'])}, smallest "
            f"{shown(last['val_smallest'])}"
            if last
            else ""
        )
    )
