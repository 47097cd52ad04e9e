"""Min-min training of a CafeNet supernet (paper §3.1, eq. 11-12; DESIGN §7).

Per step: sample a width (seeded; uniformly over each searchable group's bins by default, other
laws in `widthc.sampling`), evaluate every candidate sub-network of that width without
gradients on (a fraction of) the batch, then forward and backward only the candidate with the
smallest loss. For the first `minmin_start` of the steps a random candidate is trained instead
(`minmin_start=1`: the random-candidate baseline; `offset=0` on the supernet: the fixed-pattern
baseline). Optionally the sandwich rule also trains the largest and the smallest width every
step, and in-place distillation (slimmable networks, BigNAS) trains the largest width on the
labels and the others on its outputs. The epoch-end validation measures the model's metric.
The loop, optimizer, checkpoints and log are `widthc.loop`'s, shared with retraining; under
torchrun the supernet runs in DDP and every rank trains the same candidate.

With masked execution (accelerators) the candidates are probed in one forward and the min-loss
one is chosen on the device (`--probes`, widthc/stacked.py): a step reads nothing back to the
host; the chosen index, the probe and trained losses stay tensors until the loop reads them
(`--log-every`), and `settle` then counts the candidate and checks the probes. Sliced execution
(CPU) probes one candidate per forward and the host picks the candidate.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from widthc import distributed, loop, sampling, sorting
from widthc.config import TrainConfig
from widthc.errors import WidthcError
from widthc.evaluate import Metric, batch, evaluate, metric_name
from widthc.ir import WidthChoice
from widthc.loop import TrainResult
from widthc.options import BATCHED_NEEDS_MASKED, private_bn_refusal
from widthc.precision import Precision
from widthc.run import SUPERNET as CHECKPOINT
from widthc.run import TRAIN_LOG as LOG
from widthc.sampling import WidthSampler
from widthc.stacked import Stacked
from widthc.supernet import Supernet, device_of
from widthc.swaps import Applied

__all__ = [
    "CHECKPOINT", "LOG", "MinMinStep", "TrainConfig", "TrainResult", "decay_used", "train_supernet",
]  # fmt: skip


def train_supernet(
    net: Supernet,
    train_data: Dataset,
    val_data: Dataset | None = None,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = False,
    loss_fn: Callable | None = None,
    metric: Metric | None = None,
    bands: Sequence[tuple[float, float]] = (),
    widths: Callable[[torch.Generator], WidthChoice] | None = None,
) -> TrainResult:
    """Train `net` with min-min (see module docstring). With `run_dir`, checkpoints go to
    run_dir/supernet.pt and one JSON line per step to run_dir/train.jsonl; `resume` continues
    from the checkpoint. `max_steps` stops early (after a checkpoint). `loss_fn` and `metric`
    default to cross-entropy and top-1 accuracy; `bands` are the budgets' FLOPs bands (low,
    high) that `budget_sampling` draws widths in; `widths` draws each step's width instead of
    the config's law (e.g. a `sampling.WidthSet`: only those widths train)."""
    cfg = (config or TrainConfig()).check()
    if net.private is not None and (cfg.decay_used or distributed.active()):
        raise WidthcError(private_bn_refusal("decay_used" if cfg.decay_used else "distributed"))
    classifier = loss_fn is None  # a model file's own loss may take any output
    loss_fn = loss_fn or cross_entropy(cfg.label_smoothing)
    precision = Precision.of(cfg, device_of(net))
    precision.module(net)  # before DDP wraps it: the buckets see the final memory format
    if cfg.compile:
        net.capture_ready(compile=True)  # masked execution only (one sentence otherwise)
    distill_fn = soft_cross_entropy if classifier else loss_fn  # the largest width's outputs
    widths = widths or WidthSampler(net.program, cfg.sampling, cfg.budget_sampling, bands)
    step = MinMinStep(net, distributed.wrap(net), cfg, loss_fn, widths, distill_fn)
    n_steps = cfg.epochs * (len(train_data) // max(cfg.batch_size * distributed.world_size(), 1))
    params = [p for p in net.parameters() if p.requires_grad]
    opt_cfg = replace(cfg, weight_decay=0.0) if cfg.decay_used else cfg  # --decay-used: the step's
    opt, schedule = loop.optimizer(params, opt_cfg, n_steps)
    files = (Path(run_dir) / CHECKPOINT, Path(run_dir) / LOG) if run_dir is not None else None
    validate = _validator(net, train_data, val_data, cfg, metric) if val_data is not None else None
    trainer = loop.Trainer(
        net, step, train_data, cfg, opt, schedule, files, validate, step.fmt,
        program=net.program, precision=precision,
    )  # fmt: skip
    if resume:
        trainer.restore()
    else:
        step.sampler.manual_seed(cfg.seed)
        trainer.start()
    net.train()
    if classifier and trainer.step < trainer.total_steps:
        _check_model(net, train_data)
    records = trainer.run(max_steps, progress, label="supernet")
    return TrainResult(
        steps=trainer.step,
        losses=[r["loss"] for r in records],
        candidates=[r["candidate"] for r in records],
        histogram=list(step.histogram),
        agreement=step.agree[0] / step.agree[1] if step.agree[1] else None,
        validation=list(trainer.validation),
    )


def cross_entropy(label_smoothing: float = 0.0) -> Callable:
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)


