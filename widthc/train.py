"""Min-min training of a CafeNet supernet (paper §3.1, eq. 11-12; DESIGN §7).

Per step: sample a width uniformly over each searchable group's bins (seeded), evaluate every
candidate sub-network of that width under `torch.no_grad()` on (a fraction of) the batch, then
forward and backward only the candidate with the smallest loss. For the first `minmin_start`
of the steps a random candidate is trained instead (`minmin_start=1`: the random-candidate
baseline; `offset=0` on the supernet: the fixed-pattern baseline). Optionally the sandwich rule
also trains the largest and the smallest width every step. SGD with momentum and a cosine
learning rate (paper A.2). Checkpoints resume bit-for-bit; under torchrun the supernet runs in
DDP and every rank trains the same candidate.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from widthc import checkpoint, distributed
from widthc.errors import WidthcError
from widthc.evaluate import batch, device_of, evaluate
from widthc.files import write_text
from widthc.ir import WidthChoice
from widthc.passes.rewrite import Supernet

CHECKPOINT = "supernet.pt"
LOG = "train.jsonl"


@dataclass
class TrainConfig:
    """Every option of a training run (the CLI writes these into config.json)."""

    epochs: int = 1
    batch_size: int = 64  # per process
    lr: float = 0.1
    min_lr: float = 1e-5  # the cosine schedule's floor (paper A.2: 0.1 -> 1e-5)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    minmin_start: float = 0.0  # fraction of steps that train a random candidate (figure 2b)
    select_batch_fraction: float = 1.0  # part of the batch the min is chosen on
    measure_agreement: bool = False  # also choose on the full batch and count agreement
    sandwich: bool = False  # also train the largest and the smallest width every step
    seed: int = 0
    checkpoint_every: int = 100  # steps; a checkpoint is also written at every epoch end
    calibration_batches: int = 4  # batch-norm recalibration before each validation

    def check(self) -> TrainConfig:
        def bad(option: str, rule: str, value) -> WidthcError:
            return WidthcError(f"--{option.replace('_', '-')} must be {rule}, got {value}")

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
        if not 0 <= self.minmin_start <= 1:
            raise bad("minmin_start", "between 0 and 1", self.minmin_start)
        if not 0 < self.select_batch_fraction <= 1:
            raise bad("select_batch_fraction", "in (0, 1]", self.select_batch_fraction)
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "0 (epoch ends only) or more", self.checkpoint_every)
        return self


@dataclass
class TrainResult:
    """What a `train` call did: per-step losses and chosen candidates of the steps it ran."""

    steps: int  # optimizer steps completed in total (including those before a resume)
    losses: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    histogram: list[int] = field(default_factory=list)  # chosen-candidate counts, whole run
    agreement: float | None = None  # selection on the fraction == on the full batch, rate
    validation: list[dict] = field(default_factory=list)


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
) -> TrainResult:
    """Train `net` with min-min (see module docstring). With `run_dir`, checkpoints go to
    run_dir/supernet.pt and one JSON line per step to run_dir/train.jsonl; `resume` continues
    from the checkpoint. `max_steps` stops early (after a checkpoint)."""
    cfg = (config or TrainConfig()).check()
    run = _Run(net, train_data, val_data, cfg, run_dir, loss_fn)
    if resume:
        run.restore()
    else:
        run.start()
    return run.loop(max_steps, progress)


def sample_width(net: Supernet, gen: torch.Generator) -> WidthChoice:
    """A width drawn uniformly over each searchable group's bins (eq. 1), left-most pattern."""
    groups = net.program.searchable
    u = torch.rand(len(groups), generator=gen, dtype=torch.float64)
    return WidthChoice.of({g.id: int(x * len(g.bins)) + 1 for g, x in zip(groups, u.tolist())})


# --- the run --------------------------------------------------------------------------------------


