"""The stages of `widthc slim`, each a function of the run directory (DESIGN §1, §10).

    analyze -> train (min-min) -> search (max-max) -> slim -> export -> retrain -> report

A stage reads what the earlier stages wrote (through `widthc.run`), writes its own files and
marks itself done; `run_stages` skips the stages already done, so a run killed anywhere resumes
from the stage it was in (training and search resume from their own checkpoints). The model,
its analysis and the data are rebuilt from config.json whenever a stage needs them, the same
every time (seeded).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import widthc
from widthc import checkpoint, interrupt, loop, space
from widthc import search as search_pkg
from widthc.errors import WidthcError
from widthc.evaluate import Score, accuracy, batch
from widthc.run import (
    ANALYSIS,
    METRICS,
    ORDER,
    ORIGINAL_ONNX,
    RETRAIN,
    RETRAIN_LOG,
    SEARCH,
    SLIM,
    SLIM_ONNX,
    SUPERNET,
    UNIFORM,
    WIDTHS,
    Run,
)
from widthc.train import TrainConfig, check_output, cross_entropy, train_supernet


@dataclass
class SearchConfig:
    """Options of the search stage (the CLI's options are made from these fields)."""

    search: str = field(
        default="evolutionary", metadata={"help": "evolutionary, random, greedy or uniform."}
    )
    population: int = field(default=40, metadata={"help": "Evolutionary: population (paper A.2)."})
    generations: int = field(
        default=50, metadata={"help": "Evolutionary: generations (paper A.2)."}
    )
    samples: int = field(
        default=2000, metadata={"help": "Random search: widths sampled (paper A.2)."}
    )
    max_evals: int | None = field(
        default=None, metadata={"help": "Cap on widths scored per budget."}
    )
    budget_band: float = field(
        default=0.9, metadata={"help": "Only widths with FLOPs in [band, 1] x budget compete."}
    )
    calib_batches: int = field(
        default=10, metadata={"help": "Batch-norm recalibration batches per scored sub-network."}
    )
    stages: int = field(
        default=1, metadata={"help": "Multi-stage search with evolving bins (eq. 10)."}
    )
    alpha: float = field(
        default=2.0, metadata={"help": "Multi-stage: beta shrinks by this each stage."}
    )

    def check(self) -> SearchConfig:
        if self.search not in search_pkg.SEARCHERS:
            names = ", ".join(sorted(search_pkg.SEARCHERS))
            raise WidthcError(f"--search {self.search} is not a searcher: choose one of {names}")
        for name in ("population", "generations", "samples", "calib_batches", "stages"):
            low = (
                2
                if name == "population"
                else (0 if name in ("generations", "calib_batches") else 1)
            )
            if getattr(self, name) < low:
                raise WidthcError(
                    f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}"
                )
        if self.max_evals is not None and self.max_evals < 1:
            raise WidthcError(f"--max-evals must be at least 1, got {self.max_evals}")
        if not 0 < self.budget_band <= 1:
            raise WidthcError(f"--budget-band must be in (0, 1], got {self.budget_band}")
        if not self.alpha > 0:
            raise WidthcError(f"--alpha must be positive, got {self.alpha}")
        return self


@dataclass
class RetrainConfig:
    retrain_epochs: int | None = field(
        default=None,
        metadata={
            "help": "Epochs of retraining each searched width from scratch (default: --epochs; 0 skips)."
        },
    )
    finetune: bool = field(
        default=False,
        metadata={"help": "Retrain from the supernet's weights instead of from scratch."},
    )


def config_of(cls, config: dict):
    return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


