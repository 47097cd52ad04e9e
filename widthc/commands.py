"""What each command runs (cli.py parses the options, these run them): build the run
configuration once, resolve the model, data and classes, check every input on the run's
Context, create or resume the run directory, then run the stages (`widthc.pipeline`) on that
same Context. Nothing is written before the inputs are known to be good.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from torch import fx

from widthc import distributed, space
from widthc.config import RunConfig, SearchConfig, option_fields
from widthc.context import NO_DATA, Context
from widthc.errors import WidthcError
from widthc.evaluate import batch
from widthc.files import write_text
from widthc.frontends.models import check_output as check_hooks
from widthc.frontends.models import parse_shape
from widthc.latency import runtimes
from widthc.pipeline import run_stages
from widthc.report import print_analysis
from widthc.run import (
    ANALYSIS,
    CONFIG,
    PRETRAINED,
    SUPERNET,
    TRAIN_LOG,
    Run,
    model_key,
    safe_name,
)
from widthc.stages import fast, retrain
from widthc.train import check_output

__all__ = ["analyze_command", "run_config", "slim_command", "stage_command", "train_command"]

# a stage command: the stages it runs again, the stage that must be done before, and how
STAGE_COMMANDS = {
    "search": (("search",), "train"),
    "export": (("slim", "export"), "search"),
    "retrain": (("retrain",), "slim"),
    "report": (("report",), "analyze"),
}
_HOW = {
    "train": "widthc train MODEL --out {run} --resume",
    "search": "widthc search {run} --flops BUDGET",
    "slim": "widthc export {run}",
    "analyze": "widthc slim MODEL --out {run} --resume",
}
_PARTS_GIVEN_TO_A_NEW_RUN = {f.name for f in option_fields(SearchConfig)} | {"retrain_epochs",
                                                                           "finetune"}  # fmt: skip


def run_config(options: dict) -> RunConfig:
    """The run configuration of a command's options (a comma list of budgets, a shape as
    text), every option checked."""
    options = {k: v for k, v in options.items() if v is not None or k not in space.KINDS}
    for kind in space.KINDS:
        if isinstance(options.get(kind), str):
            options[kind] = space.parse_budgets(options[kind], kind)
    if options.get("input_shape") is not None:
        options["input_shape"] = ",".join(map(str, parse_shape(options["input_shape"])))
    config = RunConfig.from_json(options).check()
    if config.runtime is not None or config.latency or config.align_text == "auto":
        runtimes.runtime(config.runtime_name, config.runtime_threads, config.runtime_batch).check()
    return config


def analyze_command(options: dict, json_path: str | None) -> None:
    ctx = Context(run_config(options))
    program = ctx.program
    for path, why in getattr(program.traced, "auto_leaves", ()):
        print(f"traced {path} as a leaf: {why}")
    print_analysis(
        program, ctx.model_source.name, latency=ctx.latency if ctx.measures_latency else None
    )
    if json_path:
        write_text(Path(json_path), json.dumps(program.to_json(), indent=2))
        print(f"wrote {json_path}")


def train_command(options: dict, given: set, command: str, out: str, resume: bool, force: bool):
    """`widthc train`: the analyze and train stages of a run directory."""
    try:
        config, device = _device(run_config(options))
        ctx = _create(config, given, out, resume, force, command, device)
        was_done = ctx.run.done("train")
        run_stages(ctx, ("analyze", "train"))
        if was_done:
            ctx.echo(f"{ctx.run.path} already finished its training: nothing to resume")
        ctx.echo(f"wrote {ctx.run.file(SUPERNET)}")
    finally:
        distributed.shutdown()


def slim_command(options: dict, given: set, command: str, out, resume: bool, force: bool):
    """`widthc slim`: every stage, or the uniform fast path."""
    config = run_config(options)
    space.budget_specs(**config.budgets)  # at least one budget, and lists that pair up
    if config.search.search == "uniform" and not config.from_run and not (resume or force):
        return fast.run(Context(config), out)
    config, device = _device(config)
    if config.from_run:
        ctx = _from_run(config, given, out, resume, force, command, device)
    else:
        ctx = _create(config, given, out, resume, force, command, device)
    run_stages(ctx)


def stage_command(run_dir: str, stage: str, options: dict, given: set, resume: bool = False):
    """`widthc search|export|retrain|report RUN_DIR`: one stage (and what it needs) again,
    with the options given changed in the run's configuration."""
    ctx = Context.open(run_dir)
    run = ctx.run
    stages, needs = STAGE_COMMANDS[stage]
    if not run.done(needs):
        how = _HOW[needs].format(run=run_dir)
        raise WidthcError(f"{run_dir} has not finished its {needs} stage: run `{how}` first")
    changes = {k: v for k, v in options.items() if k in given}
    if set(changes) & set(space.KINDS):  # new budgets replace the run's, of every kind
        changes = {**{k: () for k in space.KINDS}, **changes}
    if changes:
        ctx.config = run_config({**ctx.config.to_json(), **changes})
    if stage == "search":
        space.budget_specs(**ctx.config.budgets)
    if changes:
        run.update(**{k: v for k, v in ctx.config.to_json().items() if k in changes})
    if not (stage == "search" and resume):
        run.redo(stages[0])
    if stage == "retrain":
        retrain.forget(run)
    run_stages(ctx, stages)


