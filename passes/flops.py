"""FLOPs and parameter counts as pure functions of the group widths (DESIGN §5).

Unit: multiply-accumulates of conv, linear and matmul, for one forward pass on the example
inputs (the paper's, AutoSlim's and torchvision's "FLOPs"). Every node contributes terms
`coef * size(layout_1) * ... * size(layout_k)`, where a layout's size is linear in the groups'
channel counts. The table is compiled to numpy arrays once; evaluating a choice is two small
array operations, and `evaluate_many` scores thousands of choices at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from widthc import ops
from widthc.ir import Layout, TensorMeta
from widthc.passes.coupling import Coupling, layer_name
from widthc.passes.groups import layouts
from widthc.trace import MEASURED, VALUE, NodeView

UNIT = "MACs"


@dataclass
class CostTable:
    """sum over terms of coef * prod(size(layout)); size(layout) = sum(inner * outer * count[g]),
    count[g] being the channels group g keeps per block."""

    n_groups: int
    layouts: list[Layout] = field(default_factory=list)
    terms: list[tuple[float, tuple[int, ...], str]] = field(
        default_factory=list
    )  # coef, layouts, owner

    def add(self, coef: float, factors, owner: str) -> None:
        idx = []
        for f in factors:
            if isinstance(f, Layout):
                idx.append(self._layout_index(f))
            else:
                coef *= f
        self.terms.append((float(coef), tuple(idx), owner))

    def _layout_index(self, lay: Layout) -> int:
        if not hasattr(self, "_index"):
            self._index: dict[Layout, int] = {}
        if lay not in self._index:
            self._index[lay] = len(self.layouts)
            self.layouts.append(lay)
        return self._index[lay]

    def compile(self) -> CostTable:
        n_l = len(self.layouts)
        self._m = np.zeros((n_l + 1, self.n_groups))  # last row: the constant 1 for padding
        self._c = np.zeros(n_l + 1)
        self._c[n_l] = 1.0
        for i, lay in enumerate(self.layouts):
            for s in lay.segments:
                self._m[i, s.group] += s.inner * s.outer
        width = max((len(t[1]) for t in self.terms), default=0)
        self._idx = np.full((len(self.terms), max(width, 1)), n_l, dtype=np.int64)
        for j, (_, idx, _) in enumerate(self.terms):
            self._idx[j, : len(idx)] = idx
        self._coef = np.array([t[0] for t in self.terms], dtype=np.float64)
        # terms over the same layouts, merged (their owners apart): what evaluation reads
        self._merged_idx, inverse = np.unique(self._idx, axis=0, return_inverse=True)
        self._merged_coef = np.bincount(inverse.ravel(), self._coef, len(self._merged_idx))
        return self

    def evaluate(self, counts: np.ndarray) -> float:
        return float(self.evaluate_many(np.asarray(counts, dtype=np.float64)[None, :])[0])

    def evaluate_many(self, counts: np.ndarray, block: int = 1) -> np.ndarray:
        """Cost of each row of `counts` (shape [B, n_groups]: channels kept per group)."""
        return self._products(padded(counts @ self._m.T + self._c, block))

    def term_values(self, counts: np.ndarray, block: int = 1) -> np.ndarray:
        """Every term's cost for each row of `counts` ([B, n_terms], in the order of `terms`)."""
        sizes = padded(np.asarray(counts, dtype=np.float64) @ self._m.T + self._c, block)
        prod = sizes[:, self._idx[:, 0]]
        for k in range(1, self._idx.shape[1]):
            prod = prod * sizes[:, self._idx[:, k]]
        return prod * self._coef

    def partial(self, groups: np.ndarray, fixed: np.ndarray, block: int = 1):
        """A faster `evaluate_many` for rows that set only `groups`' counts, the others staying
        at `fixed`: returns f(counts of `groups`, [B, len(groups)]) -> costs [B]. `block`: every
        layout's size rounded up to a multiple of it (a runtime's channel block, see `padded`)."""
        rest = np.asarray(fixed, dtype=np.float64).copy()
        rest[groups] = 0.0
        base = rest @ self._m.T + self._c
        m = np.ascontiguousarray(self._m[:, groups].T)  # [len(groups), n_layouts + 1]
        if block == 1:
            return lambda counts: self._products(counts @ m + base)
        return lambda counts: self._products(padded(counts @ m + base, block))

    def weighted(self, weight) -> CostTable:
        """The same terms, each coefficient times `weight(owner, n_factors)` (terms of weight 0
        dropped): a cost model fitted per layer over the terms of this one."""
        table = CostTable(self.n_groups)
        for coef, idx, owner in self.terms:
            w = weight(owner, len(idx))
            if w:
                table.add(coef * w, [self.layouts[i] for i in idx], owner)
        return table.compile()

    def owners(self) -> list[tuple[str, int]]:
        """(owner, number of layout factors) of every kind of term, in order of first use."""
        return list(dict.fromkeys((owner, len(idx)) for _, idx, owner in self.terms))

    def _products(self, sizes: np.ndarray) -> np.ndarray:
        """sum_j coef_j * prod of the term's layout sizes, for every row of `sizes`."""
        idx = self._merged_idx
        prod = sizes[:, idx[:, 0]]
        for k in range(1, idx.shape[1]):
            prod = prod * sizes[:, idx[:, k]]
        return prod @ self._merged_coef

    def last_channel(self, counts: np.ndarray) -> np.ndarray:
        """For every group, the cost that its last kept channel (per block) adds: cost(counts)
        minus cost(counts with that group one channel smaller). Linear in the table's size."""
        sizes = np.asarray(counts, dtype=np.float64) @ self._m.T + self._c
        out = np.zeros(self.n_groups)
        for j, (_, idx, _) in enumerate(self.terms):
            s = sizes[list(idx)]
            total = self._coef[j] * s.prod()
            touched = {g for i in idx for g in np.flatnonzero(self._m[i])}
            for g in touched:
                smaller = s - self._m[list(idx), g]
                out[g] += total - self._coef[j] * smaller.prod()
        return out

    def per_owner(self, counts: np.ndarray, block: int = 1) -> dict[str, float]:
        sizes = padded(np.asarray(counts, dtype=np.float64) @ self._m.T + self._c, block)
        out: dict[str, float] = {}
        for j, (_, _, owner) in enumerate(self.terms):
            out[owner] = out.get(owner, 0.0) + float(self._coef[j] * sizes[self._idx[j]].prod())
        return out


