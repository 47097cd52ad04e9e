"""The train stage: the CafeNet supernet trained with min-min (paper §3.1; widthc/train.py),
resumed from its checkpoint when the run was interrupted.

With --pretrained the supernet starts from the model's trained weights, its channels sorted
by importance first (widthc.ordering): the model as given is measured on the validation and
test splits, and pretrained.json records that and the ordering, before anything trains."""

from __future__ import annotations

from widthc.context import Context
from widthc.evaluate import accuracy, measure
from widthc.run import PRETRAINED, SUPERNET
from widthc.train import train_supernet


def run(ctx: Context) -> None:
    if ctx.config.pretrained and not ctx.run.file(PRETRAINED).exists():
        start_from_trained(ctx)
    net = ctx.supernet(trained=False)
    result = train_supernet(
        net, ctx.splits.train, ctx.splits.val, ctx.config.supernet_training(), ctx.run.path,
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


def start_from_trained(ctx: Context) -> None:
    """Measure the model as given and order its channels (pretrained.json)."""
    original, ordering = ctx.original, ctx.ordering
    test = measure(ctx.model_source.model, ctx.splits.test, ctx.metric, ctx.device)
    ctx.run.write_json(
        PRETRAINED,
        {"original": {"val": original.to_json(), "test": test}, "order": ordering.to_json()},
    )
    s = ctx.config.schedule()
    ctx.echo(
        f"started from the model's trained weights: validation {original.value:.4f} (chance "
        f"{original.chance:.4f}), test {test:.4f}; {ordering.summary()}; supernet "
        f"{s.supernet} epochs, then each width fine-tuned {s.retrain} epochs from "
        f"{'the supernet' if s.finetune else 'the trained weights'}"
    )
