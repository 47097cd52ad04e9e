"""The op registry itself: `OpSpec`, the table `REGISTRY`, `register`, and `op_key` (fx's three
ways of naming an op, normalised). The rules and their table (widthc/ops/table.py) fill it; the
package `widthc.ops` gives both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

REQUIRED = object()  # an argument with no default: the rule requires it


@dataclass(frozen=True)
class OpSpec:
    """What widthc knows about one op family."""

    family: str
    shape: Callable[[Any], Any] | None  # None: run the op (meta, else real) to learn it
    couple: Callable[[Any], None]
    flops: Callable[[Any], list] | None = None
    resize: Callable[[nn.Module, dict, list], dict] | None = None
    zeros: str | Callable[[Any], str] | None = None  # None: unknown, masked execution refused
    scale: str | None = None  # a module's parameter that scales each channel (a norm's gamma)
    private: tuple[str, ...] = ()  # per-channel affine parameters each width may own privately


@dataclass(frozen=True)
class Method:
    """Registry key of a tensor method called by name (`x.view(...)`)."""

    name: str


REGISTRY: dict[Any, OpSpec] = {}

# op families whose channel rules also follow Python values: sizes read from tensors, indexed,
# divided or multiplied by a literal, compared, given to a tensor's creation
SIZE_FAMILIES = frozenset(("getitem", "creation", "size division", "size product", "comparison"))


def register(spec: OpSpec, *keys) -> None:
    for k in keys:
        REGISTRY[k] = spec


def op_key(node: torch.fx.Node, modules: dict[str, nn.Module]):
    """The registry key of a node: a module class (resolved through its MRO), a function, or a
    `Method`. A subclass that overrides `forward` is not its parent: it gets its own type."""
    if node.op == "call_module":
        return module_key(modules[node.target])
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return Method(node.target)
    return node.op


def module_key(module: nn.Module):
    cls = type(module)
    for base in cls.__mro__:
        if base in REGISTRY:
            return base if getattr(cls, "forward", None) is getattr(base, "forward", None) else cls
    return cls


def lookup(node: torch.fx.Node, modules: dict[str, nn.Module]) -> OpSpec | None:
    return REGISTRY.get(op_key(node, modules))


def op_name(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    """A short human name of the op: `Conv2d`, `torch.cat`, `.view`."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f".{node.target}"
    if node.op == "call_function":
        mod = getattr(node.target, "__module__", None) or ""
        name = getattr(node.target, "__name__", str(node.target))
        return name if mod in ("_operator", "builtins") else f"{mod}.{name}"
    return node.op
