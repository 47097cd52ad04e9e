"""Private batch-norm scales and shifts per width (`--private-bn`), the supernet's runtime part.

`PrivateRows` holds, for each norm `passes/private.py` finds, a table of `n - 1` rows per
affine parameter, one per width `k < n` of the norm's group. A width's scale (shift) is the
model's own parameter plus its row, the row starting at zero: the shared part still learns
from every step, as today, and a row learns what its width needs beyond it. (Rows that replace
the parameter, as slimmable networks' switchable batch norm does for its 4 widths, would each
train in about 1/n of the steps here, where a step trains one of up to n widths per group,
and the full width's own in 1/n too; weight decay pulls a row towards the shared value, not
towards zero.) While a width runs, each such norm's parameter is `own + row[k]` (gradients
reach both), and the supernet's slicing or masking then applies to it as to the parameter
alone. At full width a norm keeps its own parameter. `rows(choice, written=True)` puts
detached copies in place, so that `widthc.slim` copies the width's own scale and shift.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import fx, nn

from widthc.ir import WidthChoice
from widthc.passes.private import private_norms

__all__ = ["PrivateRows", "rows_of"]


class PrivateRows(nn.Module):
    """The private rows of a program's batch norms (a submodule of the supernet: its
    state dict, checkpoints and optimizer hold them)."""

    def __init__(self, program, gm: fx.GraphModule):
        super().__init__()
        norms, self.skipped = private_norms(program)
        self.tables = nn.ParameterDict()
        self._slots = []  # (module, parameter name, group, bins, table key)
        for norm in norms:
            module = gm.get_submodule(norm.module)
            for name in norm.params:
                key = f"{norm.module}.{name}".replace(".", "/")
                own = module._parameters[name]
                self.tables[key] = nn.Parameter(own.new_zeros((norm.bins - 1, *own.shape)))
                self._slots.append((module, name, norm.group, norm.bins, key))

    @property
    def norms(self) -> list[str]:
        """The parameters that have private rows, as `module.name`."""
        return [key.replace("/", ".") for *_, key in self._slots]

    def forward(self, *args):  # a holder of tables, never called
        raise TypeError("PrivateRows holds tables; it is not run")

    @torch.no_grad()
    def fill_grads(self, net: nn.Module) -> None:
        """A zero gradient for each parameter of `net` a training step did not use (the other
        widths' rows; the norms' own scale and shift at a narrow width): like an unused channel
        of a shared weight they keep their momentum and weight decay, and SGD's fused kernel
        needs every parameter's gradient once any has one."""
        for p in net.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)

    @contextlib.contextmanager
    def rows(self, choice: WidthChoice, written: bool = False) -> Iterator[None]:
        """Inside, each covered norm's parameter is its own plus its row for `choice`'s width
        of its group (`written`: a detached copy, as an `nn.Parameter`); its own at full
        width."""
        widths = dict(choice.widths)
        put = []
        try:
            for module, name, group, bins, key in self._slots:
                w = widths.get(group)
                if w is None or w.k >= bins:
                    continue
                row = module._parameters[name] + self.tables[key][w.k - 1]
                if written:
                    row = nn.Parameter(row.detach().clone())
                put.append((module, name, module._parameters[name]))
                module._parameters[name] = row
            yield
        finally:
            for module, name, own in reversed(put):
                module._parameters[name] = own


def rows_of(private: PrivateRows | None, choice: WidthChoice, written: bool = False):
    """`private.rows(choice, written)`, or nothing to do without private rows."""
    return contextlib.nullcontext() if private is None else private.rows(choice, written)
