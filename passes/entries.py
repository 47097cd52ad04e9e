"""Entries, the per-dim channel descriptions of coupling (passes/coupling.py), as structures
that mirror a node's value: one entry per dim of every tensor in it (a `Layout`, a `ParamVar`
or None for a fixed dim), nested like the value's tuples, lists and dicts.
"""

from __future__ import annotations

import torch
from torch import fx

from widthc.ir import Layout, TensorMeta
from widthc.passes.atoms import ParamVar
from widthc.trace import VALUE, Traced
from widthc.tree import leaves


def fixed_like(value):
    if isinstance(value, TensorMeta):
        return (None,) * value.ndim
    if isinstance(value, list):
        return [fixed_like(v) for v in value]
    if isinstance(value, tuple):  # namedtuples and torch.Size too
        return tuple(fixed_like(v) for v in value)
    if isinstance(value, dict):
        return {k: fixed_like(v) for k, v in value.items()}
    return None


def entries_of(entries: dict, raw):
    if isinstance(raw, fx.Node):
        return entries.get(raw, fixed_like(raw.meta.get(VALUE)))
    if isinstance(raw, (tuple, list)):
        return [entries_of(entries, r) for r in raw]
    return None


def flat_entries(entries: dict, nodes: list[fx.Node]) -> list:
    out = []
    for n in nodes:
        found = leaves(entries.get(n), is_leaf=lambda x: isinstance(x, (Layout, ParamVar)))
        out.extend(e for e in found if e is not None)
    return out


def fits(entries, value) -> bool:
    """Entries have the structure of the value: one entry per dim of every tensor in it."""
    if isinstance(value, TensorMeta):
        return isinstance(entries, tuple) and len(entries) == value.ndim
    if isinstance(value, (tuple, list)) and any(isinstance(v, TensorMeta) for v in leaves(value)):
        return (
            isinstance(entries, (tuple, list))
            and len(entries) == len(value)
            and all(fits(e, v) for e, v in zip(entries, value))
        )
    if isinstance(value, dict) and any(isinstance(v, TensorMeta) for v in leaves(value)):
        return isinstance(entries, dict) and all(fits(entries.get(k), v) for k, v in value.items())
    return True


def stored_tensor(gm, target: str) -> torch.Tensor:
    """The tensor a `get_attr` node reads."""
    obj = gm.root if isinstance(gm, Traced) else gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def touches_tensors(node: fx.Node) -> bool:
    """The node reads a tensor (else it computes a Python value: a size, an index)."""
    if node.op == "call_module":
        return True
    return any(
        isinstance(v, TensorMeta) for n in node.all_input_nodes for v in leaves(n.meta.get(VALUE))
    )
