"""Coupling: which channels must keep the same index set (DESIGN §4).

One walk over the graph in topological order runs every node's channel rule from the op registry.
A channel dim is described by an *entry*: a `Layout` of atoms (channel vectors created by
producers), `None` (a dim of fixed width: batch, spatial, the network's input, an unknown op's
output), or a `ParamVar` (a dim of a parameter whose channels are not known yet: bound by the
first rule that meets it). Rules union atoms (networkx's UnionFind), freeze them with a `Reason`,
or mark them as mixed. At the end every atom set becomes a `ChannelGroup` with a deterministic
id (order of first appearance), and every parameter dim that follows channels is recorded, so
that slim and the supernet can slice any weight from one table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from networkx.utils import UnionFind
from torch import fx

from widthc import ops
from widthc.errors import Reason
from widthc.ir import ChannelGroup, Layout, Segment, TensorMeta
from widthc.trace import VALUE, NodeView
from widthc.tree import leaves, map_leaves

LAYOUTS = "widthc.layouts"  # node.meta key: per-dim Layout|None of the node's value (resolved)
REWRITES = "widthc.rewrites"  # node.meta key: [(path, Layout)] literal channel counts to rewrite


@dataclass(frozen=True)
class ParamVar:
    """Dim `dim` of parameter or buffer `target`, channels not decided yet."""

    target: str
    dim: int
    size: int


@dataclass
class Coupling:
    """The result of the pass: groups, and the channel layout of every parameter dim."""

    groups: list[ChannelGroup]
    param_dims: dict[str, dict[int, Layout]] = field(default_factory=dict)


def layer_name(node: fx.Node) -> str:
    """How the user's model names this layer: the module path, or the fx node name."""
    return str(node.target) if node.op == "call_module" else node.name


class _State:
    def __init__(self, gm):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.uf = UnionFind()
        self.atom_size: list[int] = []
        self.producer: dict[int, str] = {}
        self.frozen: dict[int, list[Reason]] = defaultdict(list)
        self.mixing: dict[int, list[str]] = defaultdict(list)
        self.binding: dict[tuple[str, int], object] = {}
        self.entries: dict[fx.Node, object] = {}
        self.rewrites: dict[fx.Node, list] = defaultdict(list)
        self.param_users: dict[str, list[str]] = defaultdict(list)
        self.blocks: dict[int, int] = {}  # atom -> number of equal blocks it must shrink by

    # --- atoms and entries ---------------------------------------------------------------------

    def new_atom(self, size: int, producer: str | None = None) -> Layout:
        a = len(self.atom_size)
        self.atom_size.append(size)
        self.uf[a]  # noqa: B018 - registers the atom
        if producer is not None:
            self.producer[a] = producer
        return Layout((Segment(a, size, 1),))

    def resolve(self, e):
        while isinstance(e, ParamVar):
            key = (e.target, e.dim)
            if key not in self.binding:
                return e
            e = self.binding[key]
        return e

    def bind(self, var: ParamVar, e) -> None:
        self.binding[(var.target, var.dim)] = e

    def freeze(self, layout: Layout, reason: Reason) -> None:
        for s in layout.segments:
            if reason not in self.frozen[s.group]:
                self.frozen[s.group].append(reason)

    def union(self, a: Layout, b: Layout, reason: Reason) -> None:
        if a.shape_key() == b.shape_key():
            for sa, sb in zip(a.segments, b.segments):
                self.uf.union(sa.group, sb.group)
        else:
            why = Reason(
                f"{reason.why}: channel structures differ (concatenated or repeated)",
                reason.node,
                reason.op,
            )
            self.freeze(a, why)
            self.freeze(b, why)


