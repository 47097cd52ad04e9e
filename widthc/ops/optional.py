"""The op table's entries for optional libraries (torchvision, timm), registered when the
library is installed: their no-trace functions (fx leaves) and their modules."""

from __future__ import annotations

from widthc.ops.attention import (
    position_bias_couple,
    window_attention_couple,
    window_attention_flops,
)
from widthc.ops.common import broadcast_shape, run_on_meta, same_shape, spec
from widthc.ops.conv import (
    conv_module_couple,
    conv_module_flops,
    conv_resize,
)
from widthc.ops.elementwise import elementwise_rule, spatial
from widthc.ops.layers import (
    channel_norm_couple,
    norm_resize,
)
from widthc.ops.pointwise import UNARY
from widthc.ops.registry import REGISTRY, module_key, register
from widthc.ops.windows import channel_moves, patch_merging_couple
from widthc.ops.zeros import KEEPS, additive, through

# timm's no-trace functions (torch.fx leaves) that only move the other dims around one channel
# dim: (module, function, channel dim in, channel dim out); `maybe_add_mask` adds a mask.
# Reshapes and per-channel interpolation: zero channels stay zero
_TIMM_FUNCTIONS = (
    ("timm.layers.pos_embed", "resample_abs_pos_embed", -1, -1),
    ("timm.layers.pos_embed", "resample_abs_pos_embed_nhwc", -1, -1),
    ("timm.models.swin_transformer", "window_reverse", -1, -1),
    ("timm.models.swin_transformer_v2", "window_reverse", -1, -1),
    ("timm.models.swin_transformer_v2_cr", "window_reverse", -1, -1),
    ("timm.models.davit", "window_reverse", -1, -1),
    ("timm.models.gcvit", "window_reverse", -1, -1),
    ("timm.models.maxxvit", "window_reverse", -1, -1),
    ("timm.models.maxxvit", "grid_reverse", -1, -1),
    ("timm.models.maxxvit", "window_reverse_nchw", 1, 1),
    ("timm.models.maxxvit", "grid_reverse_nchw", 1, 1),
    ("timm.models.nest", "deblockify", -1, -1),
)


def _register_timm() -> None:
    import importlib

    for module, name, src, dst in _TIMM_FUNCTIONS:
        fn = getattr(importlib.import_module(module), name, None)
        if fn is not None:
            register(spec("rearrange", None, channel_moves(src, dst), zeros=KEEPS), fn)
    from timm.layers import attention

    if hasattr(attention, "maybe_add_mask"):  # scores + mask: a mask of None adds nothing
        masked = additive((0, "scores"), (1, "attn_mask"))
        register(
            spec("elementwise", broadcast_shape, elementwise_rule, zeros=masked),
            attention.maybe_add_mask,
        )


def register_optional() -> None:
    """Ops of optional libraries, registered when the library is installed."""
    try:
        from torchvision.ops import stochastic_depth

        register(UNARY, stochastic_depth)
    except ImportError:
        pass
    try:
        from torchvision.models import swin_transformer as swin

        # a removed head's q, k, v are zero: its softmax over key positions times v is zero
        register(
            spec(
                "attention", run_on_meta, window_attention_couple, window_attention_flops,
                zeros=KEEPS,
            ),
            swin.shifted_window_attention,
        )  # fmt: skip
        register(  # the table's columns (one per head), gathered by position
            spec("position bias", run_on_meta, position_bias_couple, zeros=KEEPS),
            swin._get_relative_position_bias,
        )
        register(  # zero padding, strided slices, concatenated
            spec("rearrange", run_on_meta, patch_merging_couple, zeros=KEEPS),
            swin._patch_merging_pad,
        )
    except (ImportError, AttributeError):
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
        spec(
            "batch norm", same_shape, channel_norm_couple, resize=norm_resize,
            zeros=through("act", lambda m: REGISTRY.get(module_key(m))), scale="weight",
        ),
        *(m for m in norm_acts if m is not None),
    )  # fmt: skip
    # "same" padding computed at run time: shapes come from running the module
    register(
        spec("conv", None, conv_module_couple, conv_module_flops, conv_resize, KEEPS), Conv2dSame
    )
    register(
        spec("pooling", None, lambda ctx: spatial(ctx, 2), zeros=KEEPS),
        pool2d_same.AvgPool2dSame, pool2d_same.MaxPool2dSame,
    )  # fmt: skip
    _register_timm()
