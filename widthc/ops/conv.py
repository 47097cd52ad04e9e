"""Rules of convolutions: plain, depthwise, grouped (equal blocks, or whole groups that follow
attention heads), transposed; modules and `F.conv*d`."""

from __future__ import annotations

import math

from torch import nn

from widthc import shapes
from widthc.ir import Layout, TensorMeta
from widthc.ops.common import expect, first_input, nones, numel_split


def conv_couple(
    ctx, x_lay, w_lay, b_lay, groups, c_in, c_out, n_spatial, transposed=False, groups_at=None
):
    """`groups_at`: where a functional conv holds its literal `groups` (a depthwise conv's groups
    follow its channels, so the literal is rewritten with them)."""
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
        if groups_at is not None:
            ctx.rewrite(groups_at, x_c)
    elif not transposed and ctx.second_reading():  # whole groups kept or removed (heads)
        out = whole_groups(ctx, x_c, w_lay, groups, c_in, c_out, groups_at)
    elif not transposed:  # grouped: every group of the conv keeps the same positions
        why = f"grouped conv (groups={groups}) over channels that cannot shrink in equal blocks"
        ctx.unify(ctx.blocked(x_c, groups, why), w_lay[1], why="grouped conv input")
        out = ctx.produce(w_lay[0], c_out)
        ctx.blocked(out, groups, why)
        ctx.offer_second(x_c)
        ctx.offer_second(out)
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
    ctx.set(tuple(x_lay[:cdim]) + (out,) + nones(n_spatial))


def whole_groups(ctx, x_c, w_lay, groups, c_in, c_out, groups_at):
    """A grouped conv whose groups shrink with the channels, each group's channels staying (one
    group per q, k or v of an attention head): the input in units of c_in / groups channels,
    the output in units of c_out / groups, unit i of one is unit i of the other."""
    out = ctx.produce(w_lay[0], c_out)
    units_in, units_out = ctx.coarsen(x_c, c_in // groups), ctx.coarsen(out, c_out // groups)
    if units_in is None or units_out is None:
        why = f"grouped conv (groups={groups}) over channels that cannot shrink in whole groups"
        ctx.sink(x_c, why=why)
        ctx.sink(out, why=why)
    else:
        ctx.unify(units_in, units_out, why="grouped conv: whole groups")
        if groups_at is not None:
            ctx.rewrite(groups_at, units_in)
    ctx.sink(w_lay[1], why="channels of one group of a grouped conv")
    return out


def conv_module_couple(ctx) -> None:
    m = ctx.module
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    conv_couple(
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


def conv_fn_couple(ctx) -> None:
    w = ctx.arg(1, "weight")
    args, kwargs = ctx.node.args, ctx.node.kwargs
    groups_at = (
        ("args", 6) if len(args) > 6 else ("kwargs", "groups") if "groups" in kwargs else None
    )
    if groups_at is not None and not isinstance(
        args[6] if len(args) > 6 else kwargs["groups"], int
    ):
        groups_at = None  # read from a tensor's size at run time: it follows by itself
    conv_couple(
        ctx,
        ctx.lay(0, "input"),
        ctx.lay(1, "weight"),
        ctx.lay(2, "bias"),
        ctx.arg(6, "groups", 1),
        w.shape[1] * ctx.arg(6, "groups", 1),
        w.shape[0],
        w.ndim - 2,
        groups_at=groups_at,
    )


def conv_macs(ctx, x_lay, out_lay, groups, c_in, kernel) -> list:
    out = ctx.out
    cdim = out.ndim - len(kernel) - 1
    const, factors = numel_split(out, out_lay)  # N x C_out x spatial
    const *= math.prod(kernel)
    if groups == c_in and groups > 1:  # depthwise: one input channel per output channel
        return [(const, tuple(factors))]
    per, x_c = c_in // groups, x_lay[cdim]
    if groups > 1 and isinstance(x_c, Layout) and all(s.inner % per == 0 for s in x_c.segments):
        # whole groups kept or removed (`whole_groups`; equal blocks never repeat a channel):
        # c_in / groups input channels per output channel at every width
        return [(const * per, tuple(factors))]
    # c_in / groups input channels per output channel (exact: a grouped conv's channels
    # shrink in `groups` equal blocks)
    return [(const / groups, (*factors, x_lay[cdim] if x_lay[cdim] is not None else c_in))]


def conv_module_flops(ctx) -> list:
    m = ctx.module
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        # every input pixel meets every kernel tap: N x C_in x spatial_in x K x C_out/groups
        x = ctx.arg(0, "input")
        const, factors = numel_split(x, ctx.lay(0, "input"))
        cout = ctx.out_lay[x.ndim - len(m.kernel_size) - 1]
        cout_f = cout if cout is not None else m.out_channels
        per = math.prod(m.kernel_size) // m.groups
        return [(const * per, (*factors, cout_f))]
    return conv_macs(ctx, ctx.lay(0, "input"), ctx.out_lay, m.groups, m.in_channels, m.kernel_size)


def conv_fn_flops(ctx) -> list:
    w = ctx.arg(1, "weight")
    g = ctx.arg(6, "groups", 1)
    return conv_macs(ctx, ctx.lay(0, "input"), ctx.out_lay, g, w.shape[1] * g, w.shape[2:])


def conv_shape(ctx) -> TensorMeta:
    m, x = ctx.module, first_input(ctx)
    nsp = len(m.kernel_size)
    expect(x.shape[-nsp - 1] if x.ndim > nsp else -1, m.in_channels, "conv input channels")
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    sp = shapes.conv_out(
        x.shape[-nsp:], m.kernel_size, m.stride, m.padding, m.dilation, transposed,
        getattr(m, "output_padding", 0),
    )  # fmt: skip
    return TensorMeta(x.shape[: -nsp - 1] + (m.out_channels,) + sp, x.dtype)


def conv_fn_shape(ctx) -> TensorMeta:
    x, w = first_input(ctx), ctx.arg(1, "weight")
    nsp = w.ndim - 2
    expect(x.shape[-nsp - 1], w.shape[1] * ctx.arg(6, "groups", 1), "conv input channels")
    sp = shapes.conv_out(
        x.shape[-nsp:], w.shape[2:], ctx.arg(3, "stride", 1), ctx.arg(4, "padding", 0),
        ctx.arg(5, "dilation", 1),
    )  # fmt: skip
    return TensorMeta(x.shape[: -nsp - 1] + (w.shape[0],) + sp, x.dtype)


def conv_resize(m, params, in_shapes) -> dict:
    w = params["weight"]
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return {"in_channels": w.shape[0], "out_channels": w.shape[1] * m.groups}
    if m.groups == 1:
        return {"in_channels": w.shape[1], "out_channels": w.shape[0]}
    if m.groups == m.in_channels:  # depthwise: groups follow the channels
        mult = m.out_channels // m.in_channels
        c = w.shape[0] // mult
        return {"in_channels": c, "out_channels": w.shape[0], "groups": c}
    # equal blocks keep the groups; whole groups kept or removed keep each group's channels
    c_in = in_shapes[0][-len(m.kernel_size) - 1] if in_shapes and in_shapes[0] else None
    groups = c_in // w.shape[1] if c_in else m.groups
    return {"in_channels": w.shape[1] * groups, "out_channels": w.shape[0], "groups": groups}
