"""The table: every op family registered under the keys fx uses for it (module classes,
functions, tensor methods). Adding an op is adding one line here."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from widthc.ops.attention import (
    einsum_couple,
    einsum_flops,
    mha_flops,
    mha_shape,
    sdpa_couple,
    sdpa_flops,
)
from widthc.ops.common import (
    barrier,
    broadcast_shape,
    compare_shape,
    run_on_meta,
    same_shape,
    spec,
)
from widthc.ops.elementwise import (
    creation,
    elementwise_rule,
    extreme_rule,
    interpolate_shape,
    norm_rule,
    pad_couple,
    pad_module_couple,
    pad_module_shape,
    pair_reduction,
    pool_shape,
    ranked_rule,
    reduce_rule,
    reduce_shape,
    softmax,
    softmax_at,
    spatial,
    spread_rule,
    tensor_attr,
    unary,
)
from widthc.ops.indexing import getitem_couple, setitem_couple
from widthc.ops.layers import (
    batch_norm_fn_couple,
    channel_norm_couple,
    conv_fn_couple,
    conv_fn_flops,
    conv_fn_shape,
    conv_module_couple,
    conv_module_flops,
    conv_resize,
    conv_shape,
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
from widthc.ops.registry import Method, register
from widthc.ops.shape_ops import (
    cat_couple,
    expand_as_couple,
    expand_couple,
    flatten_couple,
    flatten_module_shape,
    permute_couple,
    size_quotient,
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

# op families registered under several keys
_UNARY = spec("elementwise unary", same_shape, unary)
_ELEMENTWISE = spec("elementwise", broadcast_shape, elementwise_rule)
_COMPARE = spec("elementwise", compare_shape, elementwise_rule)
_REDUCE = spec("reduction", reduce_shape, reduce_rule)
_SOFTMAX = spec("softmax", same_shape, softmax)
_VIEW = spec("reshape", run_on_meta, view_couple)
_FLATTEN = spec("reshape", run_on_meta, flatten_couple)
_PERMUTE = spec("permute", run_on_meta, permute_couple)
_TRANSPOSE = spec("permute", run_on_meta, transpose_couple)
_ATTR = spec("tensor attribute", run_on_meta, tensor_attr)

# layers with weights
register(
    spec("conv", conv_shape, conv_module_couple, conv_module_flops, conv_resize),
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
register(spec("conv", conv_fn_shape, conv_fn_couple, conv_fn_flops), F.conv1d, F.conv2d, F.conv3d)
register(spec("linear", linear_shape, linear_couple, linear_flops, linear_resize), nn.Linear)
register(spec("linear", linear_fn_shape, linear_fn_couple, linear_flops), F.linear)
register(
    spec("matmul", run_on_meta, matmul_couple, matmul_flops),
    torch.matmul, operator.matmul, torch.bmm, torch.mm, Method("matmul"), Method("bmm"), Method("mm"),
)  # fmt: skip
register(
    spec("embedding", embedding_shape, embedding_couple, resize=embedding_resize), nn.Embedding
)
register(
    spec("batch norm", norm_shape, channel_norm_couple, resize=norm_resize),
    nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm, nn.modules.instancenorm._InstanceNorm,
)  # fmt: skip
register(spec("group norm", same_shape, group_norm_couple, resize=group_norm_resize), nn.GroupNorm)
register(spec("group norm", same_shape, group_norm_fn_couple), F.group_norm)
register(spec("layer norm", same_shape, layer_norm_couple, resize=layer_norm_resize), nn.LayerNorm)
register(spec("layer norm", same_shape, layer_norm_fn_couple), F.layer_norm, F.rms_norm)
register(spec("layer norm", same_shape, layer_norm_couple, resize=layer_norm_resize), nn.RMSNorm)
register(spec("batch norm", same_shape, batch_norm_fn_couple), F.batch_norm, F.instance_norm)
register(spec("prelu", same_shape, prelu_couple, resize=prelu_resize), nn.PReLU)
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
    operator.add, operator.sub, operator.mul, operator.truediv, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.mod,
    torch.add, torch.sub, torch.mul, torch.div, torch.true_divide, torch.maximum, torch.minimum,
    torch.pow, torch.where, torch.addcmul, torch.lerp, torch.masked_fill, torch.subtract,
    torch.multiply,
    *(Method(n) for n in (
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "add_", "sub_", "mul_", "div_",
        "masked_fill", "masked_fill_", "lerp", "where", "addcmul", "truediv", "copy_",
    )),
)  # fmt: skip
register(spec("size division", broadcast_shape, size_quotient), operator.floordiv)
register(
    _COMPARE,
    operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
    *(Method(n) for n in ("eq", "ne", "lt", "le", "gt", "ge")),
)  # fmt: skip
register(
    _REDUCE,
    torch.mean, torch.sum, torch.amax, torch.amin, torch.logsumexp, torch.prod, torch.argmax,
    torch.argmin,
    *(Method(n) for n in ("mean", "sum", "amax", "amin", "logsumexp", "prod", "argmax", "argmin")),
)  # fmt: skip
# (values, indices) pairs: reductions, and rankings along one dim
register(
    spec("reduction", run_on_meta, extreme_rule),
    torch.max, torch.min, torch.median, *(Method(n) for n in ("max", "min", "median")),
)  # fmt: skip
register(spec("reduction", run_on_meta, pair_reduction(1)), torch.mode, Method("mode"))
register(spec("reduction", run_on_meta, pair_reduction(2)), torch.kthvalue, Method("kthvalue"))
register(
    spec("reduction", run_on_meta, norm_rule), torch.norm, Method("norm"), torch.linalg.vector_norm
)
register(
    spec("reduction", run_on_meta, spread_rule),
    torch.var, torch.std, *(Method(n) for n in ("var", "std")),
)  # fmt: skip
register(spec("sort", run_on_meta, ranked_rule(1)), torch.sort, Method("sort"))
register(spec("sort", run_on_meta, ranked_rule(2)), torch.topk, Method("topk"))
register(
    _SOFTMAX,
    nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    Method("softmax"), Method("log_softmax"),
)  # fmt: skip
register(
    spec("normalize", same_shape, lambda ctx: softmax_at(ctx, ctx.arg(2, "dim", 1))), F.normalize
)
register(
    spec("local response norm", same_shape, lambda ctx: softmax_at(ctx, 1)), nn.LocalResponseNorm
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
        _pool = spec("pooling", pool_shape(_n, _kind), lambda ctx, n=_n: spatial(ctx, n))
        register(_pool, _mods[_kind], _fns[_kind])
    register(
        spec("pooling", run_on_meta, lambda ctx, n=_n: spatial(ctx, n)),
        getattr(nn, f"AdaptiveMaxPool{_n}d"), getattr(F, f"adaptive_max_pool{_n}d"),
    )  # fmt: skip
register(
    spec("resize", interpolate_shape, spatial),
    F.interpolate, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip
register(spec("pad", run_on_meta, pad_couple), F.pad)
register(
    spec("pad", pad_module_shape, pad_module_couple),
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
    nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
register(spec("reshape", flatten_module_shape, flatten_couple), nn.Flatten)
register(_FLATTEN, torch.flatten, Method("flatten"))
register(spec("reshape", run_on_meta, unflatten_couple), torch.unflatten, Method("unflatten"))
register(
    spec("reshape", run_on_meta, unflatten_module_couple, resize=unflatten_resize), nn.Unflatten
)
register(_VIEW, Method("view"), Method("reshape"), torch.reshape)
register(spec("reshape", run_on_meta, view_as_couple), Method("view_as"), Method("reshape_as"))
register(_PERMUTE, torch.permute, Method("permute"))
register(
    _TRANSPOSE, torch.transpose, torch.swapaxes, Method("transpose"), Method("swapaxes"),
    torch.swapdims, Method("swapdims"),
)  # fmt: skip
register(spec("permute", run_on_meta, t_couple), torch.t, Method("t"))
register(spec("unsqueeze", run_on_meta, unsqueeze_couple), torch.unsqueeze, Method("unsqueeze"))
register(spec("squeeze", run_on_meta, squeeze_couple), torch.squeeze, Method("squeeze"))
register(spec("expand", run_on_meta, expand_couple), Method("expand"), torch.broadcast_to)
register(spec("expand", run_on_meta, expand_as_couple), Method("expand_as"))
register(spec("concat", run_on_meta, cat_couple), torch.cat, torch.concat, torch.concatenate)
register(spec("stack", run_on_meta, stack_couple), torch.stack)
register(
    spec("split", run_on_meta, split_couple),
    torch.chunk, torch.split, torch.unbind, Method("chunk"), Method("split"), Method("unbind"),
)  # fmt: skip
register(spec("getitem", run_on_meta, getitem_couple), operator.getitem)
register(spec("setitem", run_on_meta, setitem_couple), operator.setitem)
register(
    _ATTR,
    Method("size"), Method("dim"), Method("numel"), Method("ndimension"), Method("nelement"),
    getattr, torch.numel, Method("element_size"),
)  # fmt: skip
register(
    spec("creation", run_on_meta, creation),
    torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn,
    *(Method(n) for n in ("new_zeros", "new_ones", "new_empty")),
)  # fmt: skip
register(
    spec("channel shuffle", run_on_meta, barrier("channel shuffle permutes channels across groups")),
    nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle, F.pixel_shuffle, F.pixel_unshuffle,
)  # fmt: skip
register(
    spec(
        "attention",
        mha_shape,
        barrier("multi-head attention needs head-structured widths"),
        mha_flops,
    ),
    nn.MultiheadAttention,
)
register(spec("attention", run_on_meta, sdpa_couple, sdpa_flops), F.scaled_dot_product_attention)
register(spec("einsum", run_on_meta, einsum_couple, einsum_flops), torch.einsum)


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
        spec("batch norm", same_shape, channel_norm_couple, resize=norm_resize),
        *(m for m in norm_acts if m is not None),
    )
    # "same" padding computed at run time: shapes come from running the module
    register(spec("conv", None, conv_module_couple, conv_module_flops, conv_resize), Conv2dSame)
    register(
        spec("pooling", None, lambda ctx: spatial(ctx, 2)),
        pool2d_same.AvgPool2dSame, pool2d_same.MaxPool2dSame,
    )  # fmt: skip


_register_optional()
