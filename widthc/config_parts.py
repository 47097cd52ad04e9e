"""The parts of a run's configuration: `TrainConfig` (supernet training and retraining),
`SearchConfig` and `RetrainConfig` (widthc/config.py holds `RunConfig`, which has one of each).

Like config.py, this module imports nothing heavy (no torch, no numpy): `widthc --help` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from widthc.errors import WidthcError
from widthc.options import (
    AMP,
    CANDIDATES,
    EXECUTIONS,
    PROBES,
    REFINES,
    SAMPLINGS,
    SCORES,
    SORTS,
    check_choices,
    flag_name,
    option,
    private_bn_refusal,
)  # fmt: skip

__all__ = ["RetrainConfig", "SearchConfig", "TrainConfig", "bad"]


# The fine-tuning before a score when the user gives none (BENCHMARKS.md, "The default since
# session 15"): each budget's 16 best widths on the shared weights, and its uniform one, tuned
# alone 4 passes over the training split and scored again by minus the validation loss.
DEFAULT_PASSES = 4
DEFAULT_TOP = 16
# .format(what the option does): --score-climb or --score-again without tuned finalists
ONLY_FINALISTS = (
    "{} tuned finalists: give --score-top K too (with --score-steps or --score-epochs "
    "alone every scored width is tuned, and there are no finalists)"
)


def bad(name: str, rule: str, value) -> WidthcError:
    return WidthcError(f"{flag_name(name)} must be {rule}, got {value}")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (supernet training and retraining)."""

    epochs: int = option(1, "Training epochs.")
    batch_size: int = option(64, "Batch size per process.")
    lr: float = option(0.1, "Initial learning rate (cosine to --min-lr).")
    min_lr: float = option(1e-5, "The cosine schedule's floor (paper A.2: 0.1 -> 1e-5).")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(1e-4, "SGD weight decay.")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss.")
    minmin_start: float = option(0.0, "Fraction of steps that train a random candidate (fig. 2b).")
    select_batch_fraction: float = option(
        1.0, "Choose the min-loss candidate on this part of a batch."
    )
    measure_agreement: bool = option(
        False, "Count how often that choice agrees with the full batch's."
    )
    sandwich: bool = option(False, "Also train the largest and smallest width every step.")
    distill: bool = option(
        False, "In-place distillation: the largest width learns the labels, the others its outputs."
    )
    sampling: str = option(
        "uniform", "Width law per step: uniform (eq. 1), extremes, flops or log.", choices=SAMPLINGS,
    )  # fmt: skip
    budget_sampling: float = option(
        0.0, "Share of steps whose width is drawn in a budget's FLOPs band (--budget-band)."
    )
    sort_every: int = option(
        0, "Sort each group's channels by importance every this many epochs (0: never)."
    )
    sort_by: str = option(
        "l1", "--sort-every/--sort-warmup: the channel importance (l1, l2 or bn).", choices=SORTS
    )
    sort_warmup: int = option(
        0, "Train the full width alone for this many epochs, then sort (Once-for-All)."
    )
    decay_used: bool = option(
        False, "Weight decay only on the channels the trained sub-network used."
    )
    private_bn: bool = option(
        False, "Batch norms own a scale and shift per width of their group (switchable BN)."
    )
    seed: int = option(0, "Random seed (widths, data order, initialisation, splits).")
    checkpoint_every: int = option(100, "Steps between checkpoints (and every epoch end).")
    calibration_batches: int = option(4, "Batch-norm recalibration batches before each validation.")
    execution: str = option(
        "auto", "Supernet execution: sliced, masked (every width at full width: static shapes), "
        "or auto (masked on CUDA where it equals sliced, sliced on CPU).", choices=EXECUTIONS,
    )  # fmt: skip
    probes: str = option(
        "auto", "Min-min probes: batched (one forward, chosen on the device; masked execution), "
        "each (a forward per candidate), or auto (batched if masked on CUDA).", choices=PROBES,
    )  # fmt: skip
    compile: bool = option(
        False, "Train through torch.compile, traced once for all widths (masked; CUDA graphs)."
    )
    amp: str = option("off", "Mixed precision of every run (fp16: CUDA only).", choices=AMP)
    channels_last: bool = option(False, "Channels-last memory format for 4-D weights and inputs.")
    log_every: int = option(
        0, "Steps between the host's reads of the losses (0: 1 on CPU, 25 on CUDA); all logged."
    )

    def check(self) -> TrainConfig:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "at least 1", getattr(self, name))
        if not self.lr > 0:
            raise bad("lr", "positive", self.lr)
        for name in ("min_lr", "weight_decay", "calibration_batches"):
            if getattr(self, name) < 0:
                raise bad(name, "0 or more", getattr(self, name))
        for name in ("momentum", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, "in [0, 1)", getattr(self, name))
        for name in ("minmin_start", "budget_sampling"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "between 0 and 1", getattr(self, name))
        if not 0 < self.select_batch_fraction <= 1:
            raise bad("select_batch_fraction", "in (0, 1]", self.select_batch_fraction)
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "0 (epoch ends only) or more", self.checkpoint_every)
        if self.sort_every < 0:
            raise bad("sort_every", "0 (never) or more", self.sort_every)
        if not 0 <= self.sort_warmup < self.epochs:
            fewer = f"fewer than the supernet's {self.epochs} epochs"
            raise bad("sort_warmup", f"0 (none) or more, {fewer}", self.sort_warmup)
        if self.log_every < 0:
            raise bad("log_every", "0 (automatic) or more", self.log_every)
        check_choices(self)  # amp, execution, probes, sampling
        for name in ("compile", "decay_used", "sort_every", "sort_warmup"):
            if self.private_bn and getattr(self, name):
                raise WidthcError(private_bn_refusal(name))
        return self


