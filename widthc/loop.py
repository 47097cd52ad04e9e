"""The training loop shared by supernet training (min-min) and retraining a slimmed model.

One job per piece: `optimizer` builds SGD with a cosine schedule (paper A.2), `epoch_order`
fixes the data order of an epoch by seed, `Trainer` runs a step function over the data with
checkpoints, resume, a JSON-lines log, a validation hook and a progress bar. A step function
takes a batch and returns the step's record (`loss` at least); it owns whatever else it needs
(the min-min candidate choice, a width sampler) and exposes its resumable state; its `trainer`
attribute is set to the loop that runs it (the step count, the precision); an `epoch_end(epoch)`
method, if it has one, runs after each epoch's validation.

A record's values may be tensors on the device: the loop reads them every `log_every` steps
(and before a checkpoint, a validation, the end), all of them in one copy, so that a GPU is not
stopped every step to hand one loss to the host. Every step is still logged, and a non-finite
loss still stops training, naming its step, before any checkpoint holds its weights.

Checkpoints are written atomically and load with `torch.load(weights_only=True)`; every random
state is stored, so a resumed run is bit-for-bit the run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from widthc import checkpoint, distributed, interrupt
from widthc.errors import WidthcError
from widthc.evaluate import batch
from widthc.files import write_text
from widthc.precision import Precision
from widthc.supernet import device_of


@dataclass
class TrainResult:
    """What a training call did: per-step losses and records of the steps it ran."""

    steps: int  # optimizer steps completed in total (including those before a resume)
    losses: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    histogram: list[int] = field(default_factory=list)  # chosen-candidate counts, whole run
    agreement: float | None = None  # selection on the fraction == on the full batch, rate
    validation: list[dict] = field(default_factory=list)


def optimizer(params: list, cfg, total_steps: int):
    """SGD with momentum and `cfg.weight_decay`, the learning rate decayed from `cfg.lr` to
    `cfg.min_lr` with a cosine over `total_steps` (paper A.2)."""
    opt = sgd(params, cfg.lr, cfg.momentum, cfg.weight_decay)
    floor = min(cfg.min_lr, cfg.lr) / cfg.lr
    total = max(total_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    )
    return opt, schedule


def sgd(params: list, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum, fused where torch has the kernel: the supernet updates every full-size
    weight each step (resnet18 on one CPU thread: fused 6 ms, per-tensor loop 15 ms, foreach
    28 ms), so the update is a visible share of a small-input training step."""
    try:
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True
        )
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch), the same on all ranks."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen)