class _Run:
    """The state of one training run: model, optimizer, schedule, random states, counters."""

    def __init__(self, net, train_data, val_data, cfg: TrainConfig, run_dir, loss_fn):
        self.net, self.train_data, self.val_data, self.cfg = net, train_data, val_data, cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loss_fn = loss_fn or (
            lambda out, y: F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        )
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.global_batch = cfg.batch_size * self.world
        self.steps_per_epoch = len(train_data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise WidthcError(
                f"the training set has {len(train_data)} samples, fewer than one batch of "
                f"{self.global_batch} ({cfg.batch_size} x {self.world} processes): lower --batch-size"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.model = distributed.wrap(net)
        self.optimizer = _sgd(
            [p for p in net.parameters() if p.requires_grad], cfg.lr, cfg.momentum, cfg.weight_decay
        )
        floor = min(cfg.min_lr, cfg.lr) / cfg.lr
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total)),
        )
        self.sampler = torch.Generator()
        self.step = 0
        self.histogram: list[int] = []
        self.agree = [0, 0]  # [agreements, comparisons]
        self.validation: list[dict] = []
        self.last_saved: int | None = None
        self._epoch_order: tuple[int, torch.Tensor | None] = (-1, None)

    # --- starting and resuming -------------------------------------------------------------------

    def start(self) -> None:
        self.sampler.manual_seed(self.cfg.seed)
        torch.manual_seed(self.cfg.seed + self.rank)  # dropout differs per rank, like DDP users do
        if self.run_dir is not None and self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / LOG).write_text("")

    def restore(self) -> None:
        if self.run_dir is None:
            raise WidthcError("resuming needs the run directory that holds supernet.pt")
        ckpt = checkpoint.load(self.run_dir / CHECKPOINT, map_location=device_of(self.net))
        saved = ckpt["config"]
        for f in fields(TrainConfig):
            if f.name in saved and saved[f.name] != getattr(self.cfg, f.name):
                raise WidthcError(
                    f"cannot resume with --{f.name.replace('_', '-')} "
                    f"{getattr(self.cfg, f.name)}: the run in {self.run_dir} used {saved[f.name]}"
                )
        if ckpt["world_size"] != self.world:
            raise WidthcError(
                f"the run in {self.run_dir} used {ckpt['world_size']} processes; resume it "
                f"with the same number (this is {self.world})"
            )
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.sampler.set_state(ckpt["sampler"])
        checkpoint.set_rng_state(ckpt["rng"][self.rank])
        self.step = ckpt["step"]
        self.histogram = list(ckpt["histogram"])
        self.agree = list(ckpt["agree"])
        self.validation = [dict(v) for v in ckpt["validation"]]
        self.last_saved = self.step
        if self.rank == 0:
            _truncate_log(self.run_dir / LOG, self.step)

    def save(self) -> None:
        rng = distributed.gather(checkpoint.rng_state())  # collective: every rank takes part
        if self.run_dir is None or self.rank != 0:
            self.last_saved = self.step
            return
        checkpoint.save(
            self.run_dir / CHECKPOINT,
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "world_size": self.world,
                "config": asdict(self.cfg),
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.get_state(),
                "rng": rng,
                "order": self._order(self.step // self.steps_per_epoch),
                "histogram": list(self.histogram),
                "agree": list(self.agree),
                "validation": list(self.validation),
            },
        )
        self.last_saved = self.step

    # --- the loop ----------------------------------------------------------------------------------

    def loop(self, max_steps: int | None, progress: bool) -> TrainResult:
        result = TrainResult(steps=self.step)
        bar = _Progress(
            self.total_steps, self.step, self.cfg.epochs, enabled=progress and self.rank == 0
        )
        stop = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        self.net.train()
        if self.step < stop:
            self._check_model()
        with bar:
            while self.step < stop:
                epoch, b = divmod(self.step, self.steps_per_epoch)
                order = self._order(epoch)
                start = b * self.global_batch + self.rank * self.cfg.batch_size
                x, y = batch(self.train_data, order[start : start + self.cfg.batch_size])
                x, y = x.to(device_of(self.net)), y.to(device_of(self.net))
                record = self._step(x, y)
                result.losses.append(record["loss"])
                result.candidates.append(record["candidate"])
                self._log(record)
                bar.update(epoch, self.step, record["loss"], self.histogram)
                epoch_end = self.step % self.steps_per_epoch == 0
                if epoch_end:
                    self._validate(epoch)
                every = self.cfg.checkpoint_every
                if epoch_end or (every and self.step % every == 0) or self.step == stop:
                    self.save()
        result.steps = self.step
        result.histogram = list(self.histogram)
        result.agreement = self.agree[0] / self.agree[1] if self.agree[1] else None
        result.validation = list(self.validation)
        return result

    def _check_model(self) -> None:
        """Fail early and clearly when the model's output cannot be trained on these labels."""
        x, y = batch(self.train_data, torch.arange(min(2, len(self.train_data))))
        device = device_of(self.net)
        fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        with fork, torch.no_grad(), self.net.probing():  # leaves every random state as it was
            self.net.set_choice(self.net.program.full())
            _check_output(self.net(x.to(device_of(self.net))), y)

    def _order(self, epoch: int) -> torch.Tensor:
        """The data order of one epoch: a permutation seeded by (seed, epoch), same on all ranks."""
        if self._epoch_order[0] != epoch:
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            self._epoch_order = (epoch, torch.randperm(len(self.train_data), generator=gen))
        return self._epoch_order[1]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        cfg, net = self.cfg, self.net
        width = sample_width(net, self.sampler)
        cands = net.candidates(width)
        if len(self.histogram) < len(cands):
            self.histogram += [0] * (len(cands) - len(self.histogram))
        probe: list[float] = []
        if len(cands) == 1:
            j = 0
        elif self.step < cfg.minmin_start * self.total_steps:
            j = int(torch.randint(len(cands), (1,), generator=self.sampler))
        else:
            n = max(min(len(y), 2), math.ceil(cfg.select_batch_fraction * len(y)))
            losses = self._probe(cands, x[:n], y[:n])
            probe = losses.tolist()
            j = int(torch.argmin(losses))
            if cfg.measure_agreement and n < len(y):
                self.agree[0] += int(torch.argmin(self._probe(cands, x, y))) == j
                self.agree[1] += 1
        trained = [cands[j]]
        if cfg.sandwich:
            trained += [net.program.full(), net.program.smallest()]
        loss_value = None
        for i, choice in enumerate(trained):
            net.set_choice(choice)
            last = i == len(trained) - 1
            sync = _no_sync(self.model) if not last else contextlib.nullcontext()
            with sync:
                out = self.model(x)
                loss = self.loss_fn(out, y)
                value = float(distributed.mean(loss.detach()))
                if not math.isfinite(value):
                    self._diverged(value, j if i == 0 else ("largest", "smallest")[i - 1])
                loss.backward()
            loss_value = value if loss_value is None else loss_value
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        self.histogram[j] += 1
        return {
            "step": self.step,
            "epoch": (self.step - 1) // self.steps_per_epoch,
            "loss": loss_value,
            "candidate": j,
            "candidates": len(cands),
            "candidate_losses": probe,
            "width": [k for _, k in width.ks()],
            "flops": net.program.flops(cands[j]),
            "lr": lr,
        }

    def _probe(self, cands: list[WidthChoice], x, y) -> torch.Tensor:
        """Every candidate's loss (averaged over ranks); no gradients, no statistics updates."""
        losses = []
        with torch.inference_mode(), self.net.probing():  # no_grad, and less overhead
            for c in cands:
                self.net.set_choice(c)
                losses.append(self.loss_fn(self.net(x), y).detach().float())
        losses = distributed.mean(torch.stack(losses))
        if not torch.isfinite(losses).all():
            bad = int(torch.nonzero(~torch.isfinite(losses))[0])
            self._diverged(float(losses[bad]), bad)
        return losses.cpu()

    def _diverged(self, value: float, which) -> None:
        where = (
            f"; the last good checkpoint ({self.run_dir / CHECKPOINT}, step {self.last_saved}) is kept"
            if self.run_dir is not None and self.last_saved is not None
            else ""
        )
        raise WidthcError(
            f"the training loss became {value} at step {self.step + 1} (candidate {which}); "
            f"training stopped{where}: lower --lr or check the data for NaN or inf values"
        )

    def _validate(self, epoch: int) -> None:
        if self.val_data is None:
            return
        order = torch.arange(len(self.train_data))
        n = self.cfg.batch_size
        calib = [
            batch(self.train_data, order[i * n : (i + 1) * n])
            for i in range(min(self.cfg.calibration_batches, self.steps_per_epoch))
        ]
        program = self.net.program
        record = {
            "epoch": epoch,
            "step": self.step,
            "val_acc_largest": evaluate(self.net, program.full(), self.val_data, calibration=calib),
            "val_acc_smallest": evaluate(
                self.net, program.smallest(), self.val_data, calibration=calib
            ),
        }
        self.validation.append(record)
        self._log(record)

    def _log(self, record: dict) -> None:
        if self.run_dir is None or self.rank != 0:
            return
        with open(self.run_dir / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")


# --- helpers ------------------------------------------------------------------------------------


def _check_output(out, y: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        what = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise WidthcError(
            f"training needs a model that returns one logits tensor (batch x classes); this one "
            f"returns {what}"
        )
    classes = int(y.max()) + 1
    if out.shape[1] < classes:
        raise WidthcError(
            f"the model outputs {out.shape[1]} classes but the data has labels up to "
            f"{classes - 1}: build it with that many classes (--num-classes {classes})"
        )


def _no_sync(model):
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to `step` (the checkpoint's): later ones are redone."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    write_text(path, "".join(line + "\n" for line in kept))


def _sgd(params: list, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum, fused where torch has the kernel: the supernet updates every full-size
    weight each step (resnet18 on one CPU thread: fused 6 ms, per-tensor loop 15 ms, foreach
    28 ms), so the update is a visible share of a small-input training step."""
    try:
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True
        )
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


class _Progress:
    """A rich progress bar: epoch, step, loss, chosen-candidate histogram, steps/s."""

    def __init__(self, total: int, done: int, epochs: int, enabled: bool):
        self.enabled, self.epochs = enabled, epochs
        self.t0, self.done0 = time.perf_counter(), done
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("candidates {task.fields[hist]}"),
                TextColumn("{task.fields[rate]} steps/s"),
            )
            self.task = self.bar.add_task(
                "train",
                total=total,
                completed=done,
                epoch=f"1/{epochs}",
                loss="-",
                hist="-",
                rate="-",
            )

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False

    def update(self, epoch: int, step: int, loss: float, histogram: list[int]) -> None:
        if not self.enabled:
            return
        rate = (step - self.done0) / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(
            self.task,
            completed=step,
            epoch=f"{min(epoch + 1, self.epochs)}/{self.epochs}",
            loss=f"{loss:.4f}",
            hist="/".join(str(h) for h in histogram),
            rate=f"{rate:.2f}",
        )
