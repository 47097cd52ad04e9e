"""The coupling walk's rules for nodes the op registry does not decide alone
(passes/coupling.py): Python values (sizes, indices) and the tensors of an opaque module."""

from __future__ import annotations

from widthc import ops
from widthc.passes.atoms import ParamVar
from widthc.passes.entries import flat_entries


def python_value(ctx) -> None:
    """Python values: sizes keep their channels through indexing and tensor creation; any
    other arithmetic on a channel count freezes those channels (it cannot follow them)."""
    spec = ops.lookup(ctx.node, ctx.st.modules)
    if spec is not None and spec.family in ops.SIZE_FAMILIES:
        spec.couple(ctx)
        return
    for e in flat_entries(ctx.st.entries, list(ctx.node.all_input_nodes)):
        ctx.sink(e, "channel count used in arithmetic")
    ctx.set_fixed()


def hidden_tensors(ctx) -> None:
    """The tensors of a module widthc does not see into keep their width, also where another
    layer shares them (a tied embedding inside a leaf)."""
    module, prefix = ctx.module, ctx.node.target
    found = (
        *module.named_parameters(prefix=prefix, remove_duplicate=False),
        *module.named_buffers(prefix=prefix, remove_duplicate=False),
    )
    why = f"a tensor of `{prefix}` ({ctx.op}), which widthc does not see into"
    for name, t in found:
        target = ctx.st.tensor_name(name, t)
        for d, size in enumerate(t.shape):
            ctx.sink(ParamVar(target, d, size), why)
