"""Leaves of nested Python values (tuples, lists, dicts), without pytree's per-call overhead.

The analysis walks every argument of every node; torch's pytree costs ~50 us a call there.
"""

from __future__ import annotations

from collections.abc import Callable


def leaves(x, is_leaf: Callable | None = None) -> list:
    out: list = []
    _collect(x, out, is_leaf)
    return out


def _collect(x, out: list, is_leaf) -> None:
    if is_leaf is not None and is_leaf(x):
        out.append(x)
    elif isinstance(x, (tuple, list)):
        for v in x:
            _collect(v, out, is_leaf)
    elif isinstance(x, dict):
        for v in x.values():
            _collect(v, out, is_leaf)
    else:
        out.append(x)


def map_leaves(f: Callable, x, is_leaf: Callable | None = None):
    """Apply `f` to every leaf, keeping the structure (namedtuples become tuples)."""
    if is_leaf is not None and is_leaf(x):
        return f(x)
    if isinstance(x, (tuple, list)):
        mapped = [map_leaves(f, v, is_leaf) for v in x]
        return mapped if isinstance(x, list) else tuple(mapped)
    if isinstance(x, dict):
        return {k: map_leaves(f, v, is_leaf) for k, v in x.items()}
    return f(x)
