"""From the coupling walk to channel groups (the end of passes/coupling.py).

Only unrefined atoms (passes/atoms.py) become groups, numbered in order of first appearance so
that one model always gets the same ids. Every node's value gets its resolved layouts in
`node.meta[LAYOUTS]` and its literal channel counts in `node.meta[REWRITES]`; every parameter
dim that follows channels is recorded under every name of its stored tensor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from torch import fx

from widthc.errors import InternalError, Reason
from widthc.ir import ChannelGroup, Layout, Segment
from widthc.passes.atoms import ParamVar
from widthc.tree import leaves, map_leaves

LAYOUTS = "widthc.layouts"  # node.meta key: per-dim Layout|None of the node's value (resolved)
# node.meta key: [(path, Layout)] literal channel counts to rewrite; (path, int): a size read
# from a tensor that carries channels, pinned to its value where its dim keeps its width
REWRITES = "widthc.rewrites"


def layouts(node: fx.Node):
    """The resolved channel layouts of a node's value (per dim a Layout or None, or a structure
    of them; None: no channels), which the coupling pass writes."""
    return _fact(node, LAYOUTS)


def rewrites(node: fx.Node) -> list:
    """The node's literal channel counts to rewrite per width: [(path, Layout)], and sizes
    pinned to a constant: [(path, int)]."""
    return _fact(node, REWRITES)


def _fact(node: fx.Node, key: str):
    try:
        return node.meta[key]
    except KeyError:
        raise InternalError(
            f"node `{node.name}` has no `{key}`: run the coupling pass (widthc.passes.coupling) "
            f"on its graph first"
        ) from None


@dataclass
class Coupling:
    """The result of the pass: groups, and the channel layout of every parameter dim."""

    groups: list[ChannelGroup]
    param_dims: dict[str, dict[int, Layout]] = field(default_factory=dict)

    def searchable_width(self) -> int:
        """Positions of searchable channels at their first producers."""
        return sum(g.width for g in self.groups if g.searchable)


def layer_name(node: fx.Node) -> str:
    """How the user's model names this layer: the module path, or the fx node name."""
    return str(node.target) if node.op == "call_module" else node.name


def _stored_names(st, param_dims: dict) -> None:
    """Channel dims of computed weights move to the stored tensors they come from; a tensor
    under several names gets its dims under every name (each owner slices it alike)."""
    for target, (owner, how) in st.computed.items():
        dims = param_dims.pop(target, {})
        for path, follows in how.sources:
            source = f"{owner}.{path}"
            kept = {i: dims[w] for i, w in enumerate(follows) if w is not None and w in dims}
            if kept:
                param_dims[source] = kept
            st.param_users[source] = st.param_users[target]
    for first, names in st.names.items():
        for name in names:
            if name != first and first in param_dims:
                param_dims[name] = param_dims[first]
                st.param_users[name] = st.param_users[first]


def _at_producer(lay: Layout, g: int) -> tuple[int, int]:
    """(positions of group g in its producer's output, positions per channel of g there)."""
    mine = [s for s in lay.segments if s.group == g]
    return sum(s.width for s in mine), mine[0].inner


def finish(st) -> Coupling:
    """Number the groups of a finished coupling walk `st` (passes/coupling.py's state) and
    write every node's layouts and literal rewrites into its meta."""
    # deterministic ids: groups numbered by their first atom, atoms numbered in graph order
    # (a refined atom's parts in its place); refined atoms are no groups, their parts are
    roots: dict[int, int] = {}
    atoms = st.leaves()
    for a in atoms:
        roots.setdefault(st.uf[a], len(roots))
    gid = {a: roots[st.uf[a]] for a in atoms}
    first_atom: dict[int, int] = {}  # group -> its first atom with a producer
    for a in atoms:
        if a in st.producer:
            first_atom.setdefault(gid[a], a)
    # a group shrinks in as many equal blocks as its grouped convs need (lcm of their groups;
    # every such count divides the channels, so the lcm does too)
    blocks = [1] * len(roots)
    for a, b in st.blocks.items():
        blocks[gid[a]] = math.lcm(blocks[gid[a]], b)

    def final_segment(s: Segment) -> Segment:
        g = gid[s.group]
        size = st.atom_size[s.group] // blocks[g]
        return Segment(g, size, s.inner, s.outer * blocks[g] // s.blocks)

    done: dict[Layout, Layout] = {}  # many nodes share one layout

    def final(e):
        r = st.resolve(e)
        if not isinstance(r, Layout):
            return None
        if r not in done:
            done[r] = Layout(tuple(final_segment(s) for s in r.segments))
        return done[r]

    members: dict[int, dict[str, None]] = defaultdict(dict)  # ordered sets
    produced: dict[int, tuple[int, int]] = {}  # group -> (width, unit) at its first producer
    is_entry = lambda x: isinstance(x, (Layout, ParamVar))  # noqa: E731
    for node in st.gm.graph.nodes:
        resolved = map_leaves(final, st.entries.get(node), is_leaf=is_entry)
        node.meta[LAYOUTS] = resolved
        name = layer_name(node)
        for lay in leaves(resolved, is_leaf=is_entry):
            if isinstance(lay, Layout):
                for g in lay.groups:
                    members[g][name] = None
                for s in lay.segments:
                    a = first_atom.get(s.group)
                    if a is not None and name == st.producer[a] and s.group not in produced:
                        produced[s.group] = _at_producer(lay, s.group)
        node.meta[REWRITES] = [
            (p, e if isinstance(e, int) else final(e))
            for p, e in st.rewrites.get(node, [])
            if isinstance(e, int) or final(e) is not None
        ]

    param_dims: dict[str, dict[int, Layout]] = defaultdict(dict)
    for (target, dim), bound in sorted(st.binding.items()):
        lay = final(bound)
        if lay is not None:
            param_dims[target][dim] = lay
    _stored_names(st, param_dims)

    n_groups = len(roots)
    sizes = [0] * n_groups
    producers: dict[int, dict[str, None]] = defaultdict(dict)
    frozen: dict[int, dict[Reason, None]] = defaultdict(dict)
    mixing: dict[int, dict[str, None]] = defaultdict(dict)
    ordered: dict[int, dict[str, None]] = defaultdict(dict)
    for a in atoms:
        g = gid[a]
        sizes[g] = st.atom_size[a]
        if a in st.producer:
            producers[g][st.producer[a]] = None
        frozen[g].update(dict.fromkeys(st.frozen.get(a, ())))
        mixing[g].update(dict.fromkeys(st.mixing.get(a, ())))
        ordered[g].update(dict.fromkeys(st.ordered.get(a, ())))
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
            ordered=tuple(ordered[g]),
            bins=(sizes[g] // blocks[g],),
            blocks=blocks[g],
            unit=produced.get(g, (0, 1))[1],
            width=produced.get(g, (sizes[g], 1))[0],
        )
        for g in range(n_groups)
    ]
    return Coupling(groups, dict(param_dims))