def padded(sizes: np.ndarray, block: int) -> np.ndarray:
    """Layout sizes rounded up to a multiple of `block` channels (a runtime that computes in
    blocks of channels pays for a whole block); the last column, the constant 1, stays."""
    if block == 1:
        return sizes
    out = np.ceil(sizes / block) * block
    out[..., -1] = sizes[..., -1]
    return out


class FlopsCtx(NodeView):
    """What a FLOPs rule sees: argument values and their resolved layouts."""

    def __init__(self, node: fx.Node, modules):
        self.node = node
        self.module = modules.get(node.target) if node.op == "call_module" else None
        self.out = node.meta[VALUE]
        self.out_lay = layouts(node)

    def lay(self, i: int, name: str | None = None):
        raw = self._raw(i, name)
        if isinstance(raw, fx.Node):
            lays = layouts(raw)
            if lays is None and isinstance(raw.meta.get(VALUE), TensorMeta):
                return (None,) * raw.meta[VALUE].ndim
            return lays
        return None


def flops_table(gm, n_groups: int) -> CostTable:
    """The FLOPs of every node as terms over layouts. Needs the coupling pass first."""
    modules = dict(gm.named_modules())
    table = CostTable(n_groups)
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        spec = ops.lookup(node, modules)
        if spec is not None and spec.flops is not None:
            for coef, factors in spec.flops(FlopsCtx(node, modules)):
                table.add(coef, factors, layer_name(node))
        elif node.meta.get(MEASURED):  # ran for real (op without a formula): a constant cost
            table.add(node.meta[MEASURED], (), layer_name(node))
    return table.compile()


def params_table(gm, coupling: Coupling) -> CostTable:
    """Number of parameters the graph uses (each shared tensor once) as terms over layouts."""
    table = CostTable(len(coupling.groups))
    for name, p in used_parameters(gm):
        dims = coupling.param_dims.get(name, {})
        factors = [dims.get(d, size) for d, size in enumerate(p.shape)]
        table.add(1.0, factors, name.rsplit(".", 1)[0])
    return table.compile()


def activations_table(gm, n_groups: int) -> CostTable:
    """Elements of every node's output tensor as terms over its channel layouts: the memory a
    forward pass writes, by layer (a latency model's second feature beside the FLOPs). Needs
    the coupling pass first."""
    table = CostTable(n_groups)
    for node in gm.graph.nodes:
        value = node.meta.get(VALUE)
        if node.op in ("placeholder", "output", "get_attr") or not isinstance(value, TensorMeta):
            continue
        lays = layouts(node)
        if not isinstance(lays, tuple | list) or len(lays) != value.ndim:
            continue
        channels = [lay for lay in lays if isinstance(lay, Layout)]
        full = math.prod(lay.size for lay in channels)
        if full:
            table.add(value.numel() / full, channels, layer_name(node))
    return table.compile()


def used_parameters(gm) -> list[tuple[str, torch.nn.Parameter]]:
    """(qualified name, parameter) of every parameter the graph reads, each tensor once."""
    modules = dict(gm.named_modules())
    seen: set[int] = set()
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            found = modules[node.target].named_parameters(prefix=node.target)
        elif node.op == "get_attr":
            owner, _, attr = node.target.rpartition(".")
            p = getattr(modules[owner], attr, None)
            found = [(node.target, p)] if isinstance(p, torch.nn.Parameter) else []
        else:
            continue
        for name, p in found:
            if id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
    return out


def count_macs(module: torch.nn.Module, example_inputs) -> float:
    """An independent count: FlopCounterMode over conv, linear, matmul and attention, in MACs
    per sample (divided by the batch size, the first dimension of the first input, as
    `Program.flops`). (It counts nothing for the CPU kernel of scaled dot-product attention
    unless told how.)"""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    counter = FlopCounterMode(display=False, custom_mapping={cpu_sdpa: sdpa} if cpu_sdpa else {})
    with torch.no_grad(), counter:
        module(*example_inputs)
    first = next((x for x in example_inputs if isinstance(x, torch.Tensor) and x.ndim), None)
    batch = int(first.shape[0]) if first is not None else 1
    return counter.get_total_flops() / 2 / max(batch, 1)
