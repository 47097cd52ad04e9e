"""The invariants `widthc slim` proves before it reports success (DESIGN §9).

1. The slimmed model's outputs equal a reference for that choice (eval mode, relative error
   <= 1e-5). The default reference is the program's model with every weight entry at a removed
   channel set to zero; it is exact when no shrunk group has a channel-mixing op (layer norm
   over channels, softmax over channels). Otherwise the CafeNet supernet is the reference.
2. FLOPs counted afresh on the slimmed graph equal `program.flops(choice)` exactly.
3. ONNX: onnxruntime matches the slimmed PyTorch model (relative error <= 1e-4, batch 1 and 3).
A failed check raises InternalError: widthc never emits a model it has not proved.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten

from widthc.errors import InternalError
from widthc.export import export_onnx, tensor_error
from widthc.ir import WidthChoice
from widthc.passes.slicing import make_plan
from widthc.passes.slim import copy_module
from widthc.program import compile as compile_program
from widthc.run import SLIM_ONNX
from widthc.space import human
from widthc.supernet import supernet

__all__ = [
    "Checks",
    "EQUIVALENCE_TOLERANCE",
    "default_reference",
    "relative_error",
    "verify",
    "zeroed_reference",
]

EQUIVALENCE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Checks:
    """The measured result of each check (`onnx` is None where the ONNX check was skipped)."""

    equivalence: float  # relative error of the slimmed outputs against the reference
    reference: str  # what the slimmed model was compared with
    flops_counted: float  # FLOPs of the slimmed graph, counted afresh
    flops_expected: float  # program.flops(choice)
    onnx: float | None  # onnxruntime vs PyTorch, the worst of batch 1 and 3

    @property
    def flops_error(self) -> float:
        return abs(self.flops_counted - self.flops_expected)

    def to_json(self) -> dict:
        return {
            "equivalence_rel_error": self.equivalence,
            "reference": self.reference,
            "flops_counted": self.flops_counted,
            "flops_expected": self.flops_expected,
            "onnx_rel_error": self.onnx,
        }

    def summary(self) -> str:
        onnx = "not checked" if self.onnx is None else f"{self.onnx:.1e} (batch 1 and 3)"
        return (
            f"output vs {self.reference}: {self.equivalence:.1e}; FLOPs recounted: {human(self.flops_counted)} "
            f"(error {self.flops_error:g}); ONNX vs PyTorch: {onnx}"
        )


def verify(
    program,
    choice: WidthChoice,
    slimmed: nn.Module,
    inputs: tuple | None = None,
    reference: Callable | None = None,
    onnx_path: str | os.PathLike | None = None,
    check_onnx: bool = True,
) -> Checks:
    """Run the three checks on `slimmed = widthc.slim(program, choice)`.

    `reference(*inputs)` computes the outputs of the choice on the full model; by default the
    zeroed-weights model, or the supernet where a shrunk group mixes channels. `onnx_path`: where
    the proved ONNX file goes (a temporary folder when None); `check_onnx=False` skips it.
    """
    inputs = program.example_inputs if inputs is None else tuple(inputs)
    if reference is None:
        reference, name = default_reference(program, choice)
    elif isinstance(reference, nn.Module):
        name = type(reference).__name__
    else:
        name = getattr(reference, "reference_name", "given reference")
    was_training = slimmed.training
    slimmed.eval()
    try:
        equivalence = _equivalence(program, slimmed, inputs, reference, name)
        flops = _recount(slimmed, program.example_inputs)
        expected = program.flops(choice)
        if flops != expected:
            raise InternalError(
                f"the slimmed model has {flops:.0f} FLOPs, counted afresh, but the program "
                f"predicts {expected:.0f} for this width"
            )
        onnx = None
        if check_onnx:
            onnx = _onnx(slimmed, inputs, onnx_path)
    finally:
        slimmed.train(was_training)
    return Checks(equivalence, name, flops, expected, onnx)


def default_reference(program, choice: WidthChoice) -> tuple[Callable, str]:
    """The exact reference for `choice` and its name: the zeroed-weights model, or the supernet
    where a shrunk group has a channel-mixing op."""
    shrunk = {g for g, w in choice.widths if w.k < len(program.groups[g].bins)}
    if not any(program.groups[g].mixing for g in shrunk):
        return zeroed_reference(program, choice), "zeroed weights of removed channels"
    net = supernet(program)
    net.set_choice(choice)
    return net.eval(), "supernet"


def zeroed_reference(program, choice: WidthChoice) -> fx.GraphModule:
    """The program's model at full width with every parameter entry that belongs to a removed
    channel set to zero (buffers such as running statistics stay).

    Zeroing the consumers' input positions alone cuts every removed channel's influence; zeroing
    the producers' rows as well makes removed channels exactly zero, so parameter-free
    contractions over channels (matmul) see them as absent too. Exact unless a shrunk group has
    a channel-mixing op, where removed channels still shift the normalisation statistics.
    """
    plan = make_plan(program, choice)
    ref = copy_module(program.gm)  # deepcopy, also of old-style weight-norm modules
    params = dict(ref.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for target in plan.param_dims:
            p = params.get(target)
            if p is None:
                continue
            for dim, kept in plan.param_slices(target):
                removed = torch.ones(p.shape[dim], dtype=torch.bool)
                removed[kept] = False
                p.index_fill_(dim, removed.nonzero().flatten().to(p.device), 0.0)
    return ref.eval()


def relative_error(got, ref) -> float:
    """max over output tensors of ||got - ref|| / ||ref|| (float64); inf on a shape mismatch."""
    a = [t for t in tree_flatten(got)[0] if isinstance(t, torch.Tensor)]
    b = [t for t in tree_flatten(ref)[0] if isinstance(t, torch.Tensor)]
    if len(a) != len(b):
        return float("inf")
    return max((tensor_error(x, y) for x, y in zip(a, b)), default=0.0)


def _equivalence(program, slimmed, inputs, reference, name: str) -> float:
    training = program.gm.training  # the model's shapes, in eval mode: a batch of one through
    program.gm.eval()  # a 1x1 BatchNorm cannot train, and its running statistics stay as they are
    try:
        with torch.no_grad():
            out = slimmed(*inputs)
            full = program.gm(*inputs)
    finally:
        program.gm.train(training)
    shapes = [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    full_shapes = [tuple(t.shape) for t in tree_flatten(full)[0] if isinstance(t, torch.Tensor)]
    if shapes != full_shapes:
        raise InternalError(
            f"the slimmed model's output shapes {shapes} differ from the model's {full_shapes}"
        )
    with torch.no_grad():
        ref = reference(*inputs)
    err = relative_error(out, ref)
    if not err <= EQUIVALENCE_TOLERANCE:
        raise InternalError(
            f"the slimmed model's outputs differ from the {name}: relative error {err:.2e} > "
            f"{EQUIVALENCE_TOLERANCE:.0e}"
        )
    return err


def _recount(slimmed: nn.Module, inputs: tuple) -> float:
    return compile_program(slimmed, inputs).flops()


def _onnx(slimmed, inputs, onnx_path) -> float:
    if onnx_path is not None:
        return export_onnx(slimmed, inputs, onnx_path).error
    with tempfile.TemporaryDirectory(prefix="widthc-") as tmp:
        return export_onnx(slimmed, inputs, Path(tmp) / SLIM_ONNX).error