class Trainer:
    """Runs `step(x, y) -> record` over `cfg.epochs` epochs of `data` (batch `cfg.batch_size`
    per process), stepping `opt`/`schedule` after each; checkpoints to `files[0]` (every
    `cfg.checkpoint_every` steps and at epoch ends), logs one JSON line per step to `files[1]`.
    `state()`/`load_state()` of the step function are saved with the checkpoint; `validate(epoch)`
    runs at every epoch end and its record is logged and kept."""

    def __init__(
        self, model, step, data, cfg, opt, schedule, files=None, validate=None, fmt=None,
        workers: int | None = None, program=None, precision: Precision | None = None,
    ):  # fmt: skip
        self.model, self.step_fn, self.data, self.cfg = model, step, data, cfg
        self.precision = precision or Precision.of(cfg, device_of(model))
        self.precision.module(model)
        step.trainer = self
        self.opt, self.schedule, self.validate_fn = opt, schedule, validate
        self.path, self.log_path = (Path(files[0]), Path(files[1])) if files else (None, None)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.global_batch = cfg.batch_size * self.world
        self.steps_per_epoch = len(data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise WidthcError(
                f"the training set has {len(data)} samples, fewer than one batch of "
                f"{self.global_batch} ({cfg.batch_size} x {self.world} processes): lower --batch-size"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.step = 0
        self.validation: list[dict] = []
        self.last_saved: int | None = None
        self.fmt = fmt or (lambda record: f"loss {record['loss']:.4f}")
        self.workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
        self._order: tuple[int, torch.Tensor | None] = (-1, None)
        self.program = program  # the checkpoint records its groups: another model is refused
        every = getattr(cfg, "log_every", 1)
        self.log_every = every or (1 if device_of(model).type == "cpu" else AUTO_LOG_EVERY)
        self.pending: list[dict] = []  # records whose tensors the host has not read yet
        self.records: list[dict] = []  # the records read, of this `run`
        self.bar, self.label = Progress(self.total_steps, 0, cfg.epochs, False), "train"

    # --- starting and resuming -------------------------------------------------------------------

    def start(self) -> None:
        torch.manual_seed(self.cfg.seed + self.rank)  # dropout differs per rank, like DDP users do
        if self.path is not None and self.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.log_path, "")

    def restore(self) -> None:
        if self.path is None:
            raise WidthcError("resuming needs the run directory that holds the checkpoint")
        ckpt = checkpoint.load(self.path, map_location=device_of(self.model))
        if self.program is not None:
            checkpoint.check_groups(self.path, ckpt.get("groups"), self.program)
        saved = ckpt["config"]
        for f in fields(self.cfg):
            if f.name in saved and saved[f.name] != getattr(self.cfg, f.name):
                raise WidthcError(
                    f"cannot resume with --{f.name.replace('_', '-')} "
                    f"{getattr(self.cfg, f.name)}: the run in {self.path.parent} used "
                    f"{saved[f.name]}"
                )
        if ckpt["world_size"] != self.world:
            raise WidthcError(
                f"the run in {self.path.parent} used {ckpt['world_size']} processes; resume it "
                f"with the same number (this is {self.world})"
            )
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.precision.load_state(ckpt.get("scaler"))
        self.step_fn.load_state(ckpt["step_state"])
        checkpoint.set_rng_state(ckpt["rng"][self.rank])
        self.step = ckpt["step"]
        self.validation = [dict(v) for v in ckpt["validation"]]
        self.last_saved = self.step
        if self.rank == 0:
            _truncate_log(self.log_path, self.step)

    def save(self) -> None:
        self.flush()  # the step state is current, and no diverged step is saved
        rng = distributed.gather(checkpoint.rng_state())  # collective: every rank takes part
        if self.path is None or self.rank != 0:
            self.last_saved = self.step
            return
        checkpoint.save(
            self.path,
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "world_size": self.world,
                "config": asdict(self.cfg),
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "rng": rng,
                "order": self.order(self.step // self.steps_per_epoch),
                "step_state": self.step_fn.state(),
                "validation": list(self.validation),
                "groups": checkpoint.group_signature(self.program) if self.program else None,
                "scaler": self.precision.state(),
            },
        )
        self.last_saved = self.step

    # --- the loop ----------------------------------------------------------------------------------

    def run(self, max_steps: int | None = None, progress: bool = False, label: str = "train"):
        """Train until the last step (or `max_steps`); returns the records of the steps run."""
        self.records: list[dict] = []
        stop = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        self.bar = Progress(
            self.total_steps, self.step, self.cfg.epochs, progress and self.rank == 0
        )
        self.label = label
        device = device_of(self.model)
        batches = None
        with self.bar:
            while self.step < stop:
                epoch, b = divmod(self.step, self.steps_per_epoch)
                if b == 0 or batches is None:
                    batches = self._batches(epoch, b)
                x, y = next(batches)
                x = self.precision.inputs(x.to(device, non_blocking=True))
                record = self.step_fn(x, y.to(device, non_blocking=True))
                lr = self.opt.param_groups[0]["lr"]
                self.pending.append({"step": self.step + 1, "epoch": epoch, **record, "lr": lr})
                if len(self.pending) >= self.log_every:
                    self.flush()  # before the update: a diverged step (log_every 1) changes nothing
                self.precision.step(self.opt)
                self.opt.zero_grad(set_to_none=True)
                self.schedule.step()
                self.step += 1
                epoch_end = self.step % self.steps_per_epoch == 0
                if epoch_end and self.validate_fn is not None:
                    self.flush()
                    result = self.validate_fn(epoch)
                    if result is not None:
                        result = {"epoch": epoch, "step": self.step, **result}
                        self.validation.append(result)
                        self.log(result)
                if epoch_end and (note := _epoch_end(self.step_fn, epoch)) is not None:
                    self.log({"epoch": epoch, "step": self.step, **note})  # before the save
                every = self.cfg.checkpoint_every
                stopping = interrupt.requested()  # Ctrl-C: save this step, then stop
                if epoch_end or (every and self.step % every == 0) or self.step == stop or stopping:
                    self.save()
                interrupt.check()
            self.flush()
        return self.records

    def flush(self) -> None:
        """Read the pending records' tensors (one copy to the host), then check, log and show
        each record; a non-finite loss stops training at its step."""
        pending, self.pending = self.pending, []
        for record in to_host(pending):
            settle = getattr(self.step_fn, "settle", None)
            if settle is not None:
                settle(record)  # fields that need the host values (the candidate histogram)
            if not math.isfinite(record["loss"]):
                self.diverged(record["loss"], record.get("candidate"), record["step"])
            self.records.append(record)
            self.log(record)
            self.bar.update(record["epoch"], record["step"], self.label, self.fmt(record))

    def _batches(self, epoch: int, first: int):
        """This rank's batches of `epoch` from batch `first` on: indexed directly from tensors,
        through a DataLoader with worker processes for datasets that load and augment per item
        (image folders)."""
        order = self.order(epoch)
        n, g = self.cfg.batch_size, self.global_batch
        starts = [b * g + self.rank * n for b in range(first, self.steps_per_epoch)]
        if isinstance(self.data, TensorDataset) or self.workers == 0:
            return (batch(self.data, order[s : s + n]) for s in starts)
        chunks = [order[s : s + n].tolist() for s in starts]
        loader = DataLoader(
            self.data,
            batch_sampler=chunks,
            num_workers=self.workers,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch),
        )
        return ((x, torch.as_tensor(y)) for x, y in loader)

    def order(self, epoch: int) -> torch.Tensor:
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.data), self.cfg.seed, epoch))
        return self._order[1]

    def diverged(self, value: float, which=None, step: int | None = None) -> None:
        where = (
            f"; the last good checkpoint ({self.path}, step {self.last_saved}) is kept"
            if self.path is not None and self.last_saved is not None
            else ""
        )
        what = f" (candidate {which})" if which is not None else ""
        raise WidthcError(
            f"the training loss became {value} at step {step or self.step + 1}{what}; "
            f"training stopped{where}: lower --lr or check the data for NaN or inf values"
        )

    def log(self, record: dict) -> None:
        if self.log_path is None or self.rank != 0:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")


