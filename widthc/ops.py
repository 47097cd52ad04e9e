"""The op registry: everything widthc knows about an op, in one table (DESIGN §4).

One `OpSpec` per op family: its shape formula, its channel rule (which input and output dims
share channels, which parameter dims follow them), its FLOPs formula (multiply-accumulates,
the paper's convention) and, for modules, how to resize its attributes once its weights are
sliced. `op_key(node)` normalises fx's three ways of naming an op. An op without an entry is a
barrier: it freezes the channels it touches (passes/coupling.py), it never guesses.

Rules receive a context (`ctx`) from the pass that runs them:
  shape:  ctx.arg(i, name, default) -> value; ctx.module; ctx.run_meta() -> value
  couple: ctx.lay(i, name) -> per-dim entries; ctx.param(name) -> the module parameter's entries;
          ctx.unify / produce / sink / mix / rewrite / set / barrier (see passes/coupling.py)
  flops:  ctx.arg, ctx.lay (resolved layouts), ctx.out, ctx.out_lay -> [(macs, factors), ...]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from widthc import shapes
from widthc.ir import Layout, TensorMeta

_REQUIRED = object()


@dataclass(frozen=True)
class OpSpec:
    """What widthc knows about one op family."""

    family: str
    shape: Callable[[Any], Any] | None  # None: run the op (meta, else real) to learn it
    couple: Callable[[Any], None]
    flops: Callable[[Any], list] | None = None
    resize: Callable[[nn.Module, dict, list], dict] | None = None


@dataclass(frozen=True)
class Method:
    """Registry key of a tensor method called by name (`x.view(...)`)."""

    name: str


REGISTRY: dict[Any, OpSpec] = {}


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


# ---------------------------------------------------------------------------------------------
# small helpers shared by the rules


def _x(ctx) -> TensorMeta:
    return ctx.arg(0, "input")


def _same_shape(ctx) -> TensorMeta:
    return _x(ctx)


def _broadcast_shape(ctx) -> TensorMeta:
    metas = [v for v in ctx.values() if isinstance(v, TensorMeta)]
    shape = torch.broadcast_shapes(*[m.shape for m in metas]) if metas else ()
    return TensorMeta(tuple(shape), metas[0].dtype if metas else torch.float32)


def _compare_shape(ctx) -> TensorMeta:
    return TensorMeta(_broadcast_shape(ctx).shape, torch.bool)


def _numel_split(meta: TensorMeta, lays) -> tuple[int, list]:
    """Product of a tensor's dims, as (fixed part, [layouts of its channel dims])."""
    const, factors = 1, []
    for d, size in enumerate(meta.shape):
        if lays is not None and lays[d] is not None:
            factors.append(lays[d])
        else:
            const *= size
    return const, factors


def _none(n: int) -> tuple:
    return (None,) * n


# ---------------------------------------------------------------------------------------------
# channel rules by family


def _unary(ctx) -> None:
    """Same shape, channel i of the output is channel i of the input."""
    ctx.set(ctx.lay(0, "input"))


def _elementwise(ctx) -> None:
    """Broadcasting op: every non-broadcast dim of every tensor operand is one channel set."""
    out = ctx.out
    ops = ctx.tensor_args()  # [(meta, lays)]
    result = []
    for d in range(out.ndim):
        entries = []
        for meta, lays in ops:
            j = d - (out.ndim - meta.ndim)
            if j >= 0 and meta.shape[j] == out.shape[d]:
                entries.append(lays[j])
        result.append(ctx.unify(*entries, why="elementwise op") if entries else None)
    ctx.set(tuple(result))


def _reduce_dims(ctx, dims, keepdim) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    out = []
    for d in range(x.ndim):
        if d in dims:
            ctx.mix(lays[d])
            if keepdim:
                out.append(None)
        else:
            out.append(lays[d])
    ctx.set(tuple(out))


def _reduce(ctx) -> None:
    _reduce_dims(ctx, ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False))


def _reduce_shape(ctx) -> TensorMeta:
    x = ctx.arg(0, "input")
    dims, keepdim = ctx.arg(1, "dim", None), ctx.arg(2, "keepdim", False)
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    shape = tuple(1 if d in dims else s for d, s in enumerate(x.shape) if keepdim or d not in dims)
    return TensorMeta(shape, x.dtype)


