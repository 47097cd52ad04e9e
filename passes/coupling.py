"""Coupling: which channels must keep the same index set (DESIGN §4).

One walk over the graph in topological order runs every node's channel rule from the op registry.
A channel dim is described by an *entry*: a `Layout` of atoms (channel vectors created by
producers), `None` (a dim of fixed width: batch, spatial, the network's input, an unknown op's
output), or a `ParamVar` (a dim of a parameter whose channels are not known yet: bound by the
first rule that meets it). Rules union atoms (passes/atoms.py: networkx's UnionFind, atoms cut
where the graph splits them), freeze them with a `Reason`, or mark them as mixed. At the end
(passes/groups.py) every atom set becomes a `ChannelGroup` with a deterministic id (order of
first appearance), and every parameter dim that follows channels is recorded, so that slim and
the supernet can slice any weight from one table. One tensor under several names (tied
weights) is analysed once; a weight computed from stored tensors (weight norm) is sliced
through them (widthc/ops/reparam.py).
"""

from __future__ import annotations

import math

import torch
from torch import fx

from widthc import batch, ops
from widthc.errors import Reason
from widthc.ir import Layout, Segment, TensorMeta
from widthc.ops.reparam import reparam, tensor_at
from widthc.passes.atoms import NETWORK_OUTPUT, ParamVar
from widthc.passes.coupling_special import hidden_tensors, python_value
from widthc.passes.coupling_state import CouplingState
from widthc.passes.entries import (
    entries_of,
    fits,
    fixed_like,
    flat_entries,
    stored_tensor,
    touches_tensors,
)
from widthc.passes.groups import LAYOUTS, REWRITES, Coupling, finish, layer_name
from widthc.trace import VALUE, NodeView, ShapeProp

__all__ = ["LAYOUTS", "REWRITES", "Coupling", "ParamVar", "couple", "layer_name"]