@dataclass(frozen=True)
class SearchConfig:
    """Options of the search stage (paper A.2: population 40, 50 generations, 2,000 samples)."""

    search: str = option("evolutionary", "evolutionary, random, greedy or uniform.")
    population: int = option(40, "Evolutionary: population (paper A.2).")
    generations: int = option(50, "Evolutionary: generations (paper A.2).")
    samples: int = option(2000, "Random search: widths sampled (paper A.2).")
    max_evals: int | None = option(None, "Cap on widths scored per budget.")
    budget_band: float = option(0.9, "Only widths with FLOPs in [band, 1] x budget compete.")
    calib_batches: int = option(10, "Batch-norm recalibration batches per scored sub-network.")
    stages: int = option(1, "Multi-stage search with evolving bins (eq. 10).")
    alpha: float = option(2.0, "Multi-stage: beta shrinks by this each stage.")
    score: str = option(
        "loss", "What max-max maximises: minus the validation loss (loss) or the model's metric "
        "(metric, the paper's).", choices=SCORES,
    )  # fmt: skip
    refine_epochs: int = option(0, "Epochs that then train each budget's finalists; rescored.")
    refine_top: int = option(4, "--refine-epochs: finalists per budget (the best scores).")
    refine_widths: str = option("finalists", "Refine: finalists, corners or band.", choices=REFINES)
    score_steps: int | None = option(
        None, "SGD steps that fine-tune a private copy of each scored width before it is scored "
        "(instead of --score-epochs; 0: no fine-tuning).",
    )  # fmt: skip
    score_epochs: int | None = option(
        None, "That fine-tuning counted in passes over the training split: E x its whole "
        f"batches (default {DEFAULT_PASSES} unless --score-steps is given; 0: no fine-tuning, "
        "the paper's shared-weight scores).",
    )  # fmt: skip
    score_lr: float | None = option(
        None, "The fine-tuning's learning rate (default --lr; cosine to --min-lr)."
    )
    score_top: int | None = option(
        None, "Search on shared weights, then fine-tune only each budget's K best widths and its "
        f"uniform one (0: every scored width; default {DEFAULT_TOP} with the default "
        "fine-tuning, 0 with --score-steps or --score-epochs).",
    )  # fmt: skip
    score_climb: int = option(
        0, "--score-top: then per budget up to M more widths, neighbours of the best tuned one, "
        "tuned and scored (a hill climb on tuned scores; 0: none).",
    )  # fmt: skip
    score_candidates: str = option(
        "all", "Fine-tune every candidate of a width (all) or only the one that scores best on "
        "the shared weights (best).", choices=CANDIDATES,
    )  # fmt: skip
    score_again: int = option(
        0, "--score-top: then per budget the M best tuned widths and its uniform one tuned "
        "again, longer, and scored by that tuning (0: none).",
    )  # fmt: skip
    score_again_steps: int | None = option(
        None, "--score-again: the steps of that tuning (default twice the fine-tuning's steps)."
    )
    score_retrain: int = option(
        0, "Then per budget the M best widths and its uniform one retrained with the retrain "
        "stage's recipe (seed + 1) and judged on validation (0: none).",
    )  # fmt: skip
    score_retrain_epochs: int | None = option(
        None, "--score-retrain: epochs of each retraining (default the run's retraining epochs)."
    )

    @property
    def default_tuning(self) -> bool:
        """Whether the fine-tuning before a score is widthc's default: neither --score-steps nor
        --score-epochs given (a stored 0 from an older run's config counts as given)."""
        return self.score_steps is None and self.score_epochs is None

    @property
    def tune_steps(self) -> int:
        """--score-steps, resolved: 0 unless given."""
        return self.score_steps or 0

    @property
    def tune_passes(self) -> int:
        """--score-epochs, resolved: DEFAULT_PASSES when no tuning is given, else E or 0."""
        return DEFAULT_PASSES if self.default_tuning else self.score_epochs or 0

    @property
    def tune_top(self) -> int:
        """--score-top, resolved: DEFAULT_TOP with the default tuning, else K or 0 (with
        --score-steps or --score-epochs alone every scored width is tuned, as before)."""
        if self.score_top is not None:
            return self.score_top
        return DEFAULT_TOP if self.default_tuning else 0

    @property
    def tuned(self) -> bool:
        """Whether scored widths are fine-tuned first (by default, or --score-steps or
        --score-epochs above 0)."""
        return bool(self.tune_steps or self.tune_passes)

    def again_steps(self, steps: int) -> int:
        """--score-again's tuning steps: --score-again-steps, default twice the run's tuning
        steps (`steps`: --score-steps, or --score-epochs resolved by Context.score_steps)."""
        return self.score_again_steps or 2 * steps

    def check(self) -> SearchConfig:
        # lazy: the searchers' registry imports numpy and the width space, which `--help` skips
        from widthc.search.registry import SEARCHERS

        if self.search not in SEARCHERS:
            names = ", ".join(sorted(SEARCHERS))
            raise WidthcError(f"--search {self.search} is not a searcher: choose one of {names}")
        lows = {"population": 2, "generations": 0, "samples": 1, "calib_batches": 0, "stages": 1}
        more = dict(refine_epochs=0, refine_top=1, score_steps=0, score_epochs=0, score_top=0,
                    score_climb=0, score_again=0, score_retrain=0)  # fmt: skip
        for name, low in {**lows, **more}.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise bad(name, f"at least {low}", getattr(self, name))
        if self.max_evals is not None and self.max_evals < 1:
            raise bad("max_evals", "at least 1", self.max_evals)
        if not 0 < self.budget_band <= 1:
            raise bad("budget_band", "in (0, 1]", self.budget_band)
        if not self.alpha > 0:
            raise bad("alpha", "positive", self.alpha)
        if self.score_lr is not None and not self.score_lr > 0:
            raise bad("score_lr", "positive", self.score_lr)
        check_choices(self)  # score, refine_widths, score_candidates
        if self.tune_steps and self.tune_passes:
            raise WidthcError(
                "--score-steps and --score-epochs both set the fine-tuning's length: give one"
            )
        needs_tuning = {"score_top": self.tune_top, "score_climb": self.score_climb,
                        "score_again": self.score_again,
                        "score_candidates": self.score_candidates != "all"}  # fmt: skip
        if not self.tuned and (name := next((k for k, v in needs_tuning.items() if v), None)):
            raise WidthcError(
                f"{flag_name(name)} works on fine-tuned widths, and --score-steps 0 or "
                "--score-epochs 0 turned the fine-tuning off"
            )
        if self.score_climb and not self.tune_top:
            raise WidthcError(ONLY_FINALISTS.format("--score-climb M climbs from"))
        if self.score_again and not self.tune_top:
            raise WidthcError(ONLY_FINALISTS.format("--score-again M tunes"))
        if self.score_again_steps is not None and self.score_again_steps < 1:
            raise bad("score_again_steps", "at least 1", self.score_again_steps)
        if self.score_retrain_epochs is not None and self.score_retrain_epochs < 1:
            raise bad("score_retrain_epochs", "at least 1", self.score_retrain_epochs)
        return self


@dataclass(frozen=True)
class RetrainConfig:
    """Options of the retrain stage."""

    retrain_epochs: int | None = option(
        None, "Epochs of retraining each searched width from scratch (default: --epochs; 0 skips)."
    )
    finetune: bool = option(
        False, "Retrain from the supernet's weights instead of the model's own (its initial "
        "weights: from scratch; with --pretrained, its trained ones, channels sorted).",
        off="--from-scratch",
    )  # fmt: skip

    def check(self) -> RetrainConfig:
        if self.retrain_epochs is not None and self.retrain_epochs < 0:
            raise bad("retrain_epochs", "0 or more", self.retrain_epochs)
        return self


def tournament_check(c) -> None:
    """--score-retrain M on run config `c`: what the tournament cannot do, refused."""
    s = c.search
    if s.stages > 1 or c.latency:
        raise WidthcError("--score-retrain retrains one-stage FLOPs or params searches only")
    if c.retrain.finetune:
        raise WidthcError("--score-retrain retrains from scratch or --pretrained: drop --finetune")
    if not (s.score_retrain_epochs or c.schedule().retrain):
        raise WidthcError(
            "--score-retrain needs retraining epochs: give --score-retrain-epochs E "
            "(--retrain-epochs is 0)"
        )