def _softmax(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        dim = ctx.module.dim if ctx.module is not None else -1
    ctx.mix(lays[shapes.norm_dim(dim, x.ndim)])
    ctx.set(lays)


def _spatial(ctx, n_spatial: int | None = None) -> None:
    """Pooling, padding, resizing: the last `n_spatial` dims change, channels pass through."""
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    out = ctx.out
    nsp = n_spatial if n_spatial is not None else max(out.ndim - 2, 1)
    keep = x.ndim - nsp
    for d in range(keep, x.ndim):
        ctx.sink(lays[d], why="pooling/resizing mixes this dim")
    ctx.set(tuple(lays[:keep]) + _none(nsp))


def _tensor_attr(ctx) -> None:
    """x.size(), x.shape, x.size(d): sizes that follow the channels they measure."""
    lays = ctx.lay(0)
    target = ctx.node.target
    if target == "size" or (target is getattr and ctx.node.args[1] == "shape"):
        d = ctx.arg(1, "dim", None) if target == "size" else None
        if d is None:
            return ctx.set(tuple(lays))
        return ctx.set(lays[shapes.norm_dim(d, len(lays))])
    if target in ("numel", "nelement", torch.numel):
        for e in lays:
            ctx.sink(e, why="element count used as a number")
    ctx.set(None)


def _creation(ctx) -> None:
    """torch.zeros(n, c), x.new_zeros(...): dims sized by values read from tensors follow them."""
    first = 1 if ctx.node.op == "call_method" else 0
    args = _shape_args(ctx, first)
    result = [None] * ctx.out.ndim
    for d, (_, raw) in enumerate(args[: len(result)]):
        if isinstance(raw, torch.fx.Node):
            e = ctx.entry(raw)
            result[d] = e if not isinstance(e, tuple) else None
    ctx.set(tuple(result))


def _barrier(why: str):
    def rule(ctx) -> None:
        ctx.barrier(why)

    return rule


# --- producers and consumers ------------------------------------------------------------------


def _conv_couple(ctx, x_lay, w_lay, b_lay, groups, c_in, c_out, n_spatial, transposed=False):
    cdim = len(x_lay) - n_spatial - 1
    x_c = x_lay[cdim]
    if groups == 1:
        ctx.unify(x_c, w_lay[1 if not transposed else 0], why="conv input")
        out = ctx.produce(w_lay[0 if not transposed else 1], c_out)
    elif groups == c_in and not transposed:  # depthwise (times a channel multiplier)
        mult = c_out // c_in
        x_c = ctx.unify(x_c, why="depthwise conv input")
        out = x_c.repeat(mult) if isinstance(x_c, Layout) else x_c if mult == 1 else None
        out = ctx.unify(w_lay[0], out, why="depthwise conv")
    elif not transposed:  # grouped: every group of the conv keeps the same positions
        why = f"grouped conv (groups={groups}) over channels that cannot shrink in equal blocks"
        ctx.unify(ctx.blocked(x_c, groups, why), w_lay[1], why="grouped conv input")
        out = ctx.produce(w_lay[0], c_out)
        ctx.blocked(out, groups, why)
    else:
        why = f"grouped transposed conv (groups={groups})"
        ctx.sink(x_c, why=why)
        out = ctx.produce(w_lay[1], c_out)
        ctx.sink(out, why=why)
    if b_lay is not None:
        out = ctx.unify(b_lay[0], out, why="conv bias")
    for d in range(cdim):
        ctx.unify(x_lay[d], why="conv batch dim")
    for d in range(cdim + 1, len(x_lay)):
        ctx.sink(x_lay[d], why="convolution mixes spatial dims")
    ctx.set(tuple(x_lay[:cdim]) + (out,) + _none(n_spatial))


def _conv_module_couple(ctx) -> None:
    m = ctx.module
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    _conv_couple(
        ctx,
        ctx.lay(0, "input"),
        ctx.param("weight"),
        ctx.param("bias"),
        m.groups,
        m.in_channels,
        m.out_channels,
        len(m.kernel_size),
        transposed,
    )


def _conv_fn_couple(ctx) -> None:
    w = ctx.arg(1, "weight")
    _conv_couple(
        ctx,
        ctx.lay(0, "input"),
        ctx.lay(1, "weight"),
        ctx.lay(2, "bias"),
        ctx.arg(6, "groups", 1),
        w.shape[1] * ctx.arg(6, "groups", 1),
        w.shape[0],
        w.ndim - 2,
    )


def _conv_macs(ctx, x_lay, out_lay, groups, c_in, kernel) -> list:
    out = ctx.out
    cdim = out.ndim - len(kernel) - 1
    const, factors = _numel_split(out, out_lay)  # N x C_out x spatial
    const *= math.prod(kernel)
    if groups == c_in and groups > 1:  # depthwise: one input channel per output channel
        return [(const, tuple(factors))]
    # c_in / groups input channels per output channel (exact: a grouped conv's channels
    # shrink in `groups` equal blocks)
    return [(const / groups, (*factors, x_lay[cdim] if x_lay[cdim] is not None else c_in))]


def _conv_module_flops(ctx) -> list:
    m = ctx.module
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        # every input pixel meets every kernel tap: N x C_in x spatial_in x K x C_out/groups
        x = ctx.arg(0, "input")
        const, factors = _numel_split(x, ctx.lay(0, "input"))
        cout = ctx.out_lay[x.ndim - len(m.kernel_size) - 1]
        cout_f = cout if cout is not None else m.out_channels
        per = math.prod(m.kernel_size) // m.groups
        return [(const * per, (*factors, cout_f))]
    return _conv_macs(ctx, ctx.lay(0, "input"), ctx.out_lay, m.groups, m.in_channels, m.kernel_size)


def _conv_fn_flops(ctx) -> list:
    w = ctx.arg(1, "weight")
    g = ctx.arg(6, "groups", 1)
    return _conv_macs(ctx, ctx.lay(0, "input"), ctx.out_lay, g, w.shape[1] * g, w.shape[2:])


def _expect(got: int, want: int, what: str) -> None:
    """A shape formula refuses an input the real op would refuse (the fallback then runs the
    op for real and reports PyTorch's own error)."""
    if got != want:
        raise ValueError(f"{what}: expected {want}, got {got}")


def _conv_shape(ctx) -> TensorMeta:
    m, x = ctx.module, _x(ctx)
    nsp = len(m.kernel_size)
    _expect(x.shape[-nsp - 1] if x.ndim > nsp else -1, m.in_channels, "conv input channels")
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    sp = shapes.conv_out(
        x.shape[-nsp:], m.kernel_size, m.stride, m.padding, m.dilation, transposed,
        getattr(m, "output_padding", 0),
    )  # fmt: skip
    return TensorMeta(x.shape[: -nsp - 1] + (m.out_channels,) + sp, x.dtype)


def _conv_fn_shape(ctx) -> TensorMeta:
    x, w = _x(ctx), ctx.arg(1, "weight")
    nsp = w.ndim - 2
    _expect(x.shape[-nsp - 1], w.shape[1] * ctx.arg(6, "groups", 1), "conv input channels")
    sp = shapes.conv_out(
        x.shape[-nsp:], w.shape[2:], ctx.arg(3, "stride", 1), ctx.arg(4, "padding", 0),
        ctx.arg(5, "dilation", 1),
    )  # fmt: skip
    return TensorMeta(x.shape[: -nsp - 1] + (w.shape[0],) + sp, x.dtype)


def _conv_resize(m, params, in_shapes) -> dict:
    w = params["weight"]
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return {"in_channels": w.shape[0], "out_channels": w.shape[1] * m.groups}
    if m.groups == 1:
        return {"in_channels": w.shape[1], "out_channels": w.shape[0]}
    if m.groups == m.in_channels:  # depthwise: groups follow the channels
        mult = m.out_channels // m.in_channels
        c = w.shape[0] // mult
        return {"in_channels": c, "out_channels": w.shape[0], "groups": c}
    return {"in_channels": w.shape[1] * m.groups, "out_channels": w.shape[0]}


def _linear_couple_lays(ctx, x_lay, w_lay, b_lay, out_features) -> None:
    ctx.unify(x_lay[-1], w_lay[1], why="linear input")
    out = ctx.produce(w_lay[0], out_features)
    if b_lay is not None:
        out = ctx.unify(b_lay[0], out, why="linear bias")
    ctx.set(tuple(x_lay[:-1]) + (out,))


def _linear_couple(ctx) -> None:
    m = ctx.module
    _linear_couple_lays(
        ctx, ctx.lay(0, "input"), ctx.param("weight"), ctx.param("bias"), m.out_features
    )


def _linear_fn_couple(ctx) -> None:
    w = ctx.arg(1, "weight")
    _linear_couple_lays(
        ctx, ctx.lay(0, "input"), ctx.lay(1, "weight"), ctx.lay(2, "bias"), w.shape[0]
    )


def _linear_flops(ctx) -> list:
    x, x_lay = ctx.arg(0, "input"), ctx.lay(0, "input")
    const, factors = _numel_split(ctx.out, ctx.out_lay)
    cin = x_lay[-1] if x_lay[-1] is not None else x.shape[-1]
    return [(const, (*factors, cin))]


def _linear_shape(ctx) -> TensorMeta:
    x = _x(ctx)
    _expect(x.shape[-1], ctx.module.in_features, "linear input features")
    return TensorMeta(x.shape[:-1] + (ctx.module.out_features,), x.dtype)


def _linear_fn_shape(ctx) -> TensorMeta:
    x = _x(ctx)
    _expect(x.shape[-1], ctx.arg(1, "weight").shape[-1], "linear input features")
    return TensorMeta(x.shape[:-1] + (ctx.arg(1, "weight").shape[0],), x.dtype)


def _linear_resize(m, params, in_shapes) -> dict:
    w = params["weight"]
    return {"in_features": w.shape[1], "out_features": w.shape[0]}


def _matmul_couple(ctx) -> None:
    a, b = ctx.arg(0, "input"), ctx.arg(1, "other")
    la, lb = ctx.lay(0, "input"), ctx.lay(1, "other")
    if a.ndim < 2 or b.ndim < 2:
        return ctx.barrier("matmul of a vector")
    ctx.unify(la[-1], lb[-2], why="matmul contraction")
    out = ctx.out
    batch = []
    for d in range(out.ndim - 2):
        entries = []
        for meta, lays in ((a, la), (b, lb)):
            j = d - (out.ndim - meta.ndim)
            if j >= 0 and meta.shape[j] == out.shape[d]:
                entries.append(lays[j])
        batch.append(ctx.unify(*entries, why="matmul batch") if entries else None)
    ctx.set((*batch, la[-2], lb[-1]))


def _matmul_flops(ctx) -> list:
    a, la = ctx.arg(0, "input"), ctx.lay(0, "input")
    const, factors = _numel_split(ctx.out, ctx.out_lay)
    k = la[-1] if la[-1] is not None else a.shape[-1]
    return [(const, (*factors, k))]


def _embedding_couple(ctx) -> None:
    out = ctx.produce(ctx.param("weight")[1], ctx.module.embedding_dim)
    ctx.set(_none(ctx.arg(0, "input").ndim) + (out,))


def _embedding_shape(ctx) -> TensorMeta:
    x = _x(ctx)
    return TensorMeta(x.shape + (ctx.module.embedding_dim,), ctx.module.weight.dtype)


# --- normalisation ------------------------------------------------------------------------------


def _channel_norm_couple(ctx, names=("weight", "bias", "running_mean", "running_var")) -> None:
    """Batch/instance norm: per-channel parameters and statistics on dim 1."""
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    c = 1 if x.ndim > 1 else 0
    entry = lays[c]
    for name in names:
        p = ctx.param(name)
        if p is not None:
            entry = ctx.unify(p[0], entry, why="norm parameter")
    ctx.set(tuple(lays[:c]) + (entry,) + tuple(lays[c + 1 :]))


def _norm_shape(ctx) -> TensorMeta:
    x, m = _x(ctx), ctx.module
    _expect(x.shape[1 if x.ndim > 1 else 0], m.num_features, "norm channels")
    return x


def _norm_resize(m, params, in_shapes) -> dict:
    c = 1 if len(in_shapes[0]) > 1 else 0
    return {"num_features": in_shapes[0][c]}


def _group_norm_lays(ctx, lays, groups: int, w_lay, b_lay) -> None:
    """Group norm: channels shrink alike in each of its groups; statistics mix each group."""
    ctx.blocked(
        lays[1], groups, f"GroupNorm({groups}) over channels that cannot shrink in equal blocks"
    )
    ctx.mix(lays[1])
    entry = lays[1]
    for p in (w_lay, b_lay):
        if p is not None:
            entry = ctx.unify(p[0], entry, why="group norm parameter")
    ctx.set((lays[0], entry, *lays[2:]))


def _group_norm_couple(ctx) -> None:
    m = ctx.module
    _group_norm_lays(ctx, ctx.lay(0, "input"), m.num_groups, ctx.param("weight"), ctx.param("bias"))


def _group_norm_fn_couple(ctx) -> None:
    groups = ctx.arg(1, "num_groups")
    _group_norm_lays(ctx, ctx.lay(0, "input"), groups, ctx.lay(2, "weight"), ctx.lay(3, "bias"))


def _group_norm_resize(m, params, in_shapes) -> dict:
    return {"num_channels": in_shapes[0][1]}


def _layer_norm_couple(ctx) -> None:
    m = ctx.module
    lays = list(ctx.lay(0, "input"))
    k = len(m.normalized_shape)
    for i in range(k):
        d = len(lays) - k + i
        ctx.mix(lays[d])
        for name in ("weight", "bias"):
            p = ctx.param(name)
            if p is not None:
                lays[d] = ctx.unify(p[i], lays[d], why="layer norm parameter")
    ctx.set(tuple(lays))


def _layer_norm_resize(m, params, in_shapes) -> dict:
    k = len(m.normalized_shape)
    return {"normalized_shape": tuple(in_shapes[0][-k:])}


def _layer_norm_fn_couple(ctx) -> None:
    lays = list(ctx.lay(0, "input"))
    shape = ctx.arg(1, "normalized_shape")
    k = len(shape)
    wl, bl = ctx.lay(2, "weight"), ctx.lay(3, "bias")
    for i in range(k):
        d = len(lays) - k + i
        ctx.mix(lays[d])
        for p in (wl, bl):
            if p is not None:
                lays[d] = ctx.unify(p[i], lays[d], why="layer norm parameter")
        ctx.rewrite(
            ("args", 1, i) if len(ctx.node.args) > 1 else ("kwargs", "normalized_shape", i), lays[d]
        )
    ctx.set(tuple(lays))


def _batch_norm_fn_couple(ctx) -> None:
    lays = ctx.lay(0, "input")
    entry = lays[1]
    for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        p = ctx.lay(i, name)
        if p is not None:
            entry = ctx.unify(p[0], entry, why="batch norm parameter")
    ctx.set((lays[0], entry, *lays[2:]))


def _prelu_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    if ctx.module.num_parameters == 1:
        return ctx.set(lays)
    c = 1 if x.ndim > 1 else 0
    entry = ctx.unify(ctx.param("weight")[0], lays[c], why="PReLU slope")
    ctx.set(tuple(lays[:c]) + (entry,) + tuple(lays[c + 1 :]))


def _prelu_resize(m, params, in_shapes) -> dict:
    return {"num_parameters": params["weight"].shape[0]}


# --- shape ops ----------------------------------------------------------------------------------


def _shape_args(ctx, first: int):
    """(path, raw arg) for each entry of a shape given as varargs or as one sequence."""
    raw = ctx.node.args[first:]
    if len(raw) == 1 and isinstance(raw[0], (tuple, list)):
        return [(("args", first, i), a) for i, a in enumerate(raw[0])]
    if not raw:
        key = "shape" if "shape" in ctx.node.kwargs else "size"
        seq = ctx.node.kwargs.get(key, ())
        return [(("kwargs", key, i), a) for i, a in enumerate(seq)]
    return [(("args", first + i), a) for i, a in enumerate(raw)]


def _reshape_couple(ctx, shape_from: int | None = None) -> tuple:
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    blocks = shapes.reshape_blocks(x.shape, out.shape)
    if blocks is None:
        ctx.barrier("reshape with a different number of elements")
        return (None,) * out.ndim
    result = [None] * out.ndim
    for src, dst in blocks:
        for d in src:  # a parameter dim that is reshaped keeps its width
            if not isinstance(ctx.resolve(lays[d]), Layout):
                ctx.sink(lays[d], why="reshape")
        laid = [d for d in src if isinstance(ctx.resolve(lays[d]), Layout)]
        if not laid:
            continue
        big_src = [d for d in src if x.shape[d] != 1]
        big_dst = [d for d in dst if out.shape[d] != 1]
        lead = big_dst[0] if big_dst else (dst[0] if dst else None)
        if (
            len(laid) == 1
            and len(big_dst) <= 1
            and lead is not None
            and (not big_src or laid[0] == big_src[0])
        ):  # merge (flatten) or keep: channel-major, so the channel dim must lead
            inner = math.prod(x.shape[d] for d in src if d > laid[0])
            entry = ctx.resolve(lays[laid[0]])
            result[lead] = entry.repeat(inner) if inner > 1 else entry
        elif len(laid) == 1 and len(big_src) == 1 and lead is not None:  # split: unflatten
            tail = math.prod(out.shape[d] for d in dst if d > lead)
            entry = ctx.resolve(lays[laid[0]])
            if all(s.inner % tail == 0 for s in entry.segments):
                result[lead] = ctx.unrepeat(entry, tail)
            else:
                ctx.sink(entry, why="reshape splits the channel dim")
        else:
            for d in laid:
                ctx.sink(lays[d], why="reshape mixes the channel dim with another dim")
    if shape_from is not None:
        _size_args(ctx, _shape_args(ctx, shape_from), result)
    ctx.set(tuple(result))
    return tuple(result)


def _size_args(ctx, args, result) -> None:
    """Sizes given to reshape/expand: a literal channel count is rewritten when the channels
    shrink; a size read from a tensor (`x.size(1)`) must follow that output dim's channels."""
    for d, (path, raw) in enumerate(args):
        if d >= len(result):
            break
        if isinstance(raw, int):
            if raw != -1 and result[d] is not None:
                ctx.rewrite(path, result[d])
        elif isinstance(raw, torch.fx.Node):
            result[d] = ctx.unify(ctx.entry(raw), result[d], why="reshape size")


def _view_couple(ctx) -> None:
    _reshape_couple(ctx, shape_from=1)


def _view_as_couple(ctx) -> None:
    """x.reshape_as(other): a reshape whose sizes are read from `other`, so they follow it."""
    result = _reshape_couple(ctx)
    other = ctx.lay(1, "other")
    ctx.set(tuple(ctx.unify(r, o, why="reshape_as") for r, o in zip(result, other)))


def _flatten_couple(ctx) -> None:
    _reshape_couple(ctx)


def _permute_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dims = ctx.node.args[1:] if ctx.node.op == "call_method" else ctx.arg(1, "dims")
    if ctx.node.op == "call_method" and len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    if ctx.node.op == "call_method" and not dims:
        dims = ctx.node.kwargs.get("dims")
    ctx.set(tuple(lays[shapes.norm_dim(d, x.ndim)] for d in dims))


def _transpose_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    if x.ndim < 2:
        return ctx.set(tuple(lays))
    a = shapes.norm_dim(ctx.arg(1, "dim0", 0), x.ndim)
    b = shapes.norm_dim(ctx.arg(2, "dim1", 1), x.ndim)
    lays[a], lays[b] = lays[b], lays[a]
    ctx.set(tuple(lays))


def _t_couple(ctx) -> None:
    lays = ctx.lay(0, "input")
    ctx.set(tuple(reversed(lays)) if len(lays) == 2 else lays)


def _unsqueeze_couple(ctx) -> None:
    out = ctx.out
    lays = list(ctx.lay(0, "input"))
    d = shapes.norm_dim(ctx.arg(1, "dim"), out.ndim)
    ctx.set(tuple(lays[:d] + [None] + lays[d:]))


def _squeeze_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    dims = ctx.arg(1, "dim", None)
    if dims is None:
        dims = tuple(range(x.ndim))
    dims = {shapes.norm_dim(d, x.ndim) for d in ((dims,) if isinstance(dims, int) else dims)}
    out = []
    for d in range(x.ndim):
        if d in dims and x.shape[d] == 1:
            ctx.mix(lays[d])
        else:
            out.append(lays[d])
    ctx.set(tuple(out))


def _expand_couple(ctx) -> None:
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    new = out.ndim - x.ndim
    result = [None] * new
    for d in range(x.ndim):
        if x.shape[d] == out.shape[d + new]:
            result.append(lays[d])
        else:
            ctx.sink(lays[d], why="expand of a channel dim")
            result.append(None)
    _size_args(ctx, _shape_args(ctx, 1), result)
    ctx.set(tuple(result))


def _expand_as_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    other, olays = ctx.arg(1, "other"), ctx.lay(1, "other")
    new = other.ndim - x.ndim
    result = list(olays[:new])
    for d in range(x.ndim):
        if x.shape[d] == other.shape[d + new]:
            result.append(ctx.unify(lays[d], olays[d + new], why="expand_as"))
        else:
            result.append(olays[d + new])
    ctx.set(tuple(result))


def _cat_couple(ctx) -> None:
    tensors = ctx.arg(0, "tensors")
    all_lays = ctx.lay(0, "tensors")
    out = ctx.out
    dim = shapes.norm_dim(ctx.arg(1, "dim", 0), out.ndim)
    result = []
    for d in range(out.ndim):
        if d == dim:
            result.append(ctx.concat([(t.shape[d], lay[d]) for t, lay in zip(tensors, all_lays)]))
        else:
            result.append(ctx.unify(*[lay[d] for lay in all_lays], why="concatenated tensors"))
    ctx.set(tuple(result))


def _stack_couple(ctx) -> None:
    all_lays = ctx.lay(0, "tensors")
    out = ctx.out
    dim = shapes.norm_dim(ctx.arg(1, "dim", 0), out.ndim)
    merged = [
        ctx.unify(*[lay[d] for lay in all_lays], why="stacked tensors") for d in range(out.ndim - 1)
    ]
    ctx.set(tuple(merged[:dim] + [None] + merged[dim:]))


def _split_couple(ctx) -> None:
    """chunk / split / unbind. Along a channel dim, a split on the boundaries of a concatenation
    is its inverse (sizes given as a list are rewritten; equal chunks must share their channels);
    any other split along channels freezes them (the split sizes would have to change)."""
    x, lays, out = ctx.arg(0, "input"), ctx.lay(0, "input"), ctx.out
    if ctx.node.target in ("unbind", torch.unbind):
        dim = shapes.norm_dim(ctx.arg(1, "dim", 0), x.ndim)
        ctx.sink(lays[dim], why="unbind along the channel dim")
        lays_out = tuple(lays[:dim]) + tuple(lays[dim + 1 :])
        return ctx.set(tuple(lays_out for _ in out))
    dim = shapes.norm_dim(ctx.arg(2, "dim", 0), x.ndim)
    entry = ctx.resolve(lays[dim])
    pieces = (
        _split_layout(entry, [o.shape[dim] for o in out]) if isinstance(entry, Layout) else None
    )
    sizes = ctx.node.args[1] if len(ctx.node.args) > 1 else None
    if pieces is not None and isinstance(sizes, (list, tuple)):
        for i, piece in enumerate(pieces):
            ctx.rewrite(("args", 1, i), piece)
    elif pieces is not None:  # equal chunks: every chunk keeps the same channels
        ctx.unify(*pieces, why="equal chunks")
    else:
        ctx.sink(lays[dim], why="split/chunk along the channel dim")
        pieces = [None] * len(out)
    ctx.set(tuple(tuple(p if d == dim else lays[d] for d in range(x.ndim)) for p in pieces))


def _split_layout(entry: Layout, sizes: list[int]) -> list[Layout] | None:
    """Cut a layout into consecutive pieces of the given sizes, on segment boundaries only."""
    pieces, segs = [], list(entry.segments)
    for size in sizes:
        take, total = [], 0
        while segs and total < size:
            total += segs[0].width
            take.append(segs.pop(0))
        if total != size or not take:
            return None
        pieces.append(Layout(tuple(take)))
    return pieces if not segs else None


def _getitem_couple(ctx) -> None:
    src = ctx.arg(0)
    if not isinstance(src, TensorMeta):
        return ctx.set(ctx.item_of(0, ctx.arg(1)))
    lays, idx = ctx.lay(0), ctx.node.args[1]
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, torch.fx.Node) or isinstance(i, (list, torch.Tensor)) for i in idx):
        return ctx.barrier("advanced indexing")
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out, d = [], 0
    for i in idx:
        if i is Ellipsis:
            for _ in range(src.ndim - n_real):
                out.append(lays[d])
                d += 1
        elif i is None:
            out.append(None)
        elif isinstance(i, slice):
            # a slice that keeps everything keeps doing so once the dim shrinks
            full = (
                (i.start is None or i.start == 0)
                and (i.stop is None or (isinstance(i.stop, int) and i.stop >= src.shape[d]))
                and (i.step is None or i.step == 1)
            )
            if not full:
                ctx.sink(lays[d], why="slicing along the channel dim")
                out.append(None)
            else:
                out.append(lays[d])
            d += 1
        else:  # an int: the dim disappears
            ctx.sink(lays[d], why="indexing along the channel dim")
            d += 1
    out.extend(lays[d:])
    ctx.set(tuple(out))


