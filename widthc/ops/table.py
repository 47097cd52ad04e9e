"""The table: every op family registered under the keys fx uses for it (module classes,
functions, tensor methods). Adding an op is adding one line here (a pointwise op: in
widthc/ops/pointwise.py, by what it does to zero channels; an op of torchvision or timm: in
widthc/ops/optional.py)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from widthc.ops.attention import (
    einsum_couple,
    einsum_flops,
    mha_couple,
    mha_flops,
    mha_resize,
    mha_shape,
    mha_zeros,
    sdpa_couple,
    sdpa_flops,
)
from widthc.ops.common import (
    barrier,
    run_on_meta,
    same_shape,
    spec,
)
from widthc.ops.conv import (
    conv_fn_couple,
    conv_fn_flops,
    conv_fn_shape,
    conv_module_couple,
    conv_module_flops,
    conv_resize,
    conv_shape,
)
from widthc.ops.elementwise import (
    creation,
    extreme_rule,
    interpolate_shape,
    norm_rule,
    pad_couple,
    pad_module_couple,
    pad_module_shape,
    pair_reduction,
    pool_shape,
    position_rule,
    ranked_rule,
    reduce_rule,
    reduce_shape,
    softmax,
    softmax_at,
    spatial,
    spread_rule,
    tensor_attr,
)
from widthc.ops.indexing import getitem_couple, setitem_couple
from widthc.ops.layers import (
    addmm_couple,
    addmm_flops,
    batch_norm_fn_couple,
    channel_norm_couple,
    embedding_couple,
    embedding_resize,
    embedding_shape,
    group_norm_couple,
    group_norm_fn_couple,
    group_norm_resize,
    layer_norm_couple,
    layer_norm_fn_couple,
    layer_norm_resize,
    linear_couple,
    linear_flops,
    linear_fn_couple,
    linear_fn_shape,
    linear_resize,
    linear_shape,
    matmul_couple,
    matmul_flops,
    norm_resize,
    norm_shape,
    prelu_couple,
    prelu_resize,
)
from widthc.ops.optional import register_optional
from widthc.ops.pointwise import register_pointwise
from widthc.ops.recurrent import recurrent_couple, recurrent_flops
from widthc.ops.registry import Method, register
from widthc.ops.shape_ops import (
    cat_couple,
    expand_as_couple,
    expand_couple,
    flatten_couple,
    flatten_module_shape,
    permute_couple,
    split_couple,
    squeeze_couple,
    stack_couple,
    t_couple,
    transpose_couple,
    unflatten_couple,
    unflatten_module_couple,
    unflatten_resize,
    unsqueeze_couple,
    view_as_couple,
    view_couple,
)
from widthc.ops.windows import (
    col2im_couple,
    im2col_couple,
    repeat_couple,
    repeat_interleave_couple,
    roll_couple,
    sliding_couple,
)
from widthc.ops.zeros import (
    KEEPS,
    SHIFTS,
    SINGULAR,
    additive,
    created,
    padded,
)

# op families registered under several keys
_REDUCE = spec("reduction", reduce_shape, reduce_rule, zeros=KEEPS)  # over channels: mixing
_SOFTMAX = spec("softmax", same_shape, softmax, zeros=SHIFTS)  # softmax of zeros is 1/n
_VIEW = spec("reshape", run_on_meta, view_couple, zeros=KEEPS)
_FLATTEN = spec("reshape", run_on_meta, flatten_couple, zeros=KEEPS)
_PERMUTE = spec("permute", run_on_meta, permute_couple, zeros=KEEPS)
_TRANSPOSE = spec("permute", run_on_meta, transpose_couple, zeros=KEEPS)
_ATTR = spec("tensor attribute", run_on_meta, tensor_attr, zeros=KEEPS)

# layers with weights (masked execution zeroes their removed rows: zero channels stay zero)
register(
    spec("conv", conv_shape, conv_module_couple, conv_module_flops, conv_resize, KEEPS),
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
register(
    spec("conv", conv_fn_shape, conv_fn_couple, conv_fn_flops, zeros=KEEPS),
    F.conv1d, F.conv2d, F.conv3d,
)  # fmt: skip
register(spec("linear", linear_shape, linear_couple, linear_flops, linear_resize, KEEPS), nn.Linear)
register(spec("linear", linear_fn_shape, linear_fn_couple, linear_flops, zeros=KEEPS), F.linear)
register(
    spec("matmul", run_on_meta, matmul_couple, matmul_flops, zeros=KEEPS),
    torch.matmul, operator.matmul, torch.bmm, torch.mm, Method("matmul"), Method("bmm"), Method("mm"),
)  # fmt: skip
register(  # bias + x @ w: zero where the bias is
    spec("matmul", run_on_meta, addmm_couple, addmm_flops, zeros=additive((0, "input"))),
    torch.addmm, Method("addmm"),
)  # fmt: skip
register(
    spec("embedding", embedding_shape, embedding_couple, resize=embedding_resize, zeros=KEEPS),
    nn.Embedding,
)
# norms: per-channel statistics of a zero channel are 0 (its parameters and running statistics
# are masked too); statistics over the channels are mixing (ChannelGroup.mixing)
# a batch norm's scale and shift may be private to each width (--private-bn: switchable batch
# norm, slimmable networks): its statistics differ per width, and so may its affine
register(
    spec("batch norm", norm_shape, channel_norm_couple, resize=norm_resize, zeros=KEEPS,
         scale="weight", private=("weight", "bias")),
    nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm,
)  # fmt: skip
register(
    spec("batch norm", norm_shape, channel_norm_couple, resize=norm_resize, zeros=KEEPS,
         scale="weight"),
    nn.modules.instancenorm._InstanceNorm,
)  # fmt: skip
_LAYER_NORM = spec(
    "layer norm", same_shape, layer_norm_couple, resize=layer_norm_resize, zeros=SHIFTS,
    scale="weight",
)  # a zero row normalises to its bias  # fmt: skip
register(
    spec("group norm", same_shape, group_norm_couple, resize=group_norm_resize, zeros=SHIFTS,
         scale="weight"),
    nn.GroupNorm,
)  # fmt: skip
register(spec("group norm", same_shape, group_norm_fn_couple, zeros=SHIFTS), F.group_norm)
register(_LAYER_NORM, nn.LayerNorm)
register(
    spec("layer norm", same_shape, layer_norm_couple, resize=layer_norm_resize, zeros=KEEPS,
         scale="weight"),
    nn.RMSNorm,
)  # x / rms(x): a zero row stays zero  # fmt: skip
register(spec("layer norm", same_shape, layer_norm_fn_couple, zeros=SHIFTS), F.layer_norm)
register(spec("layer norm", same_shape, layer_norm_fn_couple, zeros=KEEPS), F.rms_norm)
register(spec("batch norm", same_shape, batch_norm_fn_couple, zeros=KEEPS), F.batch_norm)
register(spec("batch norm", same_shape, batch_norm_fn_couple, zeros=KEEPS), F.instance_norm)
register(spec("prelu", same_shape, prelu_couple, resize=prelu_resize, zeros=KEEPS), nn.PReLU)
register_pointwise()
register(
    _REDUCE,
    torch.mean, torch.sum, torch.amax, torch.amin, torch.prod,
    *(Method(n) for n in ("mean", "sum", "amax", "amin", "prod")),
)  # fmt: skip
register(
    spec("reduction", reduce_shape, reduce_rule, zeros=SHIFTS),  # log(n) over zeros
    torch.logsumexp, Method("logsumexp"),
)  # fmt: skip
register(  # a position along the reduced dims: ChannelGroup.ordered
    spec("reduction", reduce_shape, position_rule, zeros=KEEPS),
    torch.argmax, torch.argmin, Method("argmax"), Method("argmin"),
)  # fmt: skip
# (values, indices) pairs: reductions, and rankings along one dim
register(
    spec("reduction", run_on_meta, extreme_rule, zeros=KEEPS),
    torch.max, torch.min, torch.median, *(Method(n) for n in ("max", "min", "median")),
)  # fmt: skip
register(spec("reduction", run_on_meta, pair_reduction(1), zeros=KEEPS), torch.mode, Method("mode"))
register(
    spec("reduction", run_on_meta, pair_reduction(2), zeros=KEEPS),
    torch.kthvalue, Method("kthvalue"),
)  # fmt: skip
register(
    spec("reduction", run_on_meta, norm_rule, zeros=KEEPS),  # torch's backward is 0 at norm 0
    torch.norm, Method("norm"), torch.linalg.vector_norm,
)  # fmt: skip
register(spec("reduction", run_on_meta, spread_rule, zeros=KEEPS), torch.var, Method("var"))
register(  # the gradient of sqrt at a zero spread is not finite
    spec("reduction", run_on_meta, spread_rule, zeros=SINGULAR), torch.std, Method("std")
)
register(spec("sort", run_on_meta, ranked_rule(1), zeros=KEEPS), torch.sort, Method("sort"))
register(spec("sort", run_on_meta, ranked_rule(2), zeros=KEEPS), torch.topk, Method("topk"))
register(
    _SOFTMAX,
    nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    Method("softmax"), Method("log_softmax"),
)  # fmt: skip
register(
    spec("normalize", same_shape, lambda ctx: softmax_at(ctx, ctx.arg(2, "dim", 1)), zeros=KEEPS),
    F.normalize,
)  # x / max(|x|, eps)
register(
    spec("local response norm", same_shape, lambda ctx: softmax_at(ctx, 1), zeros=KEEPS),
    nn.LocalResponseNorm,
)
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
        _pool = spec(
            "pooling", pool_shape(_n, _kind), lambda ctx, n=_n: spatial(ctx, n), zeros=KEEPS
        )
        register(_pool, _mods[_kind], _fns[_kind])
    register(
        spec("pooling", run_on_meta, lambda ctx, n=_n: spatial(ctx, n), zeros=KEEPS),
        getattr(nn, f"AdaptiveMaxPool{_n}d"), getattr(F, f"adaptive_max_pool{_n}d"),
    )  # fmt: skip
register(
    spec("resize", interpolate_shape, spatial, zeros=KEEPS),
    F.interpolate, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip
register(spec("pad", run_on_meta, pad_couple, zeros=padded), F.pad)
register(
    spec("pad", pad_module_shape, pad_module_couple, zeros=padded),
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
    nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
# values that only move keep their zeros
register(spec("reshape", flatten_module_shape, flatten_couple, zeros=KEEPS), nn.Flatten)
register(_FLATTEN, torch.flatten, Method("flatten"))
register(
    spec("reshape", run_on_meta, unflatten_couple, zeros=KEEPS),
    torch.unflatten,
    Method("unflatten"),
)
register(
    spec("reshape", run_on_meta, unflatten_module_couple, resize=unflatten_resize, zeros=KEEPS),
    nn.Unflatten,
)
register(_VIEW, Method("view"), Method("reshape"), torch.reshape)
register(
    spec("reshape", run_on_meta, view_as_couple, zeros=KEEPS),
    Method("view_as"), Method("reshape_as"),
)  # fmt: skip
register(_PERMUTE, torch.permute, Method("permute"))
register(
    _TRANSPOSE, torch.transpose, torch.swapaxes, Method("transpose"), Method("swapaxes"),
    torch.swapdims, Method("swapdims"),
)  # fmt: skip
register(spec("permute", run_on_meta, t_couple, zeros=KEEPS), torch.t, Method("t"))
# positions move or repeat, values are copied (im2col pads with zeros; fold sums each channel's
# own kernel positions): zero channels stay zero
register(spec("roll", same_shape, roll_couple, zeros=KEEPS), torch.roll, Method("roll"))
register(spec("expand", run_on_meta, repeat_couple, zeros=KEEPS), Method("repeat"))
register(
    spec("expand", run_on_meta, repeat_interleave_couple, zeros=KEEPS),
    torch.repeat_interleave, Method("repeat_interleave"),
)  # fmt: skip
register(spec("sliding windows", run_on_meta, sliding_couple, zeros=KEEPS), Method("unfold"))
register(spec("sliding windows", run_on_meta, im2col_couple, zeros=KEEPS), nn.Unfold, F.unfold)
register(spec("sliding windows", run_on_meta, col2im_couple, zeros=KEEPS), nn.Fold, F.fold)
register(
    spec("unsqueeze", run_on_meta, unsqueeze_couple, zeros=KEEPS),
    torch.unsqueeze,
    Method("unsqueeze"),
)
register(
    spec("squeeze", run_on_meta, squeeze_couple, zeros=KEEPS), torch.squeeze, Method("squeeze")
)
register(
    spec("expand", run_on_meta, expand_couple, zeros=KEEPS), Method("expand"), torch.broadcast_to
)
register(spec("expand", run_on_meta, expand_as_couple, zeros=KEEPS), Method("expand_as"))
register(
    spec("concat", run_on_meta, cat_couple, zeros=KEEPS), torch.cat, torch.concat, torch.concatenate
)
register(spec("stack", run_on_meta, stack_couple, zeros=KEEPS), torch.stack)
register(
    spec("split", run_on_meta, split_couple, zeros=KEEPS),
    torch.chunk, torch.split, torch.unbind, Method("chunk"), Method("split"), Method("unbind"),
)  # fmt: skip
register(spec("getitem", run_on_meta, getitem_couple, zeros=KEEPS), operator.getitem)
# writes into its first argument in place: the values written may be non-zero anywhere
register(spec("setitem", run_on_meta, setitem_couple, zeros=SHIFTS), operator.setitem)
register(
    _ATTR,
    Method("size"), Method("dim"), Method("numel"), Method("ndimension"), Method("nelement"),
    getattr, torch.numel, Method("element_size"),
)  # fmt: skip
register(
    spec("creation", run_on_meta, creation, zeros=created),
    torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn,
    *(Method(n) for n in ("new_zeros", "new_ones", "new_empty")),
)  # fmt: skip
register(
    spec(
        "channel shuffle",
        run_on_meta,
        barrier("channel shuffle permutes channels across groups"),
        zeros=KEEPS,
    ),
    nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle, F.pixel_shuffle, F.pixel_unshuffle,
)  # fmt: skip
register(
    spec("attention", mha_shape, mha_couple, mha_flops, mha_resize, mha_zeros),
    nn.MultiheadAttention,
)
register(
    spec("attention", run_on_meta, sdpa_couple, sdpa_flops, zeros=KEEPS),
    F.scaled_dot_product_attention,
)
register(spec("einsum", run_on_meta, einsum_couple, einsum_flops, zeros=KEEPS), torch.einsum)
register(
    spec("recurrent", None, recurrent_couple, recurrent_flops, zeros=SHIFTS),
    nn.LSTM, nn.GRU, nn.RNN,
)  # fmt: skip

register_optional()  # ops of torchvision and timm, where installed
