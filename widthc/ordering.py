"""`widthc.order_channels`: a trained model's channels sorted by importance, proved to compute
what the model computed (issue 20; the permutation itself is passes/order.py).

Proof, as for slimming: the ordered model's outputs equal the original's (relative error
<= 1e-6, eval mode, on the example inputs and on the first data batch) and its FLOPs, counted
afresh on its own graph, equal the original's. A group whose permutation alone changes the
outputs (an op the coupling pass treats as channel-wise that is not) is put back and left
alone with the measured error; widthc never returns a model it has not proved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from widthc.config import RunConfig, default
from widthc.errors import InternalError, Reason
from widthc.passes import order
from widthc.passes.slim import copy_module
from widthc.program import Program
from widthc.program import compile as compile_program
from widthc.verify import relative_error

__all__ = ["ORDER_TOLERANCE", "Ordering", "order_channels"]

ORDER_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Ordering:
    """The result of `order_channels`."""

    program: Program  # the same analysis; its model (`program.gm`) a copy with channels ordered
    method: str
    orders: dict[int, torch.Tensor]  # group id -> the old channel index at each new position
    scored: dict[int, str]  # group id -> the importance it was sorted by
    left_alone: dict[int, Reason]  # groups kept in their order, and why
    error: float  # relative error of the ordered model's outputs against the original's
    flops: tuple[float, float]  # FLOPs per sample of the original and of the ordered model

    @property
    def moved(self) -> int:
        """Groups whose order changed."""
        return sum(not torch.equal(o, torch.arange(len(o))) for o in self.orders.values())

    def summary(self) -> str:
        alone = f", {len(self.left_alone)} left alone" if self.left_alone else ""
        return (
            f"channels ordered by {self.method} importance: {self.moved} of {len(self.orders)} "
            f"groups reordered{alone}; outputs vs the original: {self.error:.1e}, FLOPs equal"
        )

    def to_json(self) -> dict:
        groups = self.program.groups
        return {
            "method": self.method,
            "error": self.error,
            "flops": {"before": self.flops[0], "after": self.flops[1]},
            "groups": {
                str(g): {"name": groups[g].name, "by": self.scored[g], "order": o.tolist()}
                for g, o in self.orders.items()
            },
            "left_alone": {
                str(g): {"name": groups[g].name, "why": str(r)} for g, r in self.left_alone.items()
            },
        }


def order_channels(
    program: Program,
    data: Iterable | None = None,
    method: str | None = None,
    loss: Callable | None = None,
) -> Ordering:
    """`program`'s model with every searchable group's channels sorted by importance, most
    important first (see passes/order.py for `method`: l1, l2, bn, taylor), as a new program
    with the same analysis. `data`: (inputs, targets) batches; `taylor` reads them, and the
    first one joins the example inputs of the proof. `program` and its model are unchanged.
    The default method is `widthc slim --pretrained`'s (`--order-by`)."""
    method = method or default(RunConfig, "order_by")
    batches = list(data) if data is not None else []
    alone = order.left_alone(program)
    groups = [g for g in program.groups if g.id not in alone]
    scores, scored = order.importance(program, groups, method, batches or None, loss)
    orders = order.orders_of(scores)
    inputs = [program.example_inputs]
    if batches:
        x = batches[0][0]
        inputs.append(tuple(x) if isinstance(x, (tuple, list)) else (x,))
    reference = _outputs(program.gm, inputs)
    gm = order.permuted(program, orders)
    error = _error(gm, inputs, reference)
    if not error <= ORDER_TOLERANCE:  # find the groups at fault: each permuted alone
        for gid in list(orders):
            alone_error = _error(order.permuted(program, {gid: orders[gid]}), inputs, reference)
            if not alone_error <= ORDER_TOLERANCE:
                why = f"permuting it changed the outputs (relative error {alone_error:.1e})"
                alone[gid] = Reason(why)
                del orders[gid], scored[gid]
        gm = order.permuted(program, orders)
        error = _error(gm, inputs, reference)
        if not error <= ORDER_TOLERANCE:
            raise InternalError(
                f"the ordered model's outputs differ from the original's: relative error "
                f"{error:.2e} > {ORDER_TOLERANCE:.0e}"
            )
    before = program.flops()
    after = compile_program(gm, program.example_inputs).flops()
    if after != before:
        raise InternalError(f"the ordered model has {after:.0f} FLOPs, the original {before:.0f}")
    return Ordering(program.with_model(gm), method, orders, scored, alone, error, (before, after))


def _outputs(gm, inputs: list) -> list:
    """The outputs of a float64 copy of `gm` in eval mode for each tuple of `inputs`: in
    float32 a deep model's sums in another order already differ by ~1e-6 (VGG-11: 1.1e-6);
    in float32 where the model cannot run in float64."""
    for dtype in (torch.float64, torch.float32):
        try:
            return _run_as(gm, inputs, dtype)
        except RuntimeError:
            if dtype == torch.float32:
                raise
    raise AssertionError("unreachable")


@torch.no_grad()
def _run_as(gm, inputs: list, dtype: torch.dtype) -> list:
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    model = copy_module(gm).to(dtype).eval()

    def cast(x):
        if not isinstance(x, torch.Tensor):
            return x
        return x.to(device, dtype) if x.is_floating_point() else x.to(device)

    return [model(*(cast(x) for x in xs)) for xs in inputs]


def _error(gm, inputs: list, reference: list) -> float:
    return max(relative_error(out, ref) for out, ref in zip(_outputs(gm, inputs), reference))
