"""The run configuration: every option of a run, typed and frozen, each default written once.

`RunConfig` is what `widthc slim` (and `train`, `search`, `export`, `retrain`) runs: its own
fields (the model, how it is traced and binned, the data, the device, the budgets) and three
parts, `TrainConfig`, `SearchConfig` and `RetrainConfig` (widthc/config_parts.py). Every field
carries its CLI help (`option`): the CLI's options are generated from these classes, and
config.json is their flat JSON (`RunConfig.to_json` / `from_json`; the option names are unique
across the parts).

This module imports nothing heavy (no torch, no numpy): `widthc --help` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from widthc.config_parts import RetrainConfig, SearchConfig, TrainConfig, bad, tournament_check
from widthc.errors import WidthcError
from widthc.options import (
    AMP,
    DEFAULT_RUNTIME,
    EXECUTIONS,
    FP16_NEEDS_CUDA,
    PROBES,
    REFINES,
    RUNTIMES,
    SAMPLINGS,
    SCORES,
    default,
    device_refusal,
    flag_name,
    option,
    option_fields,
    private_bn_refusal,
)  # fmt: skip

__all__ = [
    "AMP", "DEFAULT_RUNTIME", "EXECUTIONS", "FP16_NEEDS_CUDA", "PROBES", "REFINES", "RUNTIMES",
    "RetrainConfig", "RunConfig", "Schedule", "SearchConfig", "TrainConfig", "default",
    "flag_name", "option", "option_fields", "SAMPLINGS", "SCORES",
]  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """Epochs of the supernet and of each retraining; `finetune`: retraining starts from the
    supernet's weights."""

    supernet: int
    retrain: int
    finetune: bool


