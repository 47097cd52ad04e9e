"""Scoring a width once it has its own weights (`--score-steps`, issue 16).

In a weight-shared supernet a narrow width runs on weights that every other width pulled
towards a compromise, so its max-max score says how well the width does on shared weights,
not how well it does once trained. With `Tuning`, every scored sub-network is first copied out
of the supernet (`widthc.slim` of the supernet's program: the physically smaller model, the
same weights, with --private-bn the width's own batch-norm rows, proved equal to the supernet at
that width by the slim stage), trained alone for a few SGD steps, and only then recalibrated
and measured as usual (widthc.evaluate). The supernet is never changed: the copy shares no
tensor with it.

The steps are the same for every width, so scores stay comparable: the same training batches
in the same order (cycled when there are fewer batches than steps), the same learning rate
(cosine from `lr` to `min_lr` over the steps), momentum and weight decay, under the score's
random seed (dropout). The fine-tuning runs in fp32 whatever the scoring's precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import fx

from widthc.errors import WidthcError
from widthc.ir import WidthChoice
from widthc.passes.slim import slim
from widthc.private_rows import rows_of
from widthc.supernet import device_of

__all__ = ["Tuning"]


@dataclass(frozen=True)
class Tuning:
    """How every scored sub-network is fine-tuned alone before it is scored: `steps` SGD steps
    on `batches` ((input, target) training batches, cycled) with `loss`, the learning rate
    decayed from `lr` to `min_lr` by a cosine."""

    steps: int
    lr: float
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    loss: Callable
    momentum: float = 0.9
    weight_decay: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self):
        if self.steps < 1 or not self.batches:
            raise WidthcError("fine-tuning before scoring needs at least one step and one batch")

    def rate(self, step: int) -> float:
        """The learning rate of step `step` (0-based): cosine from lr to min_lr."""
        floor = min(self.min_lr, self.lr)
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * step / self.steps))

    def tuned(self, net, choice: WidthChoice) -> fx.GraphModule:
        """A private copy of the supernet `net` at `choice`, trained `steps` steps (train mode
        on return; the caller seeds the random state). `net` is unchanged."""
        with torch.inference_mode(False), torch.enable_grad():
            with rows_of(net.private, choice, written=True):  # --private-bn: the width's own
                small = slim(net.program, choice).train()
            device = device_of(net)
            params = [p for p in small.parameters() if p.requires_grad]
            opt = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
            for step in range(self.steps):
                x, y = self.batches[step % len(self.batches)]
                for group in opt.param_groups:
                    group["lr"] = self.rate(step)
                opt.zero_grad(set_to_none=True)
                loss = self.loss(small(x.to(device)), y.to(device))
                loss.backward()
                opt.step()
        if not torch.isfinite(loss.detach()).all():
            raise WidthcError(
                f"fine-tuning a width before scoring it diverged (loss {float(loss):g} after "
                f"{self.steps} steps at --score-lr {self.lr:g}): lower --score-lr"
            )
        return small