class CoupleCtx(NodeView):
    """What a channel rule sees and can do (see widthc/ops.py)."""

    def __init__(self, st: _State, node: fx.Node):
        self.st, self.node = st, node
        self.module = st.modules.get(node.target) if node.op == "call_module" else None
        self.out = node.meta[VALUE]
        self.op = ops.op_name(node, st.modules)

    # --- reading ------------------------------------------------------------------------------

    def lay(self, i: int, name: str | None = None):
        raw = self._raw(i, name)
        if raw is ops._REQUIRED or raw is None:
            return None
        return _entries_of(self.st, raw)

    def item_of(self, i: int, index):
        e = self.lay(i)
        try:
            return e[index] if e is not None else None
        except (IndexError, KeyError, TypeError):
            return None

    def param(self, name: str):
        t = getattr(self.module, name, None)
        if not isinstance(t, torch.Tensor):
            return None
        target = f"{self.node.target}.{name}"
        self.st.param_users[target].append(layer_name(self.node))
        return tuple(ParamVar(target, d, s) for d, s in enumerate(t.shape))

    def tensor_args(self) -> list:
        out = []
        for raw in (*self.node.args, *self.node.kwargs.values()):
            if isinstance(raw, fx.Node) and isinstance(raw.meta.get(VALUE), TensorMeta):
                out.append((raw.meta[VALUE], _entries_of(self.st, raw)))
        return out

    def resolve(self, e):
        return self.st.resolve(e)

    def entry(self, raw):
        """The entry of a Python value node (a size read from a tensor carries its channels)."""
        return self.st.entries.get(raw) if isinstance(raw, fx.Node) else None

    # --- acting ---------------------------------------------------------------------------------

    def reason(self, why: str) -> Reason:
        return Reason(why, layer_name(self.node), self.op)

    def unify(self, *entries, why: str = ""):
        st = self.st
        layouts, variables, fixed = [], [], False
        for e in entries:
            r = st.resolve(e)
            if isinstance(r, Layout):
                layouts.append(r)
            elif isinstance(r, ParamVar):
                if r not in variables:
                    variables.append(r)
            else:
                fixed = True
        if layouts:
            base = layouts[0]
            for other in layouts[1:]:
                if other is not base:
                    st.union(base, other, self.reason(why or "shared channels"))
            if fixed:
                for lay in layouts:
                    st.freeze(lay, self.reason(f"{why or 'channels'}: meets a fixed-width tensor"))
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

    def produce(self, entry, size: int):
        r = self.st.resolve(entry)
        if isinstance(r, ParamVar):
            lay = self.st.new_atom(size, layer_name(self.node))
            self.st.bind(r, lay)
            return lay
        return r

    def sink(self, entry, why: str) -> None:
        r = self.st.resolve(entry)
        if isinstance(r, Layout):
            self.st.freeze(r, self.reason(why))
        elif isinstance(r, ParamVar):
            self.st.bind(r, None)

    def mix(self, entry) -> None:
        r = self.st.resolve(entry)
        if isinstance(r, Layout):
            for s in r.segments:
                self.st.mixing[s.group].append(layer_name(self.node))
        elif isinstance(r, ParamVar):
            self.st.bind(r, None)

    def concat(self, parts: list) -> Layout | None:
        resolved = [(size, self.st.resolve(e)) for size, e in parts]
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

    def rewrite(self, path: tuple, entry) -> None:
        self.st.rewrites[self.node].append((path, entry))

    def set(self, entries) -> None:
        self.st.entries[self.node] = entries

    def set_fixed(self) -> None:
        self.st.entries[self.node] = _fixed_like(self.out)

    def barrier(self, why: str) -> None:
        for e in _flat_entries(self.st, list(self.node.all_input_nodes)):
            self.sink(e, why)
        self.set_fixed()


def _fixed_like(value):
    if isinstance(value, TensorMeta):
        return (None,) * value.ndim
    if isinstance(value, list):
        return [_fixed_like(v) for v in value]
    if isinstance(value, tuple):  # namedtuples and torch.Size too
        return tuple(_fixed_like(v) for v in value)
    if isinstance(value, dict):
        return {k: _fixed_like(v) for k, v in value.items()}
    return None


def _entries_of(st: _State, raw):
    if isinstance(raw, fx.Node):
        return st.entries.get(raw, _fixed_like(raw.meta.get(VALUE)))
    if isinstance(raw, (tuple, list)):
        return [_entries_of(st, r) for r in raw]
    return None


def _flat_entries(st: _State, nodes: list[fx.Node]) -> list:
    out = []
    for n in nodes:
        found = leaves(st.entries.get(n), is_leaf=lambda x: isinstance(x, (Layout, ParamVar)))
        out.extend(e for e in found if e is not None)
    return out


def couple(gm) -> Coupling:
    """Run every node's channel rule; return the groups. Needs `trace.propagate_shapes` first."""
    st = _State(gm)
    for node in gm.graph.nodes:
        if VALUE not in node.meta:
            raise RuntimeError(f"node {node.name} has no shape: run trace.propagate_shapes first")
        ctx = CoupleCtx(st, node)
        if node.op == "placeholder":
            ctx.set_fixed()
        elif node.op == "get_attr":
            v = node.meta[VALUE]
            if isinstance(v, TensorMeta):
                st.param_users[node.target].append(node.name)
                ctx.set(tuple(ParamVar(node.target, d, s) for d, s in enumerate(v.shape)))
            else:
                ctx.set_fixed()
        elif node.op == "output":
            for e in _flat_entries(st, list(node.all_input_nodes)):
                ctx.sink(e, "output of the network")
        elif not node.all_input_nodes:
            ctx.set_fixed()
        elif not _touches_tensors(node):
            _python_value(ctx)
        else:
            spec = ops.lookup(node, st.modules)
            if spec is None:
                ctx.barrier(f"touches unknown op `{ctx.op}`")
            else:
                spec.couple(ctx)
                if node not in st.entries:
                    ctx.set_fixed()
    return _finish(st)