_PARTS = {"train": TrainConfig, "search": SearchConfig, "retrain": RetrainConfig}


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run. Groups: `model` (what is traced and how), `bins`, `runtime` (where
    latency is measured), `run` (data, supernet, device), `budget`, `export`, `from`; and the
    parts `train`, `search`, `retrain`."""

    model: str = option(
        "", "A model.py file, package.module:function, torchvision:NAME or timm:NAME.", "model",
        argument=True,
    )  # fmt: skip
    input_shape: str | None = option(
        None, "Example input shape, e.g. 1,3,224,224.", "model", metavar="SHAPE"
    )
    leaves: tuple[str, ...] = option(
        (), "Module class or path not to trace into (repeatable).", "model",
        flag="--leaf", multiple=True, metavar="NAME",
    )  # fmt: skip
    auto_leaf: bool = option(
        True, "Trace a submodule that torch.fx cannot trace as one opaque call.", "model"
    )
    beta: float = option(1.0, "Minimum bin size (paper eq. 9).", "bins")
    align: str | None = option(
        None, "Keep channel counts multiples of this: a number (1: the paper's bins), or auto: "
        "the channel block the --runtime computes in, measured [default: auto with --latency "
        "or --runtime, else 1].", "bins", metavar="A|auto",
    )  # fmt: skip
    uniform_bins: int | None = option(
        None, "K bins of equal channel count per group instead of FLOPs-sensitive bins (A.7).",
        "bins", min=1, metavar="K",
    )  # fmt: skip
    runtime: str | None = option(
        None, f"Runtime of latency budgets and measurements: {', '.join(RUNTIMES)} "
        f"[default: {DEFAULT_RUNTIME}].", "runtime", metavar="NAME",
    )  # fmt: skip
    runtime_threads: int = option(1, "Threads of one inference on --runtime.", "runtime")
    runtime_batch: int = option(1, "Batch size of one inference on --runtime.", "runtime")
    latency_samples: int = option(
        40, "Widths measured end to end to fit the latency model (cached).", "runtime"
    )
    latency_cache: str | None = option(
        None, "Folder of cached latency measurements [default: $WIDTHC_CACHE, else "
        "~/.cache/widthc].", "runtime", metavar="DIR",
    )  # fmt: skip
    data: str | None = option(
        None, "digits, mnist, mnist1d, mnist1d-10k, imagefolder:PATH, cifar10:PATH or synthetic; "
        "default: the model file's train_data()/val_data().", "run", metavar="SOURCE",
    )  # fmt: skip
    offset: int = option(1, "Locally free offset r (0: fixed pattern).", "run")
    num_classes: int | None = option(
        None, "Build the model with this many classes (default: the data's; library models).", "run"
    )
    device: str = option("cpu", "Device to train and score on.", "run", choices=("cpu", "cuda"))
    distributed: bool = option(
        False, "DDP under torchrun (automatic under torchrun).", "run", flag_only=True
    )
    sync_bn: bool = option(
        False, "Convert batch norms to SyncBatchNorm (distributed).", "run", flag_only=True
    )
    flops: tuple[str, ...] = option(
        (), "FLOPs budget(s) per sample: 300M, 1.2G, 4.1e9 or 50% of the full model.", "budget",
        metavar="BUDGET[,BUDGET...]",
    )  # fmt: skip
    params: tuple[str, ...] = option(
        (), "Parameter budget(s): 1M, 250K or 50% of the full model.", "budget",
        metavar="BUDGET[,BUDGET...]",
    )  # fmt: skip
    latency: tuple[str, ...] = option(
        (), "Latency budget(s) on --runtime: 2ms, 500us or 50% of the full model's measured "
        "latency.", "budget", metavar="BUDGET[,BUDGET...]",
    )  # fmt: skip
    onnx: bool = option(True, "Also write and check slim.onnx.", "export")
    pretrained: bool = option(
        False, "Start from the model's trained weights: sort its channels by importance, train "
        "the supernet for a short share of --epochs, fine-tune each width from the trained "
        "weights for the rest.",
        "run", flag_only=True,
    )  # fmt: skip
    order_by: str = option(
        "l2", "With --pretrained: the channel importance to sort by (l1, l2, bn or taylor).", "run"
    )
    supernet_share: float = option(
        0.2, "With --pretrained: the share of --epochs that trains the supernet.", "run"
    )
    supernet_lr_scale: float = option(
        1.0, "With --pretrained: the supernet's learning rate as a fraction of --lr.", "run"
    )
    from_run: str | None = option(
        None, "Reuse the trained supernet of RUN_DIR.", "from", flag="--from", metavar="RUN_DIR"
    )
    world_size: int = field(default=1, metadata={"help": "", "group": "", "cli": {}})
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def runtime_name(self) -> str:
        return self.runtime or DEFAULT_RUNTIME

    @property
    def budgets(self) -> dict[str, tuple[str, ...]]:
        """The budget texts of every kind given (flops, params, latency)."""
        return {k: getattr(self, k) for k in ("flops", "params", "latency") if getattr(self, k)}

    @property
    def align_text(self) -> str:
        """`--align` as given, or its default: auto with a latency budget or a `--runtime`
        (BENCHMARKS.md, "--align auto"), else 1 (the paper's bins)."""
        if self.align is not None:
            return str(self.align)
        return "auto" if self.latency or self.runtime is not None else "1"

    def check(self) -> RunConfig:
        """Every option in range (one sentence for the first that is not)."""
        for part in (self.train, self.search, self.retrain):
            part.check()
        if self.offset < 0:
            raise bad("offset", "0 or more", self.offset)
        if not self.beta > 0:
            raise bad("beta", "positive", self.beta)
        if self.align_text != "auto" and not (self.align_text.isdigit() and int(self.align_text)):
            raise bad("align", "a whole number of channels, 1 or more, or auto", self.align)
        if self.runtime_name not in RUNTIMES:
            names = ", ".join(RUNTIMES)
            raise WidthcError(f"--runtime {self.runtime} is not a runtime: choose one of {names}")
        for name, low in (("runtime_threads", 1), ("runtime_batch", 1), ("latency_samples", 8)):
            if getattr(self, name) < low:
                raise bad(name, f"at least {low}", getattr(self, name))
        if self.search.stages > 1 and max(map(len, self.budgets.values()), default=1) != 1:
            raise WidthcError("--stages above 1 searches one budget per run: give one budget")
        s = self.search
        if self.train.private_bn and s.stages > 1:
            raise WidthcError(private_bn_refusal("stages"))
        if s.refine_epochs and (s.stages > 1 or self.latency):
            raise WidthcError("--refine-epochs refines one-stage FLOPs or params searches only")
        if s.score_climb and (s.stages > 1 or self.latency or s.refine_epochs):
            raise WidthcError("--score-climb climbs one-stage FLOPs or params searches only, "
                              "without --refine-epochs")  # fmt: skip
        if s.score_again and (s.stages > 1 or self.latency or s.refine_epochs):
            raise WidthcError("--score-again tunes one-stage FLOPs or params searches only, "
                              "without --refine-epochs")  # fmt: skip
        if s.score_retrain:
            tournament_check(self)
        if s.refine_epochs and s.refine_widths == "band" and not self.flops:
            raise WidthcError("--refine-widths band draws widths in FLOPs bands: give --flops")
        # lazy: the importance methods live with the pass, which imports torch (`--help` does not)
        from widthc.passes.order import METHODS

        if self.order_by not in METHODS:
            raise WidthcError(f"--order-by {self.order_by} is not one of {', '.join(METHODS)}")
        if not 0 < self.supernet_share < 1:
            raise bad("supernet_share", "in (0, 1)", self.supernet_share)
        if not 0 < self.supernet_lr_scale <= 1:
            raise bad("supernet_lr_scale", "in (0, 1]", self.supernet_lr_scale)
        if self.train.budget_sampling and not self.flops:
            raise WidthcError(
                "--budget-sampling needs the budgets: give them with --flops (widthc slim)"
            )
        if self.sync_bn and self.device != "cuda":
            raise WidthcError(
                "--sync-bn needs --device cuda: torch's SyncBatchNorm runs on GPUs only"
            )
        if why := device_refusal(self.train, self.device):
            raise WidthcError(why)
        return self

    def schedule(self) -> Schedule:
        """The epochs of the supernet and of each retraining, and whether retraining starts
        from the supernet's weights. With --pretrained, --epochs is the whole schedule after
        the trained model: `supernet_share` of it trains the supernet, the rest fine-tunes
        each width from the model's trained weights."""
        t, r = self.train, self.retrain
        if not self.pretrained:
            retrain = t.epochs if r.retrain_epochs is None else r.retrain_epochs
            return Schedule(t.epochs, retrain, r.finetune)
        supernet = max(1, round(self.supernet_share * t.epochs))
        retrain = max(1, t.epochs - supernet) if r.retrain_epochs is None else r.retrain_epochs
        return Schedule(supernet, retrain, r.finetune)

    def supernet_training(self) -> TrainConfig:
        """The training options of the supernet: its epochs from `schedule`; with --pretrained
        its learning rate `supernet_lr_scale` x --lr (the fine-tuning keeps --lr)."""
        scale = self.supernet_lr_scale if self.pretrained else 1.0
        return replace(self.train, epochs=self.schedule().supernet, lr=scale * self.train.lr)

    # --- flat JSON (config.json) and option dicts ----------------------------------------------

    def to_json(self) -> dict:
        """The flat dict config.json holds (tuples as lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _PARTS}
        for part in _PARTS:
            out.update(asdict(getattr(self, part)))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @staticmethod
    def from_json(data: dict[str, Any]) -> RunConfig:
        """A config from a flat dict of options (config.json, or the CLI's); keys of no option
        (command, versions) are ignored, missing ones take their defaults."""
        own = {f.name: f for f in fields(RunConfig) if f.name not in _PARTS}
        kwargs = {k: _typed(own[k], v) for k, v in data.items() if k in own}
        for part, cls in _PARTS.items():
            kwargs[part] = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        return RunConfig(**kwargs)

    def updated(self, **options) -> RunConfig:
        """This config with some options (flat names, any part) changed."""
        return RunConfig.from_json({**self.to_json(), **options}) if options else self


def _typed(f, value):
    """JSON lists back to the tuples a frozen config holds; an old run's number `align` as text."""
    if f.name == "align" and isinstance(value, int):
        return str(value)
    return tuple(value) if isinstance(value, list) and str(f.type).startswith("tuple") else value
