"""The `Context` of a run: its configuration, the run directory, and what every stage shares,
each built once on first use (the model, its analysis, the data, the budgets).

A Context exists before its run directory does: the commands check every input on it (the
data through the model, the budgets in range) and only then create the directory
(`attach`), so nothing is written before the inputs are known to be good. The stages then run
on the same Context, so the model is compiled once and the data loaded once. A Context of an
existing run (`Context.open`) rebuilds the same values from config.json (seeded).
"""

from __future__ import annotations

from functools import cached_property

import torch

import widthc
from widthc import checkpoint, loop, space
from widthc.config import RunConfig
from widthc.errors import WidthcError
from widthc.evaluate import (
    Chance,
    accuracy,
    against_chance,
    batches,
    metric_name,
    negative_loss,
)
from widthc.frontends.data import SOURCES, DataSplits, load_splits, splits_from_hooks
from widthc.frontends.models import ModelSource, load_model, parse_shape
from widthc.ir import WidthChoice
from widthc.ordering import Ordering, order_channels
from widthc.program import Program
from widthc.run import SUPERNET, Run
from widthc.supernet import Supernet
from widthc.train import cross_entropy

__all__ = ["NO_DATA", "Context", "compile_source"]

ORIGINAL_SAMPLES = 1024  # validation samples the model as given is measured on

NO_DATA = (
    f"--data is missing: training the supernet needs data; give --data ({', '.join(SOURCES)}) "
    "or define train_data() and val_data() in the model file; to slim without data or "
    "training, use --search uniform"
)