class PlainStep:
    """One SGD step of a plain module (retraining a slimmed model): forward, loss, backward."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable):
        self.model, self.loss_fn = model, loss_fn
        self.trainer: Trainer | None = None  # set by the loop that runs it

    def __call__(self, x, y) -> dict:
        precision = self.trainer.precision
        with precision.autocast():
            loss = self.loss_fn(self.model(x), y)
        precision.backward(loss)
        return {"loss": distributed.mean(loss.detach().float())}

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


def _epoch_end(step, epoch: int) -> dict | None:
    """The step function's work at the end of `epoch` (a supernet's channel sort), if it has
    any: it changes the weights the epoch's checkpoint then holds; its record is logged."""
    hook = getattr(step, "epoch_end", None)
    return hook(epoch) if hook is not None else None


AUTO_LOG_EVERY = 25  # steps between host reads of the losses on an accelerator (log_every 0)


def to_host(records: list[dict]) -> list[dict]:
    """The records with every tensor value read to the host in one copy per device: a 0-dim
    tensor becomes a number, any other a list."""
    by_device: dict = {}
    for r in records:
        for v in r.values():
            if isinstance(v, torch.Tensor):
                by_device.setdefault(v.device, []).append(v)
    values = {}
    for tensors in by_device.values():
        flat = torch.cat([t.detach().double().reshape(-1) for t in tensors]).tolist()
        at = 0
        for t in tensors:
            n = t.numel()
            values[id(t)] = flat[at] if t.ndim == 0 else flat[at : at + n]
            at += n
    return [
        {k: values[id(v)] if isinstance(v, torch.Tensor) else v for k, v in r.items()}
        for r in records
    ]


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to `step` (the checkpoint's): later ones are redone."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    write_text(path, "".join(line + "\n" for line in kept))


class Bar:
    """A rich progress bar (off when not `enabled`): `columns` are format strings over the
    task's fields, `update(n, **fields)` moves it and adds the rate per second."""

    def __init__(self, columns: list[str], total, done: int, enabled: bool, **fields):
        self.enabled, self.t0, self.done0 = enabled, time.perf_counter(), done
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            first, *rest = (TextColumn(c) for c in columns)
            self.bar = Progress(first, BarColumn(), MofNCompleteColumn(), *rest)
            self.task = self.bar.add_task("", total=total, completed=done, rate="-", **fields)

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False

    def move(self, n: int, **fields) -> None:
        if self.enabled:
            rate = (n - self.done0) / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, completed=n, rate=f"{rate:.2f}", **fields)


class Progress(Bar):
    """The training bar: epoch, step, what the step reports, steps/s."""

    def __init__(self, total: int, done: int, epochs: int, enabled: bool):
        columns = [
            "{task.fields[label]} epoch {task.fields[epoch]}",
            "{task.fields[info]}",
            "{task.fields[rate]} steps/s",
        ]
        super().__init__(columns, total, done, enabled, epoch=f"1/{epochs}", info="", label="")
        self.epochs = epochs

    def update(self, epoch: int, step: int, label: str, info: str) -> None:
        self.move(
            step, epoch=f"{min(epoch + 1, self.epochs)}/{self.epochs}", label=label, info=info
        )