def _python_value(ctx: CoupleCtx) -> None:
    """Python values: sizes keep their channels through indexing and tensor creation; any
    other arithmetic on a channel count freezes those channels (it cannot follow them)."""
    spec = ops.lookup(ctx.node, ctx.st.modules)
    if spec is not None and spec.family in ("getitem", "creation"):
        spec.couple(ctx)
        return
    for e in _flat_entries(ctx.st, list(ctx.node.all_input_nodes)):
        ctx.sink(e, "channel count used in arithmetic")
    ctx.set_fixed()


def _touches_tensors(node: fx.Node) -> bool:
    if node.op == "call_module":
        return True
    return any(
        isinstance(v, TensorMeta) for n in node.all_input_nodes for v in leaves(n.meta.get(VALUE))
    )


def _finish(st: _State) -> Coupling:
    # deterministic ids: groups numbered by their first atom, atoms numbered in graph order
    roots: dict[int, int] = {}
    for a in range(len(st.atom_size)):
        roots.setdefault(st.uf[a], len(roots))
    gid = {a: roots[st.uf[a]] for a in range(len(st.atom_size))}
    # a group shrinks in as many equal blocks as its grouped convs need (lcm of their groups;
    # every such count divides the channels, so the lcm does too)
    blocks = [1] * len(roots)
    for a, b in st.blocks.items():
        blocks[gid[a]] = math.lcm(blocks[gid[a]], b)

    def final_segment(s: Segment) -> Segment:
        g = gid[s.group]
        size = st.atom_size[s.group] // blocks[g]
        return Segment(g, size, s.inner, s.outer * blocks[g] // s.blocks)

    done: dict[int, Layout | None] = {}  # many nodes share one layout object

    def final(e):
        r = st.resolve(e)
        if not isinstance(r, Layout):
            return None
        if id(r) not in done:
            done[id(r)] = Layout(tuple(final_segment(s) for s in r.segments))
        return done[id(r)]

    members: dict[int, dict[str, None]] = defaultdict(dict)  # ordered sets
    is_entry = lambda x: isinstance(x, (Layout, ParamVar))  # noqa: E731
    for node in st.gm.graph.nodes:
        resolved = map_leaves(final, st.entries.get(node), is_leaf=is_entry)
        node.meta[LAYOUTS] = resolved
        name = layer_name(node)
        for lay in leaves(resolved, is_leaf=is_entry):
            if isinstance(lay, Layout):
                for g in lay.groups:
                    members[g][name] = None
        node.meta[REWRITES] = [
            (p, final(e)) for p, e in st.rewrites.get(node, []) if final(e) is not None
        ]

    param_dims: dict[str, dict[int, Layout]] = defaultdict(dict)
    for (target, dim), _ in sorted(st.binding.items()):
        lay = final(ParamVar(target, dim, 0))
        if lay is not None:
            param_dims[target][dim] = lay

    n_groups = len(roots)
    sizes = [0] * n_groups
    producers: dict[int, dict[str, None]] = defaultdict(dict)
    frozen: dict[int, dict[Reason, None]] = defaultdict(dict)
    mixing: dict[int, dict[str, None]] = defaultdict(dict)
    for a, size in enumerate(st.atom_size):
        g = gid[a]
        sizes[g] = size
        if a in st.producer:
            producers[g][st.producer[a]] = None
        frozen[g].update(dict.fromkeys(st.frozen.get(a, ())))
        mixing[g].update(dict.fromkeys(st.mixing.get(a, ())))
    consumers: dict[int, dict[str, None]] = defaultdict(dict)
    for target, dims in param_dims.items():
        for lay in dims.values():
            for g in lay.groups:
                for user in st.param_users.get(target, ()):
                    if user not in producers[g]:
                        consumers[g][user] = None
    groups = [
        ChannelGroup(
            id=g,
            n=sizes[g],
            producers=tuple(producers[g]),
            consumers=tuple(consumers[g]),
            members=tuple(members[g]),
            frozen=tuple(frozen[g]),
            mixing=tuple(mixing[g]),
            bins=(sizes[g] // blocks[g],),
            blocks=blocks[g],
        )
        for g in range(n_groups)
    ]
    return Coupling(groups, dict(param_dims))
