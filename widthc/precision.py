"""How training, scoring and retraining steps run on their device: autocast in bf16 or fp16 (a
GradScaler for fp16) and the channels-last memory format. The default is plain fp32 in the
default memory format, on any device.

On a CPU, bf16 is allowed (autocast works there; measured on this project's CPU, which has
avx512_bf16: a resnet18 training step at batch 32, 242 ms against 296 ms in fp32) and fp16 is
refused (CPUs have no fast fp16 arithmetic, and a GradScaler for nothing to gain).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from widthc.config import AMP, FP16_NEEDS_CUDA
from widthc.errors import WidthcError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast dtype (None: fp32), channels-last, and the fp16 GradScaler of one run."""

    def __init__(self, amp: str = "off", channels_last: bool = False, device=None):
        device = torch.device(device or "cpu")
        if amp not in AMP:
            raise WidthcError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}")
        if amp == "fp16" and device.type == "cpu":
            raise WidthcError(FP16_NEEDS_CUDA)
        self.amp, self.channels_last, self.device = amp, channels_last, device
        self.dtype = _DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    @staticmethod
    def of(cfg, device) -> Precision:
        """The precision a config (TrainConfig) asks for, on `device`."""
        return Precision(getattr(cfg, "amp", "off"), getattr(cfg, "channels_last", False), device)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def inputs(self, x):
        """`x` in the run's memory format (4-D tensors only)."""
        if self.channels_last and isinstance(x, torch.Tensor) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def module(self, module: nn.Module) -> nn.Module:
        """`module`'s 4-D weights in the run's memory format (in place: the same Parameters)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt) -> None:
        """Gradients back at their true scale before the step adds to them (fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt) -> None:
        """The optimizer step (skipped by the scaler where fp16 gradients overflowed)."""
        if self.scaler is None:
            opt.step()
            return
        self.scaler.step(opt)
        self.scaler.update()

    def state(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
