"""The retrain stage (paper A.2-A.3): every searched width, and the uniform width at the same
budget, trained with the same recipe and seed, then measured on the test split.

From scratch (the default): the model is built anew under the run's seed and slimmed to the
width, so both widths start from the same initialisation the supernet started from; with
--pretrained that is the model's trained weights, channels in the run's order: fine-tuning.
With `--finetune`, from the inherited supernet weights instead. `--retrain-epochs 0` measures the
inherited models as they are. After training, batch-norm statistics are re-estimated on the
calibration batches (they lag the weights at the end of a short schedule). The retrained
models are proved again: FLOPs recounted, ONNX
parity; slim.pt and slim.onnx are replaced by them.
"""

from __future__ import annotations

import dataclasses
import json

import torch

import widthc
from widthc import loop
from widthc.context import Context, compile_source
from widthc.errors import InternalError
from widthc.evaluate import measure, recalibrate
from widthc.files import write_text
from widthc.ir import WidthChoice
from widthc.passes import order
from widthc.run import (
    INHERITED,
    METRICS,
    PRETRAINED,
    RETRAIN,
    RETRAIN_LOG,
    SLIM,
    SLIM_ONNX,
    UNIFORM,
    WIDTHS,
    update_metrics,
)


def run(ctx: Context) -> None:
    schedule = ctx.config.schedule()
    epochs, finetune = schedule.retrain, schedule.finetune
    original = ctx.run.read_json(PRETRAINED, {}).get("original", {}).get("test")
    for r in ctx.run.read_search()["results"]:
        folder = ctx.run.budget_dir(r["text"])
        test = dict(
            ctx.run.read_json(folder.relative_to(ctx.run.path) / METRICS, {}).get("test", {})
        )
        if original is not None:  # the trained model as given, beside its slimmed widths
            test["original"] = original
        for name, entry, sub in (
            ("widthc", r, folder),
            ("uniform", r["uniform"], folder / UNIFORM),
        ):
            if name in test:
                continue  # retrained before an interruption
            cand = WidthChoice.from_json(entry["candidate_choice"])
            chain = r.get("chain") if name == "widthc" else None
            if epochs == 0:
                model = widthc.load(sub / SLIM)
            else:
                model = widthc.load(sub / INHERITED) if finetune else fresh(ctx, cand, chain)
                model = train(ctx, model, sub, epochs, f"retrain {name} {r['text']}")
                reverify(ctx, model, cand, sub)
            test[name] = measure(model, ctx.splits.test, ctx.metric, ctx.device)
            update_metrics(
                folder, test=test, metric=ctx.metric_name,
                retrain={"epochs": epochs, "finetune": finetune},
            )  # fmt: skip
        ctx.echo(
            f"budget {r['text']}: test {test['widthc']:.4f} searched, {test['uniform']:.4f} uniform"
            + ("" if epochs else " (not retrained: inherited supernet weights)")
        )


def fresh(ctx, cand: WidthChoice, chain: list | None = None, seed: int | None = None):
    """The model built anew under the run's seed (or `seed`), slimmed to `cand` (its own
    initial weights; a multi-stage width through its chain of stages). With --pretrained the
    model's own trained weights, in the channel order pretrained.json records (the supernet's)."""
    program = compile_source(ctx.config, ctx.source(seed), ctx.align)
    if program.binning != ctx.program.binning:
        raise InternalError("the model built anew has other bins than the searched one")
    if ctx.config.pretrained:
        groups = ctx.run.read_json(PRETRAINED)["order"]["groups"]
        orders = {int(g): torch.tensor(v["order"]) for g, v in groups.items()}
        program = program.with_model(order.permuted(program, orders))
    if chain:
        program = ctx.replay(chain, program)
    return widthc.slim(program, program.validate(cand))


def train(ctx, model, folder, epochs: int, label: str, seed: int | None = None):
    """Plain training of a slimmed model with the run's recipe (under the run's seed, or
    `seed`: dropout and batch order); resumable from retrain.pt."""
    cfg = dataclasses.replace(ctx.config.train, epochs=epochs)
    cfg = cfg if seed is None else dataclasses.replace(cfg, seed=seed)
    model = model.to(ctx.device).train()
    data = ctx.splits.train
    steps = epochs * (len(data) // cfg.batch_size)
    opt, schedule = loop.optimizer([p for p in model.parameters() if p.requires_grad], cfg, steps)
    files = (folder / RETRAIN, folder / RETRAIN_LOG)
    trainer = loop.Trainer(model, loop.PlainStep(model, ctx.loss), data, cfg, opt, schedule, files)
    if files[0].exists():
        trainer.restore()
    else:
        torch.manual_seed(cfg.seed)
        trainer.start()
    trainer.run(progress=ctx.progress, label=label)
    # running statistics lag the weights at the end of a short schedule: re-estimate them on
    # the calibration batches (cumulative average), as every scored sub-network was
    calib = [x.to(ctx.device) for x in ctx.calibration()]
    if calib:
        with torch.no_grad():
            recalibrate(model, calib, cfg.seed)
    return model.eval()


def reverify(ctx, model, cand: WidthChoice, folder) -> None:
    """The retrained model keeps its width: FLOPs recounted exactly, ONNX parity; then it
    replaces slim.pt and slim.onnx."""
    model = model.cpu().eval()
    example = tuple(x.cpu() for x in ctx.program.example_inputs)
    counted = widthc.compile(model, example).flops()
    expected = json.loads((folder / WIDTHS).read_text())["flops"]["after"]
    if counted != expected:
        raise InternalError(
            f"the retrained model has {counted:.0f} FLOPs, counted afresh, but its width has "
            f"{expected:.0f}"
        )
    checks = {"flops_counted": counted, "flops_expected": expected, "onnx_rel_error": None}
    if ctx.config.onnx:
        checks["onnx_rel_error"] = widthc.export_onnx(model, example, folder / SLIM_ONNX).error
    widthc.save(model, folder / SLIM)
    widths = json.loads((folder / WIDTHS).read_text())
    widths["retrained_checks"] = checks
    write_text(folder / WIDTHS, json.dumps(widths, indent=2))
    model.to(ctx.device)


def forget(run) -> None:
    """Retrain again from the start (`widthc retrain RUN_DIR`): the measured accuracies and the
    retraining checkpoints of every budget are dropped."""
    for folder in run.budget_dirs():
        metrics = folder / METRICS
        if metrics.exists():
            data = json.loads(metrics.read_text())
            data.pop("test", None)
            write_text(metrics, json.dumps(data, indent=2))
        for ckpt in (folder / RETRAIN, folder / UNIFORM / RETRAIN):
            ckpt.unlink(missing_ok=True)