def _device(config: RunConfig) -> tuple[RunConfig, torch.device]:
    """The device to run on; under torchrun the process group, and `distributed` set."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise WidthcError("--device cuda was given but torch sees no CUDA device; use --device cpu")
    if config.distributed or distributed.under_torchrun():
        device = distributed.init(config.device)
        return config.updated(distributed=True, world_size=distributed.world_size()), device
    if config.sync_bn:
        raise WidthcError(
            "--sync-bn needs distributed training: run under torchrun with --distributed"
        )
    return config, torch.device(config.device)


def _create(config, given, out, resume, force, command, device) -> Context:
    """Resolve the model, data and classes and check every input on the run's Context, then
    create (or resume) the run directory: nothing is written before the inputs are good."""
    path = Path(out) if out else None
    echo = print if distributed.rank() == 0 else lambda *_: None
    if path is not None and resume and (path / CONFIG).exists():
        run = _make_run(path, config, given, resume=True, force=False, command=command)
        return Context(RunConfig.from_json(run.config), run, device, echo, distributed.rank() == 0)
    ctx = resolve(config, device)
    ctx.echo, ctx.progress = echo, distributed.rank() == 0
    if path is None:
        path = Path("runs") / Path(ctx.config.model.split(":")[-1]).stem
    ctx.budgets  # noqa: B018 - every budget in range, before anything is written
    _check_trained(ctx)
    return ctx.attach(_make_run(path, ctx.config, given, resume, force, command))


def _make_run(path: Path, config: RunConfig, given, resume, force, command) -> Run:
    """The run directory (rank 0 creates or resumes it; the other ranks wait, then open it)."""
    if distributed.rank() == 0:
        run = Run.create(path, {**config.to_json(), "command": command}, given, resume, force)
    distributed.barrier()
    return run if distributed.rank() == 0 else Run(path)


def resolve(config: RunConfig, device: torch.device) -> Context:
    """The run's Context with the model's input shape, the data source and the number of
    classes resolved, and one batch of the data through the model (every bad input fails
    here, before the run directory is written)."""
    first = Context(config, device=device)
    src = first.model_source
    example = src.example_inputs[0] if src.example_inputs else None
    if not isinstance(example, torch.Tensor):
        raise WidthcError("training needs a model with a tensor input: give --input-shape")
    config = config.updated(input_shape=",".join(str(s) for s in example.shape))
    splits = first.data_splits(src)
    if splits is None:
        raise WidthcError(NO_DATA)
    if config.data is None:
        config = config.updated(data=splits.name)
    library = config.model.startswith(("torchvision:", "timm:"))
    if config.num_classes is None and library and splits.classes:
        config = config.updated(num_classes=splits.classes)
    ctx = Context(config, device=device, splits=splits)
    _check_data(ctx)
    return ctx


def _check_trained(ctx: Context) -> None:
    """--pretrained on weights at chance level warns in one line and continues from scratch;
    weights that look trained without --pretrained get a one-line hint."""
    what = f"validation {'accuracy' if ctx.model_source.metric is None else 'metric'}"
    if not ctx.config.pretrained:
        try:
            o = ctx.original
        except Exception:  # noqa: BLE001 - a hint never stops a run (training reports the cause)
            return
        if o.trained:
            ctx.echo(
                f"the model's weights look trained ({what} {o.value:.4f}, chance "
                f"{o.chance:.4f}): --pretrained starts from them (sorted channels, a short "
                f"supernet, fine-tuning)"
            )
        return
    o = ctx.original
    if not o.trained:
        _warn(
            f"widthc: warning: --pretrained, but the model's {what} {o.value:.4f} is at chance "
            f"level ({o.chance:.4f}): its weights look untrained; continuing from scratch"
        )
        ctx.config = ctx.config.updated(pretrained=False)


def _warn(line: str) -> None:
    if distributed.rank() == 0:
        print(line, file=sys.stderr)


def _check_data(ctx: Context) -> None:
    """One batch through the model: a dict output without the hooks, labels the output cannot
    hold, or data the model rejects (named by layer) fail before anything runs."""
    splits, src = ctx.splits, ctx.model_source
    x, y = batch(splits.train, torch.arange(min(2, len(splits.train))))
    try:
        with torch.no_grad():
            out = src.model.eval()(x)
    except RuntimeError as e:
        try:
            gm = ctx.program.gm
        except WidthcError:
            gm = None
        raise WidthcError(_rejected(gm, x, e)) from e
    check_hooks(src, out)
    if src.loss is None:
        check_output(out, y, splits.classes)


def _from_run(config, given, out, resume, force, command, device) -> Context:
    """A new run that reuses the trained supernet of `--from RUN_DIR` for new budgets: the
    model and training options are that run's; nothing is trained again."""
    source = Run(config.from_run)
    if not source.done("train"):
        raise WidthcError(f"--from {source.path}: it holds no finished supernet training")
    if model_key(source.config["model"]) != model_key(config.model):
        raise WidthcError(
            f"--from {source.path} trained {source.config['model']}, not {config.model}"
        )
    mine = {
        k: v
        for k, v in config.to_json().items()
        if k in given or k in _PARTS_GIVEN_TO_A_NEW_RUN or k in space.KINDS
    }
    mine["from_run"] = str(source.path)
    config = RunConfig.from_json({**source.config, **mine}).check()
    texts = [t for kind in space.KINDS for t in getattr(config, kind)]
    out = out or f"{source.path}-" + "-".join(map(safe_name, texts))
    run = _make_run(Path(out), config, given, resume, force, command)
    for name in (ANALYSIS, SUPERNET, TRAIN_LOG, PRETRAINED):
        if source.file(name).exists() and not run.file(name).exists():
            shutil.copy2(source.file(name), run.file(name))
    for stage in ("analyze", "train"):
        if not run.done(stage):
            with run.stage(stage):
                pass
    return Context(RunConfig.from_json(run.config), run, device)


def _rejected(gm, x: torch.Tensor, error: Exception) -> str:
    """Which layer rejects the data's batches, found by running the graph node by node."""

    class _Find(fx.Interpreter):
        failed = None

        def run_node(self, n):
            try:
                return super().run_node(n)
            except Exception:
                _Find.failed = n
                raise

    if gm is not None:
        try:
            _Find(gm).run(x)
        except Exception:  # noqa: BLE001 - the failure we are locating
            pass
    node = _Find.failed
    where = (
        f"layer `{node.target if node.op == 'call_module' else node.name}`" if node else "the model"
    )
    return (
        f"the data's batches have shape {tuple(x.shape)}, which {where} rejects "
        f"({str(error).splitlines()[0][:150]}): give --input-shape that matches the data, or "
        f"fix the model file's data hooks"
    )
