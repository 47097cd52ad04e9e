"""What each command runs (cli.py parses the options, these run them): check every option,
resolve the model, data and classes, create or resume the run directory, then run the stages
(`widthc.pipeline`). Nothing is written before the inputs are known to be good.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from widthc import space
from widthc.errors import WidthcError
from widthc.evaluate import batch
from widthc.pipeline import (
    _NO_DATA,
    ANALYSIS,
    ORDER,
    SUPERNET,
    Context,
    RetrainConfig,
    SearchConfig,
    compile_source,
    config_of,
    run_stages,
    write_json,
)
from widthc.run import Run, model_key, safe_name
from widthc.train import TrainConfig, check_output


def analyze_command(
    model, input_shape, leaves, auto_leaf, beta, align, json_path, uniform_bins=None
) -> None:
    from widthc.frontends.models import load_model, parse_shape
    from widthc.report import print_analysis

    if beta <= 0:
        raise WidthcError(f"--beta must be positive, got {beta}")
    src = load_model(model, parse_shape(input_shape) if input_shape is not None else None)
    config = {"beta": beta, "leaves": leaves, "align": align, "auto_leaf": auto_leaf}
    program = compile_source({**config, "uniform_bins": uniform_bins}, src)
    for path, why in getattr(program.traced, "auto_leaves", ()):
        print(f"traced {path} as a leaf: {why}")
    print_analysis(program, src.name)
    if json_path:
        write_json(Path(json_path), program.to_json())
        print(f"wrote {json_path}")


def train_command(options: dict, given: set) -> None:
    """`widthc train`: the analyze and train stages of a run directory."""
    from widthc import distributed

    device = _device(options)
    run = _create(options, given, needs_data=True)
    try:
        was_done = run.done("train")
        ctx = Context(run, device, progress=distributed.rank() == 0)
        if distributed.rank() != 0:
            ctx.echo = lambda *_: None
        run_stages(ctx, ("analyze", "train"))
        if was_done:
            ctx.echo(f"{run.path} already finished its training: nothing to resume")
        ctx.echo(f"wrote {run.file(SUPERNET)}")
    finally:
        distributed.shutdown()


def slim_command(options: dict, given: set) -> None:
    """`widthc slim`: every stage, or the uniform fast path."""
    from widthc.stages.fast import slim_uniform

    texts = space.parse_budgets(options.pop("budgets"))
    for text in texts:
        space.parse_budget(text, 1.0)  # the syntax, before anything is loaded
    uniform_fast = options["search"] == "uniform" and not options["from_run"]
    if uniform_fast and not (options["resume"] or options["force"]):
        from widthc.frontends.models import load_model, parse_shape

        if options["beta"] <= 0:
            raise WidthcError(f"--beta must be positive, got {options['beta']}")
        shape = parse_shape(options["input_shape"]) if options["input_shape"] is not None else None
        src = load_model(options["model"], shape)
        return slim_uniform(
            src, texts, options["out"], options["onnx"], options["beta"], options["leaves"],
            options["align"], options["auto_leaf"], print,
        )  # fmt: skip
    options["flops"] = texts
    device = _device(options)
    if options["from_run"]:
        run = _from_run(options, given)
    else:
        run = _create(options, given, needs_data=True)
    run_stages(Context(run, device), ORDER)


def stage_command(run_dir: str, stage: str, options: dict, given: set) -> None:
    """`widthc search|export|retrain|report RUN_DIR`: one stage (and what it needs) again."""
    run = Run(run_dir)
    if not run.file("config.json").exists():
        raise WidthcError(
            f"{run_dir} holds no widthc run (no config.json): start one with widthc slim or widthc train"
        )
    needs = {"search": "train", "export": "search", "retrain": "slim", "report": "analyze"}[stage]
    if not run.done(needs):
        first = {
            "train": f"widthc train MODEL --out {run_dir} --resume",
            "search": f"widthc search {run_dir} --flops BUDGET",
            "slim": f"widthc export {run_dir}",
            "analyze": f"widthc slim MODEL --out {run_dir} --resume",
        }[needs]
        raise WidthcError(f"{run_dir} has not finished its {needs} stage: run `{first}` first")
    changes = {k: v for k, v in options.items() if k in given and k not in ("resume",)}
    if "budgets" in changes:
        changes["flops"] = space.parse_budgets(changes.pop("budgets"))
    if stage == "search" and not (changes.get("flops") or run.config.get("flops")):
        raise WidthcError("--flops is missing: give a budget such as 300M or 50%")
    if changes:
        run.update(**changes)
    first = {"search": "search", "export": "slim", "retrain": "retrain", "report": "report"}[stage]
    if not (stage == "search" and options.get("resume")):
        run.redo(first)
    if stage == "retrain":
        from widthc.stages.retrain import forget

        forget(run)
    todo = {"search": ("search",), "export": ("slim", "export"), "retrain": ("retrain",),
            "report": ("report",)}[stage]  # fmt: skip
    run_stages(Context(run), todo)


def _device(options: dict) -> torch.device:
    from widthc import distributed

    name = options.get("device", "cpu")
    if options.get("sync_bn") and name != "cuda":
        raise WidthcError("--sync-bn needs --device cuda: torch's SyncBatchNorm runs on GPUs only")
    if name == "cuda" and not torch.cuda.is_available():
        raise WidthcError("--device cuda was given but torch sees no CUDA device; use --device cpu")
    if options.get("distributed") or distributed.under_torchrun():
        options["distributed"] = True
        return distributed.init(name)
    if options.get("sync_bn"):
        raise WidthcError(
            "--sync-bn needs distributed training: run under torchrun with --distributed"
        )
    return torch.device(name)


def _create(options: dict, given: set, needs_data: bool) -> Run:
    """Check every option, resolve the model, data and classes, then create (or resume) the
    run directory: nothing is written before the inputs are known to be good."""
    from widthc import distributed
    from widthc.frontends.models import parse_shape

    out = options.pop("out", None)
    resume, force = options.pop("resume", False), options.pop("force", False)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    TrainConfig(**{f.name: config[f.name] for f in fields(TrainConfig) if f.name in config}).check()
    if config.get("budget_sampling") and not config.get("flops"):
        raise WidthcError(
            "--budget-sampling needs the budgets: give them with --flops (widthc slim)"
        )
    if "search" in config:
        config_of(SearchConfig, config).check()
        if config.get("retrain_epochs") is not None and config["retrain_epochs"] < 0:
            raise WidthcError(f"--retrain-epochs must be 0 or more, got {config['retrain_epochs']}")
    if config.get("offset", 1) < 0:
        raise WidthcError(f"--offset must be 0 or more, got {config['offset']}")
    if config.get("beta", 1.0) <= 0:
        raise WidthcError(f"--beta must be positive, got {config['beta']}")
    if config.get("input_shape") is not None:
        config["input_shape"] = ",".join(map(str, parse_shape(config["input_shape"])))
    config["world_size"] = distributed.world_size()
    path = Path(out) if out else None
    if path is not None and resume and (path / "config.json").exists():
        return _make_run(path, config, given, resume=True, force=False)
    config = resolve(config, needs_data)
    if path is None:
        name = config["model"].split(":")[-1]
        path = Path("runs") / Path(name).stem
    if "flops" in config:
        ctx = Context(Run(path, config))  # budgets in range, before anything is written
        for value in ctx.budgets().values():
            ctx.program.check_budget(value)
    return _make_run(path, config, given, resume, force)


def _make_run(path: Path, config: dict, given: set, resume: bool, force: bool) -> Run:
    from widthc import distributed
    from widthc.run import command_line

    config = {**config, "command": command_line()}
    if distributed.rank() == 0:
        run = Run.create(path, config, given, resume=resume, force=force)
    distributed.barrier()
    return run if distributed.rank() == 0 else Run(path)


def resolve(config: dict, needs_data: bool) -> dict:
    """The model's input shape, the data source and the number of classes, resolved (every
    bad input fails here, before the run directory is written)."""
    from widthc.frontends.data import load_splits, splits_from_hooks
    from widthc.frontends.models import load_model, parse_shape

    shape = parse_shape(config["input_shape"]) if config.get("input_shape") is not None else None
    src = load_model(config["model"], shape, config.get("num_classes"))
    example = src.example_inputs[0] if src.example_inputs else None
    if not isinstance(example, torch.Tensor):
        raise WidthcError("training needs a model with a tensor input: give --input-shape")
    config["input_shape"] = ",".join(str(s) for s in example.shape)
    if config.get("data") is None:
        splits = splits_from_hooks(src.module, config["model"], config.get("seed", 0))
        if splits is None and needs_data:
            raise WidthcError(_NO_DATA)
        config["data"] = splits.name if splits is not None else None
    else:
        splits = load_splits(config["data"], tuple(example.shape), config.get("seed", 0))
    library = config["model"].startswith(("torchvision:", "timm:"))
    if config.get("num_classes") is None and library and splits is not None and splits.classes:
        config["num_classes"] = splits.classes
        src = load_model(config["model"], tuple(example.shape), splits.classes)
    if splits is not None:
        _check_data(src, splits, config)
    return config


def _check_data(src, splits, config: dict) -> None:
    """One batch through the model as given: a dict output without the hooks, labels the
    output cannot hold, or data the model rejects (named by layer) fail before anything runs."""
    from widthc.frontends.models import check_output as check_hooks

    x, y = batch(splits.train, torch.arange(min(2, len(splits.train))))
    model = src.model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        try:
            gm = compile_source(config, src).gm
        except WidthcError:
            gm = None
        raise WidthcError(_rejected(gm, x, e)) from e
    check_hooks(src, out)
    if src.loss is None:
        check_output(out, y, splits.classes)


def _from_run(options: dict, given: set) -> Run:
    """A new run that reuses the trained supernet of `--from RUN_DIR` for new budgets: the
    model and training options are that run's; nothing is trained again."""
    import shutil

    from widthc.run import TRAIN_LOG

    source = Run(options["from_run"])
    if not source.done("train"):
        raise WidthcError(f"--from {source.path}: it holds no finished supernet training")
    if model_key(source.config["model"]) != model_key(options["model"]):
        raise WidthcError(
            f"--from {source.path} trained {source.config['model']}, not {options['model']}"
        )
    mine = {
        k: v
        for k, v in options.items()
        if k in given or k in fields_of(SearchConfig, RetrainConfig)
    }
    mine["flops"] = options["flops"]
    out = options.get("out") or f"{source.path}-" + "-".join(map(safe_name, options["flops"]))
    keep = {k: v for k, v in source.config.items() if k not in ("command", "versions")}
    config = {**keep, **{k: v for k, v in mine.items() if k not in ("out", "resume", "force")}}
    config["from_run"] = str(source.path)
    run = _make_run(
        Path(out), config, given, options.get("resume", False), options.get("force", False)
    )
    for name in (ANALYSIS, SUPERNET, TRAIN_LOG):
        if source.file(name).exists() and not run.file(name).exists():
            shutil.copy2(source.file(name), run.file(name))
    for stage in ("analyze", "train"):
        if not run.done(stage):
            with run.stage(stage):
                pass
    return run


def fields_of(*classes) -> set:
    return {f.name for cls in classes for f in fields(cls)}


def _rejected(gm, x: torch.Tensor, error: Exception) -> str:
    """Which layer rejects the data's batches, found by running the graph node by node."""
    from torch import fx

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