def _pad_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    pad = ctx.arg(1, "pad")
    for i in range(len(pad) // 2):
        if pad[2 * i] or pad[2 * i + 1]:
            d = x.ndim - 1 - i
            ctx.sink(lays[d], why="padding along the channel dim")
            lays[d] = None
    ctx.set(tuple(lays))


def _pad_module_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), list(ctx.lay(0, "input"))
    pad = ctx.module.padding
    for i in range(len(pad) // 2):
        if pad[2 * i] or pad[2 * i + 1]:
            ctx.sink(lays[x.ndim - 1 - i], why="padding along the channel dim")
            lays[x.ndim - 1 - i] = None
    ctx.set(tuple(lays))


# ---------------------------------------------------------------------------------------------
# shape formulas by family


def _pool_shape(n: int, kind: str):
    def shape(ctx) -> TensorMeta:
        x = _x(ctx)
        m = ctx.module
        if kind == "adaptive":
            size = m.output_size if m is not None else ctx.arg(1, "output_size")
            sp = shapes.adaptive_out(x.shape[-n:], size)
        elif m is not None:
            sp = shapes.pool_out(
                x.shape[-n:], m.kernel_size, m.stride, m.padding,
                getattr(m, "dilation", 1), m.ceil_mode,
            )  # fmt: skip
        else:
            dil = ctx.arg(4, "dilation", 1) if kind == "max" else 1
            ceil = ctx.arg(5 if kind == "max" else 4, "ceil_mode", False)
            sp = shapes.pool_out(
                x.shape[-n:], ctx.arg(1, "kernel_size"), ctx.arg(2, "stride", None),
                ctx.arg(3, "padding", 0), dil, ceil,
            )  # fmt: skip
        return TensorMeta(x.shape[:-n] + sp, x.dtype)

    return shape


def _interpolate_shape(ctx) -> TensorMeta:
    x = _x(ctx)
    m = ctx.module
    n = x.ndim - 2
    if m is not None:
        sp = shapes.interpolate_out(x.shape[-n:], m.size, m.scale_factor)
    else:
        sp = shapes.interpolate_out(
            x.shape[-n:], ctx.arg(1, "size", None), ctx.arg(2, "scale_factor", None)
        )
    return TensorMeta(x.shape[:-n] + sp, x.dtype)


def _flatten_module_shape(ctx) -> TensorMeta:
    x, m = _x(ctx), ctx.module
    s, e = shapes.norm_dim(m.start_dim, x.ndim), shapes.norm_dim(m.end_dim, x.ndim)
    return TensorMeta(x.shape[:s] + (math.prod(x.shape[s : e + 1]),) + x.shape[e + 1 :], x.dtype)


def _pad_module_shape(ctx) -> TensorMeta:
    x, pad = _x(ctx), ctx.module.padding
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[x.ndim - 1 - i] += pad[2 * i] + pad[2 * i + 1]
    return TensorMeta(tuple(shape), x.dtype)


def _meta(ctx):
    return ctx.run_meta()


# ---------------------------------------------------------------------------------------------
# the table


def _spec(family, shape, couple, flops=None, resize=None) -> OpSpec:
    return OpSpec(family, shape, couple, flops, resize)


_UNARY = _spec("elementwise unary", _same_shape, _unary)
_ELEMENTWISE = _spec("elementwise", _broadcast_shape, _elementwise)
_COMPARE = _spec("elementwise", _compare_shape, _elementwise)
_REDUCE = _spec("reduction", _reduce_shape, _reduce)
_SOFTMAX = _spec("softmax", _same_shape, _softmax)
_VIEW = _spec("reshape", _meta, _view_couple)
_FLATTEN = _spec("reshape", _meta, _flatten_couple)
_PERMUTE = _spec("permute", _meta, _permute_couple)
_TRANSPOSE = _spec("permute", _meta, _transpose_couple)
_ATTR = _spec("tensor attribute", _meta, _tensor_attr)

register(
    _spec("conv", _conv_shape, _conv_module_couple, _conv_module_flops, _conv_resize),
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
register(
    _spec("conv", _conv_fn_shape, _conv_fn_couple, _conv_fn_flops), F.conv1d, F.conv2d, F.conv3d
)
register(_spec("linear", _linear_shape, _linear_couple, _linear_flops, _linear_resize), nn.Linear)
register(_spec("linear", _linear_fn_shape, _linear_fn_couple, _linear_flops), F.linear)
register(
    _spec("matmul", _meta, _matmul_couple, _matmul_flops),
    torch.matmul, operator.matmul, torch.bmm, torch.mm, Method("matmul"), Method("bmm"), Method("mm"),
)  # fmt: skip
register(_spec("embedding", _embedding_shape, _embedding_couple), nn.Embedding)
register(
    _spec("batch norm", _norm_shape, _channel_norm_couple, resize=_norm_resize),
    nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm, nn.modules.instancenorm._InstanceNorm,
)  # fmt: skip
register(
    _spec("group norm", _same_shape, _group_norm_couple, resize=_group_norm_resize), nn.GroupNorm
)
register(_spec("group norm", _same_shape, _group_norm_fn_couple), F.group_norm)
register(
    _spec("layer norm", _same_shape, _layer_norm_couple, resize=_layer_norm_resize), nn.LayerNorm
)
register(_spec("layer norm", _same_shape, _layer_norm_fn_couple), F.layer_norm)
register(_spec("batch norm", _same_shape, _batch_norm_fn_couple), F.batch_norm, F.instance_norm)
register(_spec("prelu", _same_shape, _prelu_couple, resize=_prelu_resize), nn.PReLU)
register(
    _UNARY,
    # modules
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Hardshrink, nn.Softshrink,
    # functions
    torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid,
    torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.softplus, F.hardtanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.logsigmoid, torch.exp,
    torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.neg, operator.neg, torch.clamp, torch.clip,
    torch.erf, torch.square, torch.sin, torch.cos, F.relu_, torch.relu_, F.hardtanh_, F.elu_,
    F.leaky_relu_, torch.nan_to_num, torch.reciprocal, torch.sign, torch.floor, torch.round,
    torch.detach, torch.clone, torch.positive,
    # methods
    *(Method(n) for n in (
        "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "log", "sqrt", "rsqrt",
        "abs", "neg", "clamp", "clamp_", "clip", "contiguous", "clone", "detach", "float", "half",
        "double", "bfloat16", "to", "type", "type_as", "erf", "square", "sin", "cos",
        "reciprocal", "sign", "floor", "round", "requires_grad_", "cpu", "cuda", "hardtanh_",
    )),
)  # fmt: skip
register(
    _ELEMENTWISE,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.mod,
    torch.add, torch.sub, torch.mul, torch.div, torch.true_divide, torch.maximum, torch.minimum,
    torch.pow, torch.where, torch.addcmul, torch.lerp, torch.masked_fill, torch.subtract,
    torch.multiply,
    *(Method(n) for n in (
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "add_", "sub_", "mul_", "div_",
        "masked_fill", "masked_fill_", "lerp", "where", "addcmul", "truediv", "copy_",
    )),
)  # fmt: skip
register(
    _COMPARE,
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
    *(Method(n) for n in ("eq", "ne", "lt", "le", "gt", "ge")),
)  # fmt: skip
register(
    _REDUCE,
    torch.mean, torch.sum, torch.amax, torch.amin, torch.logsumexp, torch.prod,
    *(Method(n) for n in ("mean", "sum", "amax", "amin", "logsumexp", "prod")),
)  # fmt: skip
register(
    _SOFTMAX,
    nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    Method("softmax"), Method("log_softmax"),
)  # fmt: skip
register(
    _spec("normalize", _same_shape, lambda ctx: _softmax_at(ctx, ctx.arg(2, "dim", 1))), F.normalize
)
register(
    _spec("local response norm", _same_shape, lambda ctx: _softmax_at(ctx, 1)), nn.LocalResponseNorm
)


def _softmax_at(ctx, dim) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    ctx.mix(lays[shapes.norm_dim(dim, x.ndim)])
    ctx.set(lays)


for _n in (1, 2, 3):
    _mods = {
        "max": getattr(nn, f"MaxPool{_n}d"),
        "avg": getattr(nn, f"AvgPool{_n}d"),
        "adaptive": getattr(nn, f"AdaptiveAvgPool{_n}d"),
    }
    _fns = {
        "max": getattr(F, f"max_pool{_n}d"),
        "avg": getattr(F, f"avg_pool{_n}d"),
        "adaptive": getattr(F, f"adaptive_avg_pool{_n}d"),
    }
    for _kind in ("max", "avg", "adaptive"):
        _pool = _spec("pooling", _pool_shape(_n, _kind), lambda ctx, n=_n: _spatial(ctx, n))
        register(_pool, _mods[_kind], _fns[_kind])
    register(
        _spec("pooling", _meta, lambda ctx, n=_n: _spatial(ctx, n)),
        getattr(nn, f"AdaptiveMaxPool{_n}d"), getattr(F, f"adaptive_max_pool{_n}d"),
    )  # fmt: skip
register(
    _spec("resize", _interpolate_shape, _spatial),
    F.interpolate, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip
register(_spec("pad", _meta, _pad_couple), F.pad)
register(
    _spec("pad", _pad_module_shape, _pad_module_couple),
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
    nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
register(_spec("reshape", _flatten_module_shape, _flatten_couple), nn.Flatten)
register(
    _FLATTEN, torch.flatten, Method("flatten"), nn.Unflatten, torch.unflatten, Method("unflatten")
)
register(_VIEW, Method("view"), Method("reshape"), torch.reshape)
register(_spec("reshape", _meta, _view_as_couple), Method("view_as"), Method("reshape_as"))
register(_PERMUTE, torch.permute, Method("permute"))
register(
    _TRANSPOSE, torch.transpose, torch.swapaxes, Method("transpose"), Method("swapaxes"),
    torch.swapdims, Method("swapdims"),
)  # fmt: skip
register(_spec("permute", _meta, _t_couple), torch.t, Method("t"))
register(_spec("unsqueeze", _meta, _unsqueeze_couple), torch.unsqueeze, Method("unsqueeze"))
register(_spec("squeeze", _meta, _squeeze_couple), torch.squeeze, Method("squeeze"))
register(_spec("expand", _meta, _expand_couple), Method("expand"), torch.broadcast_to)
register(_spec("expand", _meta, _expand_as_couple), Method("expand_as"))
register(_spec("concat", _meta, _cat_couple), torch.cat, torch.concat, torch.concatenate)
register(_spec("stack", _meta, _stack_couple), torch.stack)
register(
    _spec("split", _meta, _split_couple),
    torch.chunk, torch.split, torch.unbind, Method("chunk"), Method("split"), Method("unbind"),
)  # fmt: skip
register(_spec("getitem", _meta, _getitem_couple), operator.getitem)
register(
    _ATTR,
    Method("size"), Method("dim"), Method("numel"), Method("ndimension"), Method("nelement"),
    getattr, torch.numel, Method("element_size"),
)  # fmt: skip
register(
    _spec("creation", _meta, _creation),
    torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn,
    *(Method(n) for n in ("new_zeros", "new_ones", "new_empty")),
)  # fmt: skip
register(
    _spec("channel shuffle", _meta, _barrier("channel shuffle permutes channels across groups")),
    nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle, F.pixel_shuffle, F.pixel_unshuffle,
)  # fmt: skip


def _mha_flops(ctx) -> list:
    """nn.MultiheadAttention: q/k/v and output projections plus the two attention matmuls."""
    m = ctx.module
    q, k = ctx.arg(0, "query"), ctx.arg(1, "key")
    batched = q.ndim == 3
    if m.batch_first and batched:
        n, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    else:
        lq, lk, n = q.shape[0], k.shape[0], q.shape[1] if batched else 1
    e = m.embed_dim
    proj = lq * e * e + lk * m.kdim * e + lk * m.vdim * e + lq * e * e
    return [(n * (proj + 2 * lq * lk * e), ())]


def _mha_shape(ctx):
    """(output, attention weights or None), as nn.MultiheadAttention returns them."""
    m = ctx.module
    q, k = ctx.arg(0, "query"), ctx.arg(1, "key")
    _expect(q.shape[-1], m.embed_dim, "attention embedding dim")
    need = ctx.arg(4, "need_weights", True)
    average = ctx.arg(6, "average_attn_weights", True)
    if q.ndim == 2:
        lq, lk, batch = q.shape[0], k.shape[0], ()
    elif m.batch_first:
        lq, lk, batch = q.shape[1], k.shape[1], (q.shape[0],)
    else:
        lq, lk, batch = q.shape[0], k.shape[0], (q.shape[1],)
    heads = () if average else (m.num_heads,)
    weights = TensorMeta(batch + heads + (lq, lk), q.dtype) if need else None
    return (TensorMeta(q.shape, q.dtype), weights)


register(
    _spec(
        "attention",
        _mha_shape,
        _barrier("multi-head attention needs head-structured widths"),
        _mha_flops,
    ),
    nn.MultiheadAttention,
)


def _sdpa_couple(ctx) -> None:
    """scaled_dot_product_attention(q, k, v): q and k contract on their last dim; the output
    takes v's last dim and the query positions; batch and head dims are shared."""
    q, lq, lk, lv = ctx.arg(0, "query"), ctx.lay(0, "query"), ctx.lay(1, "key"), ctx.lay(2, "value")
    ctx.unify(lq[-1], lk[-1], why="attention scores")
    ctx.sink(lk[-2], why="attention over key positions")
    ctx.sink(lv[-2], why="attention over key positions")
    batch = [ctx.unify(lq[d], lk[d], lv[d], why="attention batch") for d in range(q.ndim - 2)]
    ctx.set((*batch, lq[-2], lv[-1]))


def _sdpa_flops(ctx) -> list:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    lq, lv = ctx.lay(0, "query"), ctx.lay(2, "value")
    const, factors = _numel_split(TensorMeta(q.shape[:-1]), lq[:-1])  # batch x heads x L
    s = k.shape[-2]
    e = lq[-1] if lq[-1] is not None else q.shape[-1]
    ev = lv[-1] if lv[-1] is not None else v.shape[-1]
    return [(const * s, (*factors, e)), (const * s, (*factors, ev))]


register(_spec("attention", _meta, _sdpa_couple, _sdpa_flops), F.scaled_dot_product_attention)


def _einsum_parse(ctx):
    """(operand letter strings, output letters, operand metas, operand layouts) or None."""
    eq = ctx.arg(0, "equation").replace(" ", "")
    raw = ctx.node.args[1:]
    if len(raw) == 1 and isinstance(raw[0], (list, tuple)):
        metas, lays = ctx.arg(1), ctx.lay(1)
    else:
        metas = [ctx.arg(i) for i in range(1, len(raw) + 1)]
        lays = [ctx.lay(i) for i in range(1, len(raw) + 1)]
    if "." in eq:
        return None
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(terms) != len(metas) or any(len(set(t)) != len(t) for t in terms):
        return None
    return terms, out, metas, lays


def _einsum_couple(ctx) -> None:
    """einsum: dims that share a letter share channels; the output takes its letters' dims."""
    parsed = _einsum_parse(ctx)
    if parsed is None:
        return ctx.barrier("einsum with an ellipsis or a repeated index")
    terms, out, metas, lays = parsed
    entry = {}
    for letter in dict.fromkeys("".join(terms)):
        found = [
            lay[t.index(letter)]
            for t, m, lay in zip(terms, metas, lays)
            if letter in t and m.shape[t.index(letter)] != 1
        ]
        entry[letter] = ctx.unify(*found, why="einsum index") if found else None
    ctx.set(tuple(entry[c] for c in out))


def _einsum_flops(ctx) -> list:
    parsed = _einsum_parse(ctx)
    if parsed is None or len(parsed[0]) != 2:
        return []
    terms, _, metas, lays = parsed
    const, factors, seen = 1, [], set()
    for t, m, lay in zip(terms, metas, lays):
        for d, letter in enumerate(t):
            if letter in seen:
                continue
            seen.add(letter)
            if lay[d] is not None:
                factors.append(lay[d])
            else:
                const *= m.shape[d]
    return [(const, tuple(factors))]


register(_spec("einsum", _meta, _einsum_couple, _einsum_flops), torch.einsum)


def _register_optional() -> None:
    """Ops of optional libraries, registered when the library is installed."""
    try:
        from torchvision.ops import stochastic_depth

        register(_UNARY, stochastic_depth)
    except ImportError:
        pass
    try:
        from timm.layers import norm_act, pool2d_same
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:
        return
    # batch norm + activation in one module: the batch-norm channel rule (timm's ConvNormAct)
    norm_acts = [
        getattr(norm_act, n, None)
        for n in ("BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNormAct2d")
    ]
    register(
        _spec("batch norm", _same_shape, _channel_norm_couple, resize=_norm_resize),
        *(m for m in norm_acts if m is not None),
    )
    # "same" padding computed at run time: shapes come from running the module
    register(_spec("conv", None, _conv_module_couple, _conv_module_flops, _conv_resize), Conv2dSame)
    register(
        _spec("pooling", None, lambda ctx: _spatial(ctx, 2)),
        pool2d_same.AvgPool2dSame, pool2d_same.MaxPool2dSame,
    )  # fmt: skip


_register_optional()
