"""The slicing plan of one width choice: what every weight, module attribute and literal keeps.

Both consumers of a `WidthChoice` read this one plan, so they cannot disagree:
- `passes/slim.py` applies it once, for good (physically smaller copies of the weights);
- `widthc/supernet.py` (the supernet runtime) applies it on every forward, with `index_select` on the
  live weights so that gradients flow back to the shared full-width tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import fx

from widthc import ops
from widthc.ir import Layout, TensorMeta, WidthChoice
from widthc.ops.reparam import reparams, tensor_at
from widthc.passes.groups import layouts, rewrites
from widthc.passes.rewrite import at, replaced
from widthc.trace import VALUE


@dataclass
class SlicePlan:
    """`index[g]`: kept channels of group g within one block (only groups not at full width);
    `counts[g]`: number of kept channels per block (every group)."""

    index: dict[int, torch.Tensor]
    counts: dict[int, int]
    param_dims: Mapping[str, Mapping[int, Layout]]

    def positions(self, layout: Layout | None) -> torch.Tensor | None:
        """Kept positions along a dim with this layout; None when it keeps everything."""
        if layout is None or not any(g in self.index for g in layout.groups):
            return None
        return layout.indices(self.index)

    def param_slices(self, target: str) -> list[tuple[int, torch.Tensor]]:
        """[(dim, kept positions)] for a parameter or buffer, only the dims that shrink."""
        out = []
        for dim, lay in sorted(self.param_dims.get(target, {}).items()):
            idx = self.positions(lay)
            if idx is not None:
                out.append((dim, idx))
        return out

    def slice_param(self, target: str, tensor: torch.Tensor) -> torch.Tensor:
        for dim, idx in self.param_slices(target):
            tensor = tensor.index_select(dim, idx.to(tensor.device))
        return tensor

    def size(self, layout: Layout | None, full: int) -> int:
        return full if layout is None else layout.active_size(self.counts)

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        """The output shape of a tensor-valued node under this choice."""
        return active_shape(node.meta[VALUE], layouts(node), self.counts)

    def module_attrs(self, gm_modules, node: fx.Node, params: Mapping[str, torch.Tensor]) -> dict:
        """Attributes of a call_module node's module to change (in_channels, groups, ...)."""
        module = gm_modules[node.target]
        spec = ops.REGISTRY.get(ops.module_key(module))
        if spec is None or spec.resize is None:
            return {}
        params = {**self._computed(node.target, module), **params}
        in_shapes = [
            active_shape(a.meta[VALUE], layouts(a), self.counts)
            for a in node.args
            if isinstance(a, fx.Node) and isinstance(a.meta.get(VALUE), TensorMeta)
        ]
        return spec.resize(module, params, in_shapes)

    def _computed(self, owner: str, module) -> dict[str, torch.Tensor]:
        """Meta tensors of the kept shape of the module's computed weights (weight norm):
        the resize rules read `weight`, which no store holds."""
        out = {}
        for name, how in reparams(module).items():
            shape = list(tensor_at(module, how.like).shape)
            for dim, idx in self.param_slices(f"{owner}.{how.like}"):
                shape[dim] = len(idx)
            out[name] = torch.empty(shape, device="meta")
        return out

    def literal_args(self, node: fx.Node) -> tuple[tuple, dict] | None:
        """The node's args and kwargs with literal channel counts rewritten, or None."""
        literals = rewrites(node)
        # a size read from a tensor is replaced at every width: that tensor may have shrunk
        read = any(isinstance(at((node.args, node.kwargs), p), fx.Node) for p, _ in literals)
        laid = [lay for _, lay in literals if isinstance(lay, Layout)]
        if not read and not any(g in self.index for lay in laid for g in lay.groups):
            return None
        args_kwargs = (node.args, node.kwargs)
        for path, lay in literals:  # an int: a size pinned to its value
            size = lay if isinstance(lay, int) else lay.active_size(self.counts)
            args_kwargs = replaced(args_kwargs, path, size)
        return args_kwargs


def make_plan(program, choice: WidthChoice) -> SlicePlan:
    """The slicing plan of `choice` on `program` (a `widthc.Program`)."""
    program.validate(choice)
    index, counts = {}, {g.id: g.block_size for g in program.groups}
    for gid, _ in choice.widths:
        g = program.groups[gid]
        idx = choice.block_indices(g)
        counts[gid] = len(idx)
        if len(idx) != g.block_size:
            index[gid] = idx
    return SlicePlan(index, counts, program.param_dims)


def active_shape(value, layouts, counts: Mapping[int, int]):
    if not isinstance(value, TensorMeta):
        return None
    if layouts is None:
        return value.shape
    return tuple(
        s if lay is None else lay.active_size(counts) for s, lay in zip(value.shape, layouts)
    )
