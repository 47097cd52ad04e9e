"""The invariants `widthc slim` proves before it reports success (DESIGN §9).

1. The slimmed model's outputs equal a reference for that choice (eval mode, relative error
   <= 1e-5). The default reference is the program's model with every weight entry at a removed
   channel set to zero; it is exact when no shrunk group has a channel-mixing op (layer norm
   over channels, softmax over channels). Otherwise the CafeNet supernet is the reference.
2. FLOPs counted afresh on the slimmed graph equal `program.flops(choice)` exactly.
3. ONNX: onnxruntime matches the slimmed PyTorch model (relative error <= 1e-4, batch 1 and 3;
   the example's batch only where the traced graph holds at that batch only, widthc/batch.py).
A failed check raises InternalError: widthc never emits a model it has not proved; a slimmed
model (or reference) that does not run at all ends in one sentence (WidthcError) naming the node.
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

from widthc.errors import InternalError, WidthcError
from widthc.export import PARITY_BATCHES, export_onnx, tensor_error
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
    onnx: float | None  # onnxruntime vs PyTorch, the worst of `onnx_batches`
    onnx_batches: tuple[int, ...] = PARITY_BATCHES
    batch_note: str = ""  # why the checks ran at one batch size only (widthc/batch.py)

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
            "onnx_batches": list(self.onnx_batches),
            "batch_note": self.batch_note,
        }

    def summary(self) -> str:
        sizes = " and ".join(str(b) for b in self.onnx_batches)
        onnx = "not checked" if self.onnx is None else f"{self.onnx:.1e} (batch {sizes})"
        note = f" ({self.batch_note})" if self.batch_note else ""
        return (
            f"output vs {self.reference}: {self.equivalence:.1e}; FLOPs recounted: {human(self.flops_counted)} "
            f"(error {self.flops_error:g}); ONNX vs PyTorch: {onnx}{note}"
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
        equivalence, name = _equivalence(program, slimmed, inputs, reference, name)
        flops = _recount(slimmed, program.example_inputs)
        expected = program.flops(choice)
        if flops != expected:
            raise InternalError(
                f"the slimmed model has {flops:.0f} FLOPs, counted afresh, but the program "
                f"predicts {expected:.0f} for this width"
            )
        note = program.traced.batch_note
        batches = PARITY_BATCHES if note is None else (note.size,)
        onnx = None
        if check_onnx:
            onnx = _onnx(slimmed, inputs, onnx_path, batches)
    finally:
        slimmed.train(was_training)
    return Checks(
        equivalence, name, flops, expected, onnx, batches, "" if note is None else str(note)
    )


def default_reference(program, choice: WidthChoice) -> tuple[Callable, str]:
    """The exact reference for `choice` and its name: the zeroed-weights model, or the supernet
    where a shrunk group has a channel-mixing op."""
    shrunk = {g for g, w in choice.widths if w.k < len(program.groups[g].bins)}
    if not any(program.groups[g].mixing for g in shrunk):
        return zeroed_reference(program, choice), "zeroed weights of removed channels"
    net = supernet(program, execution="sliced")  # the reference is sliced execution, always
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
            out = _run(slimmed, inputs, "the slimmed model")
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
        ref = _run(reference, inputs, f"the {name}")
    err = relative_error(out, ref)
    if not err <= EQUIVALENCE_TOLERANCE and isinstance(reference, nn.Module):
        # float32 sums over more (zeroed) channels round differently, and a ranking (topk of
        # scores, argmax) can turn that rounding into other outputs: the same check in float64
        err64 = _in_float64(slimmed, reference, inputs)
        if err64 <= EQUIVALENCE_TOLERANCE:
            return err64, f"{name}, in float64 (float32 rounding {err:.1e})"
    if not err <= EQUIVALENCE_TOLERANCE:
        raise InternalError(
            f"the slimmed model's outputs differ from the {name}: relative error {err:.2e} > "
            f"{EQUIVALENCE_TOLERANCE:.0e}"
        )
    return err, name


def _in_float64(slimmed: nn.Module, reference: nn.Module, inputs: tuple) -> float:
    """The relative error of the two models' outputs with weights and inputs in float64 (inf
    where a model does not run so)."""
    wide = tuple(x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs)
    try:
        with torch.no_grad():
            got = copy_module(slimmed).double().eval()(*wide)
            want = copy_module(reference).double().eval()(*wide)
    except Exception:  # noqa: BLE001 - a model bound to float32 cannot be checked so
        return float("inf")
    return relative_error(got, want)


def _run(module: Callable, inputs: tuple, what: str):
    """`module(*inputs)`; where it fails, one sentence naming the node (a width widthc cannot
    run is never reported as proved)."""
    try:
        return module(*inputs)
    except Exception as e:  # noqa: BLE001 - any failure: the proof stops here, in one sentence
        gm = getattr(module, "gm", module)  # the supernet runs its rewritten graph
        node = failing_node(gm, inputs) if isinstance(gm, fx.GraphModule) else None
        at = (
            f" at node `{node.name}` ({node.format_node().split('=', 1)[-1].strip()})"
            if node
            else ""
        )
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise WidthcError(
            f"widthc cannot prove this width: {what} does not run on the example input{at}: "
            f"{type(e).__name__}: {cause}; mark the module around it as a leaf (--leaf) and "
            f"please report it"
        ) from e


def failing_node(gm: fx.GraphModule, inputs: tuple) -> fx.Node | None:
    """The node of `gm` whose op fails on `inputs` (re-run node by node), or None."""
    interpreter = _Recording(gm)
    try:
        with torch.no_grad():
            interpreter.run(*inputs)
    except Exception:  # noqa: BLE001 - the failure being located
        return interpreter.current
    return None


class _Recording(fx.Interpreter):
    current: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self.current = n
        return super().run_node(n)


def _recount(slimmed: nn.Module, inputs: tuple) -> float:
    return compile_program(slimmed, inputs).flops()


def _onnx(slimmed, inputs, onnx_path, batches) -> float:
    if onnx_path is not None:
        return export_onnx(slimmed, inputs, onnx_path, batches=batches).error
    with tempfile.TemporaryDirectory(prefix="widthc-") as tmp:
        return export_onnx(slimmed, inputs, Path(tmp) / SLIM_ONNX, batches=batches).error
