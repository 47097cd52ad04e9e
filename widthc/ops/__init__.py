"""The op registry: everything widthc knows about an op, in one table (DESIGN §4).

One `OpSpec` per op family: its shape formula, its channel rule (which input and output dims
share channels, which parameter dims follow them), its FLOPs formula (multiply-accumulates,
the paper's convention), for modules how to resize its attributes once its weights are
sliced, and what it does to channels that are zero everywhere (`zeros`, for masked
execution: widthc/ops/zeros.py). `op_key(node)` normalises fx's three ways of naming an op.
An op without an entry is a barrier: it freezes the channels it touches (passes/coupling.py),
it never guesses.

Rules receive a context (`ctx`) from the pass that runs them:
  shape:  ctx.arg(i, name, default) -> value; ctx.module; ctx.run_meta() -> value
  couple: ctx.lay(i, name) -> per-dim entries; ctx.param(name) -> the module parameter's entries;
          ctx.value(node) / entry(node) -> a Python value node's value / entries;
          ctx.unify / produce / own / cut / coarsen / repeat / same_count / sink / mix / rewrite /
          set / barrier (see passes/coupling.py)
  flops:  ctx.arg, ctx.lay (resolved layouts), ctx.out, ctx.out_lay -> [(macs, factors), ...]
  zeros:  a constant of widthc/ops/zeros.py, or ctx.arg / ctx.carries / ctx.touches -> one
          (see passes/masking.py)
"""

from widthc.ops import table  # noqa: F401 - registers every op family on import
from widthc.ops.registry import (
    REGISTRY,
    REQUIRED,
    SIZE_FAMILIES,
    Method,
    OpSpec,
    lookup,
    module_key,
    op_key,
    op_name,
    register,
)

__all__ = [
    "REGISTRY", "REQUIRED", "SIZE_FAMILIES", "Method", "OpSpec", "lookup", "module_key", "op_key", "op_name", "register",
]  # fmt: skip
