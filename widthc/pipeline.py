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
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import widthc
from widthc import checkpoint, interrupt, loop, space
from widthc import search as search_pkg
from widthc.errors import WidthcError
from widthc.evaluate import Score, accuracy, batch
from widthc.frontends.data import SOURCES
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
from widthc.train import TrainConfig, cross_entropy, option, train_supernet


@dataclass
class SearchConfig:
    """Options of the search stage (the CLI's options are made from these fields)."""

    search: str = option("evolutionary", "evolutionary, random, greedy or uniform.")
    population: int = option(40, "Evolutionary: population (paper A.2).")
    generations: int = option(50, "Evolutionary: generations (paper A.2).")
    samples: int = option(2000, "Random search: widths sampled (paper A.2).")
    max_evals: int | None = option(None, "Cap on widths scored per budget.")
    budget_band: float = option(0.9, "Only widths with FLOPs in [band, 1] x budget compete.")
    calib_batches: int = option(10, "Batch-norm recalibration batches per scored sub-network.")
    stages: int = option(1, "Multi-stage search with evolving bins (eq. 10).")
    alpha: float = option(2.0, "Multi-stage: beta shrinks by this each stage.")

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
    retrain_epochs: int | None = option(
        None, "Epochs of retraining each searched width from scratch (default: --epochs; 0 skips)."
    )
    finetune: bool = option(False, "Retrain from the supernet's weights instead of from scratch.")


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

    def supernet(
        self, trained: bool = True, device: torch.device | None = None, execution: str | None = None
    ):
        device = device or self.device
        c = self.config
        execution = execution or c.get("execution", "auto")
        net = widthc.supernet(self.program, c.get("offset", 1), execution)
        net = net.to(device)
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
    f"--data is missing: training the supernet needs data; give --data ({', '.join(SOURCES)}) "
    "or define train_data() and val_data() in the model file; to slim without data or "
    "training, use --search uniform"
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


# --- helpers ------------------------------------------------------------------------------------


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
