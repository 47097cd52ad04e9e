"""Rules of layers with weights: linear, matmul, embeddings, norms (convolutions:
widthc/ops/conv.py)."""

from __future__ import annotations

from widthc.ir import TensorMeta
from widthc.ops.common import expect, first_input, nones, numel_split


def linear_couple_lays(ctx, x_lay, w_lay, b_lay, out_features) -> None:
    ctx.unify(x_lay[-1], w_lay[1], why="linear input")
    out = ctx.produce(w_lay[0], out_features)
    if b_lay is not None:
        out = ctx.unify(b_lay[0], out, why="linear bias")
    ctx.set(tuple(x_lay[:-1]) + (out,))


def linear_couple(ctx) -> None:
    m = ctx.module
    linear_couple_lays(
        ctx, ctx.lay(0, "input"), ctx.param("weight"), ctx.param("bias"), m.out_features
    )


def linear_fn_couple(ctx) -> None:
    w = ctx.arg(1, "weight")
    linear_couple_lays(
        ctx, ctx.lay(0, "input"), ctx.lay(1, "weight"), ctx.lay(2, "bias"), w.shape[0]
    )


def linear_flops(ctx) -> list:
    x, x_lay = ctx.arg(0, "input"), ctx.lay(0, "input")
    const, factors = numel_split(ctx.out, ctx.out_lay)
    cin = x_lay[-1] if x_lay[-1] is not None else x.shape[-1]
    return [(const, (*factors, cin))]


def linear_shape(ctx) -> TensorMeta:
    x = first_input(ctx)
    expect(x.shape[-1], ctx.module.in_features, "linear input features")
    return TensorMeta(x.shape[:-1] + (ctx.module.out_features,), x.dtype)


def linear_fn_shape(ctx) -> TensorMeta:
    x = first_input(ctx)
    expect(x.shape[-1], ctx.arg(1, "weight").shape[-1], "linear input features")
    return TensorMeta(x.shape[:-1] + (ctx.arg(1, "weight").shape[0],), x.dtype)


def linear_resize(m, params, in_shapes) -> dict:
    w = params["weight"]
    return {"in_features": w.shape[1], "out_features": w.shape[0]}


def matmul_couple(ctx) -> None:
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


def matmul_flops(ctx) -> list:
    a, la = ctx.arg(0, "input"), ctx.lay(0, "input")
    const, factors = numel_split(ctx.out, ctx.out_lay)
    k = la[-1] if la[-1] is not None else a.shape[-1]
    return [(const, (*factors, k))]


def addmm_couple(ctx) -> None:
    """addmm(bias, x, w) = bias + x @ w (GPT-2's Conv1D, an (in, out) weight): x's columns are
    w's rows; w's columns are new channels where w is a weight (this op produces them); the
    bias broadcasts over the result."""
    bias, lb, lx, lw = (
        ctx.arg(0, "input"),
        ctx.lay(0, "input"),
        ctx.lay(1, "mat1"),
        ctx.lay(2, "mat2"),
    )
    ctx.unify(lx[-1], lw[0], why="matmul contraction")
    out = [lx[0], ctx.produce(lw[1], ctx.arg(2, "mat2").shape[1])]
    for d in range(bias.ndim):  # broadcast: aligned on the right, equal sizes only
        j = d + 2 - bias.ndim
        if bias.shape[d] == ctx.out.shape[j]:
            out[j] = ctx.unify(out[j], lb[d], why="addmm bias")
    ctx.set(tuple(out))


def addmm_flops(ctx) -> list:
    x, lx = ctx.arg(1, "mat1"), ctx.lay(1, "mat1")
    const, factors = numel_split(ctx.out, ctx.out_lay)
    return [(const, (*factors, lx[-1] if lx[-1] is not None else x.shape[-1]))]


def embedding_couple(ctx) -> None:
    weight = ctx.param("weight")
    ctx.sink(weight[0], why="embedding rows are addressed by the input's indices")
    out = ctx.produce(weight[1], ctx.module.embedding_dim)
    ctx.set(nones(ctx.arg(0, "input").ndim) + (out,))


def embedding_resize(m, params, in_shapes) -> dict:
    w = params["weight"]
    return {"num_embeddings": w.shape[0], "embedding_dim": w.shape[1]}


def embedding_shape(ctx) -> TensorMeta:
    x = first_input(ctx)
    return TensorMeta(x.shape + (ctx.module.embedding_dim,), ctx.module.weight.dtype)


def channel_norm_couple(ctx, names=("weight", "bias", "running_mean", "running_var")) -> None:
    """Batch/instance norm: per-channel parameters and statistics on dim 1."""
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    c = 1 if x.ndim > 1 else 0
    entry = lays[c]
    for name in names:
        p = ctx.param(name)
        if p is not None:
            entry = ctx.unify(p[0], entry, why="norm parameter")
    ctx.set(tuple(lays[:c]) + (entry,) + tuple(lays[c + 1 :]))


def norm_shape(ctx) -> TensorMeta:
    x, m = first_input(ctx), ctx.module
    expect(x.shape[1 if x.ndim > 1 else 0], m.num_features, "norm channels")
    return x


def norm_resize(m, params, in_shapes) -> dict:
    c = 1 if len(in_shapes[0]) > 1 else 0
    return {"num_features": in_shapes[0][c]}


def group_norm_lays(ctx, lays, groups: int, w_lay, b_lay) -> None:
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


def group_norm_couple(ctx) -> None:
    m = ctx.module
    group_norm_lays(ctx, ctx.lay(0, "input"), m.num_groups, ctx.param("weight"), ctx.param("bias"))


def group_norm_fn_couple(ctx) -> None:
    groups = ctx.arg(1, "num_groups")
    group_norm_lays(ctx, ctx.lay(0, "input"), groups, ctx.lay(2, "weight"), ctx.lay(3, "bias"))


def group_norm_resize(m, params, in_shapes) -> dict:
    return {"num_channels": in_shapes[0][1]}


def layer_norm_couple(ctx) -> None:
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


def layer_norm_resize(m, params, in_shapes) -> dict:
    k = len(m.normalized_shape)
    return {"normalized_shape": tuple(in_shapes[0][-k:])}


def layer_norm_fn_couple(ctx) -> None:
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


def batch_norm_fn_couple(ctx) -> None:
    """F.batch_norm: per-channel parameters on dim 1. With batch statistics (training=True, or
    no running statistics) every other dim is reduced: channels there are mixed (a weight
    standardised over its input channels: each filter's mean and variance)."""
    lays = ctx.lay(0, "input")
    if ctx.arg(5, "training", False) is True or ctx.arg(1, "running_mean", None) is None:
        for d in (0, *range(2, len(lays))):
            ctx.mix(lays[d])
    entry = lays[1]
    for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        p = ctx.lay(i, name)
        if p is not None:
            entry = ctx.unify(p[0], entry, why="batch norm parameter")
    ctx.set((lays[0], entry, *lays[2:]))


def prelu_couple(ctx) -> None:
    x, lays = ctx.arg(0, "input"), ctx.lay(0, "input")
    if ctx.module.num_parameters == 1:
        return ctx.set(lays)
    c = 1 if x.ndim > 1 else 0
    entry = ctx.unify(ctx.param("weight")[0], lays[c], why="PReLU slope")
    ctx.set(tuple(lays[:c]) + (entry,) + tuple(lays[c + 1 :]))


def prelu_resize(m, params, in_shapes) -> dict:
    return {"num_parameters": params["weight"].shape[0]}