class CoupleCtx(NodeView):
    """What a channel rule sees and can do (see widthc/ops.py)."""

    def __init__(self, st: CouplingState, node: fx.Node):
        self.st, self.node = st, node
        self.module = st.modules.get(node.target) if node.op == "call_module" else None
        self.out = node.meta[VALUE]
        self.op = ops.op_name(node, st.modules)

    # --- reading ------------------------------------------------------------------------------

    def lay(self, i: int, name: str | None = None):
        raw = self._raw(i, name)
        if raw is ops.REQUIRED or raw is None:
            return None
        return entries_of(self.st.entries, raw)

    def item_of(self, i: int, index):
        e = self.lay(i)
        try:
            return e[index] if e is not None else None
        except (IndexError, KeyError, TypeError):
            return None

    def param(self, name: str):
        """Entries of the module's tensor `name`. A weight computed from stored tensors (weight
        norm) keeps, after the rule, the widths its parametrization cannot follow."""
        path, _, attr = name.rpartition(".")  # `out_proj.weight`: a submodule's tensor
        owner = self.module.get_submodule(path) if path else self.module
        target, how = f"{self.node.target}.{name}", reparam(owner, attr)
        # (the stored tensor, or one of the computed weight's shape: no parametrization runs)
        t = getattr(owner, attr, None) if how is None else tensor_at(owner, how.like)
        if not isinstance(t, torch.Tensor):
            return None
        if how is None:
            target = self.st.tensor_name(target, t)
        else:
            self.st.computed[target] = (target.rpartition(".")[0], how)
            self.st.after_rule += [("sink", ParamVar(target, d, 0), how.why) for d in how.fixed]
            self.st.after_rule += [("mix", ParamVar(target, d, 0), how.why) for d in how.mixes]
        self.st.param_users[target].append(layer_name(self.node))
        return tuple(ParamVar(target, d, s) for d, s in enumerate(t.shape))

    def tensor_args(self) -> list:
        out = []
        for raw in (*self.node.args, *self.node.kwargs.values()):
            if isinstance(raw, fx.Node) and isinstance(raw.meta.get(VALUE), TensorMeta):
                out.append((raw.meta[VALUE], entries_of(self.st.entries, raw)))
        return out

    def resolve(self, e):
        return self.st.resolve(e)

    def value(self, raw):
        """The value of a node (or of the nodes in a structure) on the example input."""
        return fx.node.map_arg(raw, lambda n: n.meta[VALUE])

    def batch_free(self, raw) -> bool:
        """A Python value node is the same with the example at another batch size (a head_dim
        read from a shape; not the batch size, nor a product with it). False where the example
        inputs are not known or the graph does not run at that batch."""
        st = self.st
        if not isinstance(raw, fx.Node) or st.examples is None or not batch.has_batch(st.examples):
            return False
        if st.other is None:
            wider = batch.at_batch(st.examples, batch.batch_size(st.examples) + 1)
            st.other = ShapeProp(st.gm, wider, record=False)
        try:
            return st.other.value_of(raw) == raw.meta[VALUE]
        except Exception:  # noqa: BLE001 - the graph holds at the example's batch only
            return False

    def batch_dependent(self, raw) -> bool:
        """A Python value node that differs at another batch size (`B * C`, B read from the
        input); False where the examples have no batch dim."""
        st = self.st
        has = isinstance(raw, fx.Node) and st.examples is not None and batch.has_batch(st.examples)
        return has and not self.batch_free(raw)

    def entry(self, raw):
        """The entry of a Python value node (a size read from a tensor carries its channels)."""
        return self.st.entries.get(raw) if isinstance(raw, fx.Node) else None

    # --- acting ---------------------------------------------------------------------------------

    def reason(self, why: str) -> Reason:
        return Reason(why, layer_name(self.node), self.op)

    def unify(self, *entries, why: str = ""):
        st = self.st
        layouts, variables, fixed, cause = [], [], False, None
        for e in entries:
            r = st.resolve(e)
            if isinstance(r, Layout):
                layouts.append(r)
            elif isinstance(r, ParamVar):
                if r not in variables:
                    variables.append(r)
            else:
                fixed = True
                cause = cause or st.fixed_reason(e)
        if layouts:
            base = layouts[0]
            for other in layouts[1:]:
                if other is not base:
                    st.union(base, other, self.reason(why or "shared channels"))
            if fixed:
                cause = cause or self.reason(f"{why or 'channels'}: meets a fixed-width tensor")
                for lay in layouts:
                    st.freeze(lay, cause)
            for v in variables:
                st.bind(v, base)
            return base
        if fixed:
            for v in variables:
                st.bind(v, None)
            return None
        if variables:
            for v in variables[1:]:
                st.bind(v, variables[0])
            return variables[0]
        return None

    def frozen(self, entry) -> bool:
        """The entry keeps its width whatever the choice: no channels, or frozen ones only
        (freezing is for good: a frozen atom's parts and everything it joins are frozen)."""
        r = self.st.resolve(entry)
        if not isinstance(r, Layout):
            return not isinstance(r, ParamVar)
        return all(self.st.frozen.get(s.group) for s in r.segments)

    def same_counts(self, a, b) -> bool:
        """Two entries count the same channels at every width (without uniting anything)."""
        a, b = self.st.resolve(a), self.st.resolve(b)
        if not (isinstance(a, Layout) and isinstance(b, Layout)):
            return False
        form = self.st.count_form(a)
        return form is not None and form == self.st.count_form(b)

    def same_count(self, size, entry, why: str):
        """A size read from a tensor (`x.size(1)`) given for a dim whose channels are `entry`:
        both must count the same channels at every width. Equal counts of differently laid
        out channels (a channel shuffle's `c`) need no union."""
        a, b = self.st.resolve(size), self.st.resolve(entry)
        if isinstance(a, Layout) and isinstance(b, Layout):
            form = self.st.count_form(a)
            if form is not None and form == self.st.count_form(b):
                return b
        return self.unify(size, entry, why=why)

    def produce(self, entry, size: int):
        """Output channels of this layer: a new atom for a weight dim not decided yet; a weight
        computed in the graph (weight standardisation) brings its own, which this layer then
        produces."""
        r = self.st.resolve(entry)
        if isinstance(r, ParamVar):
            lay = self.st.new_atom(size, layer_name(self.node))
            self.st.bind(r, lay)
            return lay
        if isinstance(r, Layout):
            for s in r.segments:
                self.st.producer.setdefault(s.group, layer_name(self.node))
        return r

    def own(self, entry, size: int):
        """A weight dim not decided yet that an op computes with (a reshape of the weight)
        becomes channels of their own; the layers that read the result decide the rest."""
        r = self.st.resolve(entry)
        if isinstance(r, ParamVar):
            lay = self.st.new_atom(size)
            self.st.bind(r, lay)
            return lay
        return r

    def sink(self, entry, why: str) -> None:
        r = self.st.resolve(entry)
        if isinstance(r, Layout):
            self.st.freeze(r, self.reason(why))
        elif isinstance(r, ParamVar):  # a tensor dim that keeps its width, and why
            self.st.bind(r, None)
            self.st.why_fixed[(r.target, r.dim)] = self.reason(why)

    def mix(self, entry, ordered: bool = False) -> None:
        """The op combines the channels of `entry` (a norm's statistics, a softmax, a mean):
        the zeroed-weights reference cannot express removing them (verify.py). A tensor dim
        with no channels yet is mixed once a layer gives it some (`mixed_vars`). `ordered`: its
        result also depends on their order (argmax returns a position)."""
        r = self.st.resolve(entry)
        if isinstance(r, Layout):
            for s in r.segments:
                self.st.mixing[s.group].append(layer_name(self.node))
                if ordered:
                    self.st.ordered[s.group].append(layer_name(self.node))
        elif isinstance(r, ParamVar):
            self.st.mixed_vars.append((r, layer_name(self.node)))

    def concat(self, parts: list) -> Layout | None:
        """The layout of a concatenation. Tensors whose channels are not decided yet (weights:
        a qkv bias made of q, k and v biases) become channels of their own unless a part keeps
        its width; then every part does."""
        resolved = [(size, self.st.resolve(e)) for size, e in parts if size]  # empty: nothing
        if all(isinstance(r, (Layout, ParamVar)) for _, r in resolved):
            resolved = [(size, self.own(r, size)) for size, r in resolved]
        if not any(isinstance(r, Layout) for _, r in resolved):
            for _, r in resolved:
                self.sink(r, "concatenated")
            return None
        segments = []
        for size, r in resolved:
            if not isinstance(r, Layout):
                fresh = self.st.new_atom(size)
                self.st.freeze(fresh, self.reason("concatenated with a fixed-width tensor"))
                if isinstance(r, ParamVar):
                    self.st.bind(r, fresh)
                r = fresh
            segments.extend(r.segments)
        return Layout(tuple(segments))

    def cut(self, entry, positions) -> Layout | None:
        """The entry's layout with a segment boundary at every position (the channels of a
        producer cut into parts that shrink on their own), or None where that cannot be."""
        r = self.st.resolve(entry)
        return self.st.cut(r, positions) if isinstance(r, Layout) else None

    def coarsen(self, entry, unit: int) -> Layout | None:
        """The entry's layout counted in units of `unit` positions (heads of `unit` channels):
        its channels shrink in whole units from now on. None where that cannot be."""
        r = self.st.resolve(entry)
        return self.st.coarsen(r, unit) if isinstance(r, Layout) else None

    def repeat(self, entry, times: int, why: str):
        """Each position of `entry` repeated `times` times (one key/value head per run of
        query heads): a Layout, None for a fixed dim; a dim not decided yet keeps its width."""
        r = self.st.resolve(entry)
        if isinstance(r, Layout):
            return r.repeat(times)
        self.sink(r, why)
        return None

    def unrepeat(self, entry: Layout, tail: int) -> Layout:
        return Layout(
            tuple(
                Segment(s.group, s.size, s.inner // tail, s.outer, s.blocks) for s in entry.segments
            )
        )

    def blocked(self, entry, n_blocks: int, why: str):
        """Require the channels of `entry` to shrink alike in `n_blocks` equal blocks (a grouped
        conv). Returns one block as a layout (the per-group input of the conv), or None when
        that cannot be expressed (then the channels are frozen)."""
        r = self.st.resolve(entry)
        if not isinstance(r, Layout):
            return None
        (seg,) = r.segments if len(r.segments) == 1 else (None,)
        if seg is None or seg.inner != 1 or seg.blocks != 1 or seg.size % n_blocks:
            self.st.freeze(r, self.reason(why))
            return None
        self.st.blocks[seg.group] = math.lcm(self.st.blocks.get(seg.group, 1), n_blocks)
        return Layout((Segment(seg.group, seg.size // n_blocks, 1, 1, n_blocks),))

    def second_reading(self) -> bool:
        """Read this op's channels the second way its rule knows (`offer_second`): a walk
        before found them frozen the first way (`couple`)."""
        return layer_name(self.node) in self.st.switched

    def offer_second(self, entry) -> None:
        """This op could read the channels of `entry` a second way (a grouped conv: whole
        groups rather than equal blocks; a reshape: heads rather than equal pieces)."""
        r = self.st.resolve(entry)
        for s in r.segments if isinstance(r, Layout) else ():
            self.st.second[s.group].append(layer_name(self.node))

    def rewrite(self, path: tuple, entry) -> None:
        """The literal at `path` follows `entry`'s width; an int: it is pinned to that value."""
        self.st.rewrites[self.node].append((path, entry))

    def set(self, entries) -> None:
        self.st.entries[self.node] = entries

    def set_fixed(self) -> None:
        self.st.entries[self.node] = fixed_like(self.out)

    def barrier(self, why: str) -> None:
        for e in flat_entries(self.st.entries, list(self.node.all_input_nodes)):
            self.sink(e, why)
        self.set_fixed()


SECOND_WALKS = 2  # walks with more ops read the second way, after the first


def couple(gm, examples=None) -> Coupling:
    """Run every node's channel rule; return the groups. Needs `trace.propagate_shapes` first.
    `examples`: the example inputs, to tell sizes that depend on the batch size from others.
    Where channels that an op could read a second way end frozen (equal blocks of a grouped
    conv that attention heads need whole, a view read as equal pieces that an attention
    matmul needs as heads), the graph is walked again with those ops switched, at most
    `SECOND_WALKS` times; the walk that leaves the most channels searchable is kept."""
    st = _walk(CouplingState(gm, examples))
    best, coupling = st, finish(st)
    for _ in range(SECOND_WALKS):
        wanted = st.second_wanted()
        if wanted <= st.switched:
            break
        st = _walk(st.walk_again(wanted))
        found = finish(st)
        if found.searchable_width() > coupling.searchable_width():
            best, coupling = st, found
    return coupling if best is st else finish(best)  # (finish writes the nodes' meta)


def _walk(st: CouplingState) -> CouplingState:
    gm = st.gm
    for node in gm.graph.nodes:
        if VALUE not in node.meta:
            raise RuntimeError(f"node {node.name} has no shape: run trace.propagate_shapes first")
        ctx = CoupleCtx(st, node)
        if node.op == "placeholder":
            ctx.set_fixed()
        elif node.op == "get_attr":
            v = node.meta[VALUE]
            if isinstance(v, TensorMeta):
                target = st.tensor_name(node.target, stored_tensor(gm, node.target))
                st.param_users[target].append(node.name)
                ctx.set(tuple(ParamVar(target, d, s) for d, s in enumerate(v.shape)))
            else:
                ctx.set_fixed()
        elif node.op == "output":
            for e in flat_entries(st.entries, list(node.all_input_nodes)):
                ctx.sink(e, NETWORK_OUTPUT)
        elif not node.all_input_nodes:
            ctx.set_fixed()
        elif not touches_tensors(node):
            python_value(ctx)
        else:
            spec = ops.lookup(node, st.modules)
            if spec is None:
                ctx.barrier(f"touches unknown op `{ctx.op}`")
                if node.op == "call_module":
                    hidden_tensors(ctx)
            else:
                spec.couple(ctx)
                if node not in st.entries:
                    ctx.set_fixed()
                for action, var, why in st.after_rule:
                    ctx.sink(var, why) if action == "sink" else ctx.mix(var)
                st.after_rule.clear()
        if not fits(st.entries.get(node), node.meta[VALUE]):
            # a rule that lost track of a tensor's dims: freeze rather than guess
            ctx.barrier(f"cannot follow the channels through `{ctx.op}`")
    for var, layer in st.mixed_vars:
        r = st.resolve(var)
        for s in r.segments if isinstance(r, Layout) else ():
            st.mixing[s.group].append(layer)
    return st