class Context:
    """What the stages share: the configuration, the run directory (once created), the device,
    and, built on first use, the model, its analysis, the data and the budgets."""

    def __init__(
        self,
        config: RunConfig,
        run: Run | None = None,
        device: torch.device | None = None,
        echo=print,
        progress: bool = True,
        splits: DataSplits | None = None,
    ):
        self.config, self.run, self.echo, self.progress = config, run, echo, progress
        self.device = device or torch.device(config.device)
        if splits is not None:  # loaded already while the inputs were checked
            self.__dict__["splits"] = splits

    @staticmethod
    def open(path, device: torch.device | None = None, echo=print, progress=True) -> Context:
        """The Context of the run in `path` (its config.json)."""
        run = Run(path)
        if not run.config:
            raise WidthcError(
                f"{path} holds no widthc run (no config.json): start one with widthc slim or "
                f"widthc train"
            )
        return Context(RunConfig.from_json(run.config), run, device, echo, progress)

    def attach(self, run: Run) -> Context:
        """This Context now runs in `run` (created once its inputs were checked)."""
        self.run = run
        return self

    # --- the model and the data ---------------------------------------------------------------

    def source(self, seed: int | None = None) -> ModelSource:
        """The model as the run builds it: classes from the data for library models, weights
        initialised under the run's seed (or `seed`)."""
        c = self.config
        shape = parse_shape(c.input_shape) if c.input_shape is not None else None
        torch.manual_seed(c.seed if seed is None else seed)
        return load_model(c.model, shape, c.num_classes)

    @cached_property
    def model_source(self) -> ModelSource:
        src = self.source()
        if self.config.sync_bn:  # before compiling: the analysis sees SyncBatchNorm
            src.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(src.model)
        return src

    @cached_property
    def program(self) -> Program:
        return compile_source(self.config, self.model_source)

    @cached_property
    def splits(self) -> DataSplits:
        found = self.data_splits(self.model_source)
        if found is None:
            raise WidthcError(NO_DATA)
        return found

    def data_splits(self, src: ModelSource) -> DataSplits | None:
        """The splits of `--data`, or of the model file's data hooks (None without either)."""
        c = self.config
        if c.data in (None, "data()", "train_data()"):  # the model file's hooks
            return splits_from_hooks(src.module, c.model, c.seed)
        return load_splits(c.data, tuple(src.example_inputs[0].shape), c.seed)

    @property
    def loss(self):
        return self.model_source.loss or cross_entropy(self.config.train.label_smoothing)

    @property
    def metric(self):
        return self.model_source.metric or accuracy

    @property
    def metric_name(self) -> str:
        """The metric as reports name it (a model file's metric() by its docstring's first line)."""
        name = metric_name(self.metric)
        return "the model's metric()" if name == "metric()" else name

    @property
    def score_metric(self):
        """What max-max maximises: the model's metric, or minus its loss (`--score loss`)."""
        return self.metric if self.config.search.score == "metric" else negative_loss(self.loss)

    @property
    def score_name(self) -> str:
        return (
            "minus the validation loss" if self.config.search.score == "loss" else self.metric_name
        )

    def bands(self) -> list[tuple[float, float]]:
        """The budgets' FLOPs bands [band x budget, budget] that --budget-sampling draws in."""
        band = self.config.search.budget_band
        return [(band * b, b) for b in self.budgets.values()]

    @cached_property
    def budgets(self) -> dict[str, float]:
        """Each budget of `--flops` in FLOPs per sample, checked to be reachable."""
        full = self.program.flops()
        values = {t: space.parse_budget(t, full) for t in self.config.flops}
        for value in values.values():
            self.program.check_budget(value)
        return values

    # --- the supernet -------------------------------------------------------------------------

    def supernet(self, trained: bool = True, device: torch.device | None = None) -> Supernet:
        """The run's supernet (with the trained weights of supernet.pt)."""
        if not trained:
            net = widthc.supernet(self.start, self.config.offset, self.config.train.execution)
            return net.to(device or self.device)
        return self.trained_supernet(self.program, self.run.file(SUPERNET), device)

    def trained_supernet(self, program: Program, path, device=None) -> Supernet:
        """The supernet of `program` with the weights of the checkpoint at `path`, which must
        have been trained for the same groups."""
        device = device or self.device
        net = widthc.supernet(program, self.config.offset, self.config.train.execution).to(device)
        ckpt = checkpoint.load(path, map_location=device)
        checkpoint.check_groups(path, ckpt.get("groups"), program)
        try:
            net.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise WidthcError(
                f"{path} holds another model's weights ({str(e).splitlines()[0]})"
            ) from e
        return net

    def calibration(self) -> list[torch.Tensor]:
        """The input batches every sub-network's batch-norm statistics are re-estimated on: the
        first `calib_batches` batches of a seeded order of the training split."""
        return [x for x, _ in self.calibration_batches()]

    def calibration_batches(self) -> list:
        """The calibration batches with their targets."""
        c = self.config
        data, n = self.splits.train, c.train.batch_size
        order = loop.epoch_order(len(data), c.seed, -1)
        count = min(c.search.calib_batches, len(data) // n)
        return batches(data, order, n, count)

    def validation(self) -> list:
        data = self.splits.val
        return batches(data, torch.arange(len(data)), 256)

    # --- a trained model (--pretrained) ------------------------------------------------------

    @cached_property
    def original(self) -> Chance:
        """The model as given, before anything trains it: its metric on (up to 1,024 samples
        of) the validation split, beside the chance level."""
        data = self.splits.val
        val = batches(data, torch.arange(min(len(data), ORIGINAL_SAMPLES)), 256)
        model = self.model_source.model.to(self.device)
        return against_chance(model, val, self.metric, seed=self.config.seed)

    @cached_property
    def ordering(self) -> Ordering:
        """The program with its channels sorted by `--order-by` importance, proved equal
        (widthc.ordering; taylor reads the calibration batches). The model is not changed."""
        loss = None if self.model_source.loss is None else self.loss
        return order_channels(self.program, self.calibration_batches(), self.config.order_by, loss)

    @property
    def start(self) -> Program:
        """The program the supernet starts from: with --pretrained, the ordered one."""
        return self.ordering.program if self.config.pretrained else self.program

    # --- multi-stage search: the later stages' models ----------------------------------------

    def next_stage(self, program: Program, step: dict) -> Program:
        """The program of the next stage of a multi-stage search: `program`'s model slimmed at
        the stage's winning candidate (its weights), analysed with the next stage's beta."""
        cand = program.validate(WidthChoice.from_json(step["candidate_choice"]))
        model = widthc.slim(program, cand)
        return widthc.compile(model, program.example_inputs, step["beta"], align=self.config.align)

    def replay(self, chain: list, program: Program) -> Program:
        """The last stage's program, rebuilt from `program` (the original model's, trained or
        fresh) through the chain of earlier stages' winning candidates."""
        for step in chain:
            program = self.next_stage(program, step)
        return program

    def last_supernet(self, result: dict, device=None) -> tuple[Program, Supernet]:
        """The last stage's trained supernet of a multi-stage result (its program replayed)."""
        program = self.replay(result["chain"], self.program)
        path = self.run.stage_dir(len(result["chain"]) + 1) / SUPERNET
        return program, self.trained_supernet(program, path, device)


def compile_source(config: RunConfig, src: ModelSource) -> Program:
    """The analysis of a model as the run configures it (beta, leaves, align, uniform bins)."""
    c = config
    program = widthc.compile(
        src.model, src.example_inputs, c.beta, c.leaves, c.align, auto_leaf=c.auto_leaf
    )
    if c.uniform_bins:
        program = program.rebin(program.beta, uniform=c.uniform_bins)
    return program
