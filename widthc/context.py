"""The `Context` of a run: its configuration, the run directory, and what every stage shares,
each built once on first use (the model, its analysis, the data, the runtime and its latency
model, the budgets).

A Context exists before its run directory does: the commands check every input on it (the
data through the model, the budgets in range) and only then create the directory
(`attach`), so nothing is written before the inputs are known to be good. The stages then run
on the same Context, so the model is compiled once and the data loaded once. A Context of an
existing run (`Context.open`) rebuilds the same values from config.json (seeded).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

import widthc
from widthc import checkpoint, loop, space
from widthc.config import RunConfig
from widthc.errors import WidthcError
from widthc.evaluate import (
    Chance,
    MaxMax,
    accuracy,
    against_chance,
    batches,
    metric_name,
    negative_loss,
)
from widthc.frontends.data import SOURCES, DataSplits, load_splits, splits_from_hooks
from widthc.frontends.models import ModelSource, load_model, parse_shape
from widthc.ir import WidthChoice
from widthc.latency import cache, runtimes
from widthc.latency.align import channel_block
from widthc.latency.measure import Measurer
from widthc.latency.model import LatencyModel
from widthc.ordering import Ordering, order_channels
from widthc.precision import Precision
from widthc.program import Program
from widthc.run import ANALYSIS, SUPERNET, Run
from widthc.supernet import Supernet
from widthc.train import cross_entropy
from widthc.tuning import Tuning

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
        return compile_source(self.config, self.model_source, self.align)

    # --- the runtime and latency ----------------------------------------------------------

    @cached_property
    def runtime(self) -> runtimes.Runtime:
        """The runtime latency is measured on, checked to run on this machine."""
        c = self.config
        return runtimes.runtime(c.runtime_name, c.runtime_threads, c.runtime_batch).check()

    @cached_property
    def cache_root(self) -> Path:
        return cache.root(self.config.latency_cache)

    @cached_property
    def block(self) -> int:
        """The runtime's channel block, measured (cached per machine)."""
        return channel_block(self.runtime, self.cache_root, self.echo)

    @cached_property
    def align(self) -> int:
        """`--align` in channels: `auto` is the runtime's block; a run analysed already keeps
        its bins (`widthc search RUN --latency 2ms` on a run trained with the default 1)."""
        analysed = self.run.read_json(ANALYSIS, {}) if self.run is not None else {}
        if isinstance(analysed.get("align"), int):
            return analysed["align"]
        text = self.config.align_text
        return self.block if text == "auto" else int(text)

    @property
    def measures_latency(self) -> bool:
        """Whether the run models latency: a latency budget, or a runtime given."""
        return bool(self.config.latency) or self.config.runtime is not None

    @cached_property
    def measurer(self) -> Measurer:
        return Measurer(self.program, self.runtime, self.cache_root, self.echo, self.progress)

    @cached_property
    def latency(self) -> LatencyModel:
        """The latency model of the program's widths (fitted to measured widths, cached)."""
        return self.measurer.model(self.config.latency_samples, self.block)

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
        """The budgets' FLOPs bands [band x budget, budget] that --budget-sampling draws in
        (budgets with a FLOPs limit: --budget-sampling needs --flops)."""
        band = self.config.search.budget_band
        flops = [b.value("flops") for b in self.budgets.values()]
        return [(band * f, f) for f in flops if f is not None]

    @cached_property
    def budgets(self) -> dict[str, space.Budget]:
        """Every budget of the run by its label, each limit checked to be reachable: FLOPs and
        params of the smallest and the full width; latency measured (the smallest width and
        the full model, before the latency model is fitted, so a bad budget costs no more),
        then against the fitted model, whose full width a `50%` latency budget is half of (the
        model and the budget on one scale: its prediction of the full model)."""
        if not self.config.budgets:  # `widthc train`: budgets come with the search
            return {}
        program = self.program
        smallest = program.smallest()
        fulls = {"flops": program.flops(), "params": program.params()}
        ranges = {
            "flops": (program.flops(smallest), fulls["flops"], ""),
            "params": (program.params(smallest), fulls["params"], ""),
        }
        costs = {"flops": program.flops_many, "params": program.params_many}
        if self.config.latency:
            lo, full = self.measurer.anchors()
            where = f" on {self.runtime.describe()}"
            fulls["latency"], ranges["latency"] = full, (lo, full, f"{where} (measured)")
            costs["latency"] = lambda widths: self.latency.latency_many(widths)
            self._limits(fulls, costs, ranges)  # a budget out of reach fails before the fit
            ends = np.stack([program.space.smallest(), program.space.full()])
            lo, full = (float(ms) for ms in self.latency.latency_many(ends))
            fulls["latency"], ranges["latency"] = full, (lo, full, f"{where} (predicted)")
        return {b.label: b for b in self._limits(fulls, costs, ranges)}

    def _limits(self, fulls: dict, costs: dict, ranges: dict) -> list[space.Budget]:
        return [
            space.Budget(
                [space.Limit(k, t, space.parse_budget(t, fulls[k], k)) for k, t in spec.items()],
                costs,
            ).check(ranges)
            for spec in space.budget_specs(**self.config.budgets)
        ]

    # --- the supernet -------------------------------------------------------------------------

    def supernet(
        self, trained: bool = True, device: torch.device | None = None, refined: bool = True
    ) -> Supernet:
        """The run's supernet with the trained weights of supernet.pt, or, with --refine-epochs
        once refined (and `refined`), those the search chose with (refine/supernet.pt)."""
        if not trained:
            return self.new_supernet(self.start).to(device or self.device)
        path = self.run.refine_dir() / SUPERNET
        if not (refined and self.config.search.refine_epochs and path.exists()):
            path = self.run.file(SUPERNET)
        return self.trained_supernet(self.program, path, device)

    def new_supernet(self, program: Program) -> Supernet:
        """A supernet of `program` as the run configures it (offset, execution, private BN)."""
        t = self.config.train
        return widthc.supernet(program, self.config.offset, t.execution, t.private_bn)

    def trained_supernet(self, program: Program, path, device=None) -> Supernet:
        """The supernet of `program` with the weights of the checkpoint at `path`, which must
        have been trained for the same groups."""
        device = device or self.device
        net = self.new_supernet(program).to(device)
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

    def scorer(
        self, net: Supernet, precision: Precision | None = None, tuned: bool = True,
        steps: int | None = None,
    ) -> MaxMax:  # fmt: skip
        """Max-max on `net` as this run scores: the calibration and validation batches, the
        score's metric and seed, and --score-steps' fine-tuning (not if `tuned` is False: the
        shared-weight search of --score-top; `steps`: that many instead, as --score-again
        tunes). Every stage (and benchmark) that scores widths builds its scorer here, so all
        of them score alike. --score-candidates best: the tuned scorer tunes only the candidate
        an untuned one (built here too) scores best."""
        tuning = self.tuning(steps) if tuned else None
        best = tuning is not None and self.config.search.score_candidates == "best"
        shared = self.scorer(net, precision, tuned=False) if best else None
        return MaxMax(
            net, self.calibration(), self.validation(), self.score_metric,
            seed=self.config.seed, precision=precision, tuning=tuning, shared=shared,
        )  # fmt: skip

    @property
    def score_steps(self) -> int:
        """The fine-tuning's steps before each score: --score-steps, or --score-epochs E (by
        default 4) as E passes over the training split's whole batches (at least one batch a
        pass); 0: off."""
        s = self.config.search
        if s.tune_passes:
            return s.tune_passes * max(len(self.splits.train) // self.config.train.batch_size, 1)
        return s.tune_steps

    def tuning(self, steps: int | None = None) -> Tuning | None:
        """--score-steps (or `steps`): how every scored width is fine-tuned alone first (None:
        off). The same whole training batches for every width, in a seeded order of their own,
        with the run's momentum, weight decay and --min-lr, from --score-lr (default --lr)."""
        s, t = self.config.search, self.config.train
        if not s.tuned:
            return None
        steps = steps or self.score_steps
        data, n = self.splits.train, t.batch_size
        count = min(steps, max(len(data) // n, 1))  # cycled when fewer than the steps
        order = loop.epoch_order(len(data), self.config.seed, -2)[: count * n]
        return Tuning(
            steps, s.score_lr or t.lr, batches(data, order, n), self.loss,
            t.momentum, t.weight_decay, t.min_lr,
        )  # fmt: skip

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
        return widthc.compile(model, program.example_inputs, step["beta"], align=self.align)

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


def compile_source(config: RunConfig, src: ModelSource, align: int | None = None) -> Program:
    """The analysis of a model as the run configures it (beta, leaves, align, uniform bins);
    `align` resolves `--align auto` (a run's `Context.align`)."""
    c = config
    if align is None:
        if c.align_text == "auto":
            raise WidthcError("--align auto needs the run's runtime: compile through its Context")
        align = int(c.align_text)
    program = widthc.compile(
        src.model, src.example_inputs, c.beta, c.leaves, align, auto_leaf=c.auto_leaf
    )
    if c.uniform_bins:
        program = program.rebin(program.beta, uniform=c.uniform_bins)
    return program
