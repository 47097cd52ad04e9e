"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN): known, counted, and kept at their width.

Their channels are not searched yet: an RNN module keeps its weights in a list of its own
(`_flat_weights`) that the supernet's tensor swaps do not reach, so a sliced hidden size or
input would run with the full weights. The rule freezes the channels the layer reads and
writes, with that reason, rather than calling it an unknown op; its FLOPs are counted (one
matrix-vector product per weight, per step and sample)."""

from __future__ import annotations

import math


def recurrent_couple(ctx) -> None:
    ctx.barrier(
        f"recurrent layer `{ctx.op}`: its input and hidden widths stay (an RNN keeps its "
        "weights in `_flat_weights`, which widthc does not slice)"
    )


def recurrent_flops(ctx) -> list:
    """Per step and sample, every `weight_*` matrix (input to hidden, hidden to hidden, an
    LSTM's projection) times a vector; steps x samples: the output's elements per feature."""
    out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    steps = math.prod(out.shape[:-1])
    weights = sum(p.numel() for n, p in ctx.module.named_parameters() if n.startswith("weight_"))
    return [(float(steps * weights), ())]