def sample_width(net: Supernet, gen: torch.Generator) -> WidthChoice:
    """A width drawn uniformly over each searchable group's bins (eq. 1), left-most pattern."""
    return sampling.sample_width(net.program, gen)


def soft_cross_entropy(out: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's class probabilities (in-place distillation)."""
    return F.cross_entropy(out, F.softmax(teacher, dim=-1))


class MinMinStep:
    """One min-min step (eq. 11-12): draw a width (`widths`, a `WidthSampler`), probe its
    candidates without gradients, backpropagate the min-loss one (a random one for the first
    `minmin_start` of the steps; also the largest and smallest widths with the sandwich rule;
    with distillation the largest width on the labels first, the others on its outputs through
    `distill_fn`). The optimizer step is the trainer's; a non-finite probe returns before any
    backward, a non-finite trained loss is found when the loop reads the record (`settle`)."""

    def __init__(
        self, net: Supernet, model, cfg: TrainConfig, loss_fn: Callable,
        widths: WidthSampler | None = None, distill_fn: Callable | None = None,
    ):  # fmt: skip
        self.net, self.model, self.cfg, self.loss_fn = net, model, cfg, loss_fn
        self.widths = widths or WidthSampler(net.program)
        self.distill_fn = distill_fn or loss_fn
        self.sampler = torch.Generator()
        self.histogram: list[int] = []
        self.agree = [0, 0]  # [agreements, comparisons]
        self.trainer: loop.Trainer | None = None  # the loop that runs this step
        device = device_of(net)
        mode = net.mode(device)
        if cfg.probes == "batched" and mode != "masked":
            raise WidthcError(BATCHED_NEEDS_MASKED.format(mode))
        # auto: batched on accelerators only (on a CPU no faster than `each`: 0.97-1.28x its
        # step time, bench/step_counts.py); --measure-agreement reads every probe on the host
        wanted = cfg.probes == "batched" or (cfg.probes == "auto" and device.type != "cpu")
        self.batched = mode == "masked" and wanted and not cfg.measure_agreement
        self.unbatched: str | None = None  # why stacked probes stopped (an op vmap cannot run)

    @property
    def precision(self) -> Precision:
        return self.trainer.precision if self.trainer is not None else Precision()

    def state(self) -> dict:
        return dict(sampler=self.sampler.get_state(), histogram=self.histogram, agree=self.agree)

    def load_state(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"])
        self.histogram, self.agree = list(state["histogram"]), list(state["agree"])

    def epoch_end(self, epoch: int) -> dict | None:
        """`--sort-every`: the supernet's channels (and momentum) sorted at this epoch's end."""
        return sorting.at_epoch_end(self.net, self.trainer.opt, self.cfg, epoch)

    def fmt(self, record: dict) -> str:
        return f"loss {record['loss']:.4f} candidates {'/'.join(map(str, self.histogram))}"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        cfg, net = self.cfg, self.net
        done, total = self.trainer.step, self.trainer.total_steps
        width = sorting.warmup_width(net, cfg, self.trainer) or self.widths(self.sampler)
        cands = net.candidates(width)
        self.histogram += [0] * (len(cands) - len(self.histogram))
        probe: list[float] | torch.Tensor = []
        n = max(min(len(y), 2), math.ceil(cfg.select_batch_fraction * len(y)))
        stack = None
        if len(cands) == 1:
            j = 0
        elif done < cfg.minmin_start * total:
            j = int(torch.randint(len(cands), (1,), generator=self.sampler))
        elif (found := self._batched_probe(cands, x[:n], y[:n])) is not None:
            stack, probe = found
            j = torch.argmin(probe)  # on the device (the first smallest, as the host's)
        else:
            probe = self._probe(cands, x[:n], y[:n]).tolist()  # the host picks the candidate
            bad = next((i for i, v in enumerate(probe) if not math.isfinite(v)), None)
            if bad is not None:
                return {"loss": probe[bad], "candidate": bad}
            j = _argmin(probe)
            if cfg.measure_agreement and n < len(y):
                self.agree[0] += _argmin(self._probe(cands, x, y).tolist()) == j
                self.agree[1] += 1
        trained = self._trained(cands[j] if stack is None else stack.chosen(j))
        losses, teacher = {}, None
        for i, (name, choice) in enumerate(trained):
            fixed = isinstance(choice, Applied)  # chosen on the device: the width's masks
            net.set_choice(cands[0] if fixed else choice)
            sync = _no_sync(self.model) if i < len(trained) - 1 else contextlib.nullcontext()
            with sync, net.running(choice) if fixed else contextlib.nullcontext():
                with self.precision.autocast():
                    out = self.model(x)
                    if teacher is not None:  # distillation: the largest width's outputs
                        loss = self.distill_fn(out, teacher)
                    else:
                        loss = self.loss_fn(out, y)
                        teacher = out.detach() if cfg.distill else None
                losses[name] = distributed.mean(loss.detach().float())  # read by the loop
                self.precision.backward(loss)
        if net.private is not None:  # other widths' rows: zero gradients, as unused channels
            net.private.fill_grads(net)
        if cfg.decay_used and cfg.weight_decay:
            self.precision.unscale(self.trainer.opt)
            decay_used(net, [choice for _, choice in trained], cfg.weight_decay)
        record = {
            "loss": losses["candidate"],
            "candidate": j,
            "candidates": len(cands),
            "candidate_losses": probe,
            "width": [k for _, k in width.ks()],
        }
        if stack is None:
            self.histogram[j] += 1
            record["flops"] = net.program.flops(cands[j])
        else:
            record["chosen_from"] = cands  # a device index: counted by `settle`
        if len(losses) > 1:  # sandwich or distillation widths: read with the record
            record["trained_widths"] = list(losses)
            record["trained_losses"] = torch.stack(list(losses.values()))
        return record

    def settle(self, record: dict) -> None:
        """Once the loop has read a record: a candidate chosen on the device is counted (or
        its first non-finite probe stops training, as the host's choice would have), and the
        first non-finite loss of the widths trained (in their order) stops training, naming
        that width."""
        cands = record.pop("chosen_from", None)
        if cands is not None:
            probe = record["candidate_losses"]
            bad = next((i for i, v in enumerate(probe) if not math.isfinite(v)), None)
            if bad is not None:
                record["loss"], record["candidate"] = probe[bad], bad
                record.pop("trained_widths", None), record.pop("trained_losses", None)
                return
            record["candidate"] = j = int(record["candidate"])
            self.histogram[j] += 1
            record["flops"] = self.net.program.flops(cands[j])
        names, values = record.pop("trained_widths", ()), record.pop("trained_losses", ())
        for name, value in zip(names, values):
            if not math.isfinite(value):
                record["loss"] = value
                record["candidate"] = record["candidate"] if name == "candidate" else name
                return

    def _trained(self, cand: WidthChoice) -> list[tuple[str, WidthChoice]]:
        """What the step backpropagates, in order: the candidate, then the largest and the
        smallest width with the sandwich rule; with distillation the largest comes first (its
        outputs are the others' targets) and the smallest only with the sandwich rule."""
        program = self.net.program
        smallest = [("smallest", program.smallest())] if self.cfg.sandwich else []
        if self.cfg.distill:
            return [("largest", program.full()), ("candidate", cand), *smallest]
        if self.cfg.sandwich:
            return [("candidate", cand), ("largest", program.full()), *smallest]
        return [("candidate", cand)]

    def _batched_probe(self, cands: list[WidthChoice], x, y):
        """(the stacked candidates, every candidate's loss) from one forward, or None: not
        batched here, or an operator that vmap cannot run stacked (bf16 batch norms on a CPU;
        out of memory), after which every step probes one forward per candidate."""
        stack = Stacked.of(self.net, cands, x.device) if self.batched else None
        if stack is None:
            return None
        try:
            losses = stack.losses(x, y, self.loss_fn, self.precision.autocast())
        except RuntimeError as e:  # the forward each below raises a fault of the model itself
            self.batched, self.unbatched = False, f"{type(e).__name__}: {e}".splitlines()[0]
            warnings.warn(f"min-min probes each candidate in its own forward from now on: the "
                          f"stacked probe failed ({self.unbatched})", stacklevel=2)  # fmt: skip
            return None
        return stack, distributed.mean(losses)

    def _probe(self, cands: list[WidthChoice], x, y) -> torch.Tensor:
        """Every candidate's loss (averaged over ranks); no gradients, no statistics updates.
        Every candidate starts from the same random state (the same dropout masks, stochastic
        depth draws), and the state is left as it was: the trained forward draws them again."""
        losses = []
        device = x.device
        devices = [device] if device.type == "cuda" else []
        with torch.inference_mode(), self.net.probing(), self.precision.autocast():
            for c in cands:
                self.net.set_choice(c)
                with torch.random.fork_rng(devices=devices):
                    losses.append(self.loss_fn(self.net(x), y).detach().float())
        return distributed.mean(torch.stack(losses))


@torch.no_grad()
def decay_used(net: Supernet, choices: list[WidthChoice | Applied], weight_decay: float) -> None:
    """Add weight decay to the gradients of the positions that `choices` (or their resolved
    tensors: a candidate chosen on the device) used, and only those: a parameter no choice
    slices is decayed whole, a sliced one at its kept positions (the union over `choices`).
    With the optimizer's own decay off, channels outside the trained sub-networks keep their
    values (without momentum)."""
    device = device_of(net.gm)
    masks: dict[int, torch.Tensor | None] = {}  # id(param) -> kept positions; None: all
    for choice in choices:
        applied = choice
        if not isinstance(choice, Applied):
            applied = net.applied(choice, device, net.mode(device))
        sliced = {
            (id(s.owner), s.attr): s
            for s in (applied.swaps if applied is not None else ())
            if not s.is_buffer and s.store == "_parameters"
        }
        for module in net.gm.modules():
            for attr, param in module.named_parameters(recurse=False):
                if masks.get(id(param), True) is None:
                    continue
                s = sliced.get((id(module), attr))
                if s is None:
                    masks[id(param)] = None  # used whole
                else:
                    kept = s.kept(param.shape, device)
                    masks[id(param)] = masks[id(param)] | kept if id(param) in masks else kept
    for param in net.parameters():
        if param.grad is None or id(param) not in masks:
            continue
        mask = masks[id(param)]
        decay = param if mask is None else param * mask
        param.grad.add_(decay, alpha=weight_decay)


def _validator(net: Supernet, train_data, val_data, cfg: TrainConfig, metric: Metric | None):
    """Validation at epoch ends: the metric (named in the record) of the largest and smallest
    widths, each after batch-norm recalibration on the first training batches."""

    def validate(epoch: int) -> dict:
        n = cfg.batch_size
        order = torch.arange(len(train_data))
        steps = min(cfg.calibration_batches, len(train_data) // n)
        calib = [batch(train_data, order[i * n : (i + 1) * n]) for i in range(steps)]
        program, precision = net.program, Precision.of(cfg, device_of(net))
        return {
            "metric": metric_name(metric),
            **{
                f"val_{name}": evaluate(
                    net, choice, val_data, calibration=calib, metric=metric, precision=precision
                )
                for name, choice in (("largest", program.full()), ("smallest", program.smallest()))
            },
        }

    return validate


def _check_model(net: Supernet, train_data) -> None:
    """Fail early and clearly when the model's output cannot be trained on these labels."""
    x, y = batch(train_data, torch.arange(min(2, len(train_data))))
    device = device_of(net)
    fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with fork, torch.no_grad(), net.probing():  # leaves every random state as it was
        net.set_choice(net.program.full())
        check_output(net(x.to(device)), y)


def check_output(out, y: torch.Tensor, classes: int | None = None) -> None:
    """A classifier's output must be one logits tensor with a column for every label (of `y`,
    or `classes` labels when the data says how many)."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        what = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise WidthcError(
            f"training needs a model that returns one logits tensor (batch x classes), or a "
            f"model file that defines loss() and metric(); this one returns {what}"
        )
    classes = max(int(y.max()) + 1, classes or 0)
    if out.shape[1] < classes:
        raise WidthcError(
            f"the model outputs {out.shape[1]} classes but the data has labels up to "
            f"{classes - 1}: build it with that many classes (--num-classes {classes})"
        )


def _argmin(values: list[float]) -> int:
    """The first index of the smallest value (torch.argmin's choice)."""
    return min(range(len(values)), key=values.__getitem__)


def _no_sync(model):
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()