class Context:
    """What the stages share: the run, the device, and (built on first use) the model, its
    analysis, the data, the supernet."""

    def __init__(self, run: Run, device: torch.device | None = None, echo=print, progress=True):
        self.run, self.echo, self.progress = run, echo, progress
        self.device = device or torch.device(run.config.get("device", "cpu"))
        self.config = run.config

    # --- the model and the data ---------------------------------------------------------------

    def source(self, seed: int | None = None):
        """The model as the run builds it: classes from the data for library models, weights
        initialised under the run's seed."""
        from widthc.frontends.models import load_model, parse_shape

        c = self.config
        shape = parse_shape(c["input_shape"]) if c.get("input_shape") is not None else None
        torch.manual_seed(c.get("seed", 0) if seed is None else seed)
        return load_model(c["model"], shape, c.get("num_classes"))

    @cached_property
    def model_source(self):
        src = self.source()
        if self.config.get("sync_bn"):  # before compiling: the analysis sees SyncBatchNorm
            src.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(src.model)
        return src

    @cached_property
    def program(self) -> widthc.Program:
        return compile_source(self.config, self.model_source)

    @cached_property
    def splits(self):
        from widthc.frontends.data import load_splits, splits_from_hooks

        c = self.config
        if c.get("data") in (None, "data()", "train_data()"):  # the model file's hooks
            found = splits_from_hooks(self.model_source.module, c["model"], c.get("seed", 0))
            if found is None:
                raise WidthcError(_NO_DATA)
            return found
        shape = tuple(self.model_source.example_inputs[0].shape)
        return load_splits(c["data"], shape, c.get("seed", 0))

    @property
    def loss(self):
        src = self.model_source
        return src.loss or cross_entropy(self.config.get("label_smoothing", 0.0))

    @property
    def metric(self):
        return self.model_source.metric or accuracy

    @property
    def train_config(self) -> TrainConfig:
        return config_of(TrainConfig, self.config)

    @property
    def search_config(self) -> SearchConfig:
        return config_of(SearchConfig, self.config)

    def budgets(self) -> dict[str, float]:
        full = self.program.flops()
        return {t: space.parse_budget(t, full) for t in self.config["flops"]}

    # --- the supernet -------------------------------------------------------------------------

    def supernet(self, trained: bool = True, device: torch.device | None = None):
        device = device or self.device
        net = widthc.supernet(self.program, self.config.get("offset", 1)).to(device)
        if trained:
            ckpt = checkpoint.load(self.run.file(SUPERNET), map_location=device)
            checkpoint.check_groups(self.run.file(SUPERNET), ckpt.get("groups"), self.program)
            try:
                net.load_state_dict(ckpt["model"])
            except RuntimeError as e:
                raise WidthcError(
                    f"{self.run.file(SUPERNET)} holds another model's weights ({str(e).splitlines()[0]})"
                ) from e
        return net

    def calibration(self) -> list[torch.Tensor]:
        """The input batches every sub-network's batch-norm statistics are re-estimated on: the
        first `calib_batches` batches of a seeded order of the training split."""
        c = self.config
        data, n = self.splits.train, c.get("batch_size", 64)
        order = loop.epoch_order(len(data), c.get("seed", 0), -1)
        count = min(self.search_config.calib_batches, len(data) // n)
        return [x for x, _ in _batches(data, order, n, count)]

    def validation(self) -> list:
        data = self.splits.val
        return list(_batches(data, torch.arange(len(data)), 256))


def compile_source(config: dict, src) -> widthc.Program:
    """The analysis of a model as the run configures it (beta, leaves, align, uniform bins)."""
    c = config
    program = widthc.compile(
        src.model, src.example_inputs, c.get("beta", 1.0), c.get("leaves", ()), c.get("align", 1),
        auto_leaf=c.get("auto_leaf", True),
    )  # fmt: skip
    if c.get("uniform_bins"):
        program = program.rebin(program.beta, uniform=c["uniform_bins"])
    return program


_NO_DATA = (
    "--data is missing: training the supernet needs data; give --data (digits, mnist, mnist1d, "
    "imagefolder:PATH, cifar10:PATH, synthetic) or define train_data() and val_data() in the "
    "model file; to slim without data or training, use --search uniform"
)


# --- the stages ---------------------------------------------------------------------------------


def run_stages(ctx: Context, stages=ORDER) -> None:
    """Run `stages` in order, skipping those already done. Ctrl-C stops at the next safe
    point, after the training checkpoint or the search snapshot is saved."""
    with interrupt.deferred():
        for name in stages:
            if ctx.run.done(name):
                continue
            with ctx.run.stage(name):
                STAGES[name](ctx)


def analyze(ctx: Context) -> None:
    ctx.run.write_json(ANALYSIS, ctx.program.to_json())


def train(ctx: Context) -> None:
    net = ctx.supernet(trained=False)
    _check_outputs(ctx, net)
    resume = ctx.run.file(SUPERNET).exists()
    result = train_supernet(
        net, ctx.splits.train, ctx.splits.val, ctx.train_config, ctx.run.path, resume=resume,
        progress=ctx.progress, loss_fn=None if ctx.model_source.loss is None else ctx.loss,
    )  # fmt: skip
    last = result.validation[-1] if result.validation else {}
    ctx.echo(
        f"trained {result.steps} steps; candidates chosen {result.histogram}"
        + (f"; selection agreement {result.agreement:.1%}" if result.agreement is not None else "")
        + (
            f"; validation accuracy largest {last['val_acc_largest']:.1%}, smallest "
            f"{last['val_acc_smallest']:.1%}"
            if last
            else ""
        )
    )


def search(ctx: Context) -> None:
    from widthc.stages.search import run_search

    run_search(ctx)


def slim(ctx: Context) -> None:
    from widthc.stages.export import slim_all

    slim_all(ctx)


def export(ctx: Context) -> None:
    from widthc.stages.export import export_all

    export_all(ctx)


def retrain(ctx: Context) -> None:
    from widthc.stages.retrain import retrain_all

    retrain_all(ctx)


def report(ctx: Context) -> None:
    from widthc.report import summary_table, write_report

    path = write_report(ctx.run.path)
    try:
        from rich.console import Console

        Console().print(summary_table(ctx.run.path))
    except Exception as e:  # noqa: BLE001 - the report file is written; the table is a courtesy
        ctx.echo(f"(no summary table: {e})")
    ctx.echo(f"report: {path}")


STAGES = {
    "analyze": analyze,
    "train": train,
    "search": search,
    "slim": slim,
    "export": export,
    "retrain": retrain,
    "report": report,
}


# --- the commands (cli.py parses, these run) ---------------------------------------------------


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
    ctx = Context(run)
    if stage == "search":
        SearchConfig(**{**asdict_of(ctx.search_config)}).check()
    run_stages(ctx, todo)


def asdict_of(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


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
    mine = {
        k: v
        for k, v in options.items()
        if k in given or k in fields_of(SearchConfig, RetrainConfig)
    }
    mine["flops"] = options["flops"]
    out = options.get("out") or str(source.path) + "-" + "-".join(
        safe_part(t) for t in options["flops"]
    )
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


def safe_part(text: str) -> str:
    from widthc.run import safe_name

    return safe_name(text)


# --- helpers ------------------------------------------------------------------------------------


def _check_outputs(ctx: Context, net) -> None:
    """A dict or tuple output needs the model file's loss and metric (one clear sentence)."""
    from widthc.frontends.models import check_output as check_hooks

    x, y = batch(ctx.splits.train, torch.arange(min(2, len(ctx.splits.train))))
    with torch.no_grad(), net.probing():
        net.eval()
        try:
            out = net(x.to(ctx.device))
        except RuntimeError as e:
            raise WidthcError(_rejected(ctx.program.gm, x.to(ctx.device), e)) from e
        finally:
            net.train()
    check_hooks(ctx.model_source, out)
    if ctx.model_source.loss is None:
        check_output(out, y)


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


def _batches(data, order: torch.Tensor, n: int, count: int | None = None):
    """(inputs, targets) batches of `data` in `order`: indexed from tensors, loaded by a
    DataLoader otherwise."""
    starts = list(range(0, len(order), n))[:count]
    if isinstance(data, TensorDataset):
        return [batch(data, order[s : s + n]) for s in starts]
    chunks = [order[s : s + n].tolist() for s in starts]
    return [(x, torch.as_tensor(y)) for x, y in DataLoader(data, batch_sampler=chunks)]


def score_of(entry: dict) -> Score:
    return Score(
        entry["score"], entry["candidate"], tuple(entry.get("candidates", (entry["score"],)))
    )


def read_search(run: Run) -> dict:
    data = run.read_json(SEARCH)
    if data is None:
        raise WidthcError(f"{run.path} has no {SEARCH}: run `widthc search {run.path}` first")
    return data


def staged_write(folder: Path, write) -> None:
    """Write files into a temp folder inside `folder`, then move them into place together."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".widthc-", dir=folder) as tmp:
        names = write(Path(tmp))
        for name in names:
            (Path(tmp) / name).replace(folder / name)


def write_json(path: Path, data) -> None:
    from widthc.files import write_text

    write_text(path, json.dumps(data, indent=2))


__all__ = [
    "ANALYSIS", "METRICS", "ORIGINAL_ONNX", "RETRAIN", "RETRAIN_LOG", "SLIM", "SLIM_ONNX",
    "UNIFORM", "WIDTHS", "Context", "RetrainConfig", "SearchConfig", "run_stages",
]  # fmt: skip
