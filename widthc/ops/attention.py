"""Rules of attention: multi-head attention and window attention (their heads shrink whole),
scaled dot-product attention and einsum (contractions pair channels index by index, like
matmul)."""

from __future__ import annotations

from widthc.ir import Layout, TensorMeta
from widthc.ops.common import expect, numel_split
from widthc.ops.zeros import KEEPS, SHIFTS


def mha_couple(ctx) -> None:
    """nn.MultiheadAttention: the module computes head_dim as the query's width // num_heads, so
    the query's channels shrink in whole heads together with the heads (head_dim stays): one
    group counted in heads, that the q/k/v and output projections share."""
    m = ctx.module
    lq, lk, lv = ctx.lay(0, "query"), ctx.lay(1, "key"), ctx.lay(2, "value")
    if m.bias_k is not None or m.add_zero_attn:
        return ctx.barrier("multi-head attention with bias_k/bias_v or add_zero_attn")
    mask = ctx.arg(5, "attn_mask", None)
    if isinstance(mask, TensorMeta) and mask.ndim == 3:  # (batch x heads, L, S)
        return ctx.barrier("multi-head attention with a 3-D mask, one per head")
    heads = ctx.coarsen(lq[-1], m.head_dim)
    if heads is None:
        return ctx.barrier("multi-head attention over channels that cannot shrink in whole heads")
    e = heads.repeat(m.head_dim)
    rows = Layout(e.segments * 3)  # q, k and v of the packed input projection
    if m._qkv_same_embed_dim:
        w = ctx.param("in_proj_weight")
        ctx.unify(w[1], e, lk[-1], lv[-1], why="attention input projection")
        ctx.unify(w[0], rows, why="attention heads")
    else:
        for name, x in (("q_proj_weight", e), ("k_proj_weight", lk[-1]), ("v_proj_weight", lv[-1])):
            w = ctx.param(name)
            ctx.unify(w[1], x, why="attention input projection")
            ctx.unify(w[0], e, why="attention heads")
    for name, lay in (("in_proj_bias", rows), ("out_proj.bias", e)):
        bias = ctx.param(name)
        if bias is not None:
            ctx.unify(bias[0], lay, why="attention bias")
    out = ctx.param("out_proj.weight")
    ctx.unify(out[1], e, why="attention output projection")
    ctx.unify(out[0], e, why="attention output (the module's embed_dim)")
    weights = ctx.out[1]  # (batch, [heads,] L, S) attention weights, or None
    if weights is not None:
        lays = [None] * weights.ndim
        if ctx.arg(6, "average_attn_weights", True):
            ctx.mix(heads)  # averaged over the kept heads
        else:
            lays[-3] = heads
        weights = tuple(lays)
    ctx.set(((*lq[:-1], e), weights))


def mha_resize(m, params, in_shapes) -> dict:
    """The query's width and the heads follow the sliced projections; head_dim stays."""
    if m._qkv_same_embed_dim:
        e = params["in_proj_weight"].shape[1]
        return {"embed_dim": e, "kdim": e, "vdim": e, "num_heads": e // m.head_dim}
    e = params["q_proj_weight"].shape[1]
    kdim, vdim = params["k_proj_weight"].shape[1], params["v_proj_weight"].shape[1]
    return {"embed_dim": e, "kdim": kdim, "vdim": vdim, "num_heads": e // m.head_dim}


def mha_zeros(ctx) -> str:
    """Masked execution of nn.MultiheadAttention (its projections' rows, columns and biases
    masked): a removed head's q, k and v are zero, its softmax over key positions times v is
    zero, so the output keeps zero channels. Per-head attention weights do not (a removed
    head's weights are 1/S): masked execution is then refused (averaged weights mix the heads,
    which mha_couple records)."""
    per_head = ctx.arg(4, "need_weights", True) and not ctx.arg(6, "average_attn_weights", True)
    return SHIFTS if per_head else KEEPS


def mha_flops(ctx) -> list:
    """nn.MultiheadAttention: q/k/v and output projections plus the two attention matmuls,
    with the kept heads."""
    m = ctx.module
    q, k = ctx.arg(0, "query"), ctx.arg(1, "key")
    lq, lk, lv = ctx.lay(0, "query"), ctx.lay(1, "key"), ctx.lay(2, "value")
    batched = q.ndim == 3
    if m.batch_first and batched:
        n, l_q, l_k = q.shape[0], q.shape[1], k.shape[1]
    else:
        l_q, l_k, n = q.shape[0], k.shape[0], q.shape[1] if batched else 1
    e = lq[-1] if lq[-1] is not None else m.embed_dim
    ek = lk[-1] if lk[-1] is not None else m.kdim
    ev = lv[-1] if lv[-1] is not None else m.vdim
    return [
        (n * l_q, (e, e)),  # q projection
        (n * l_k, (ek, e)),  # k
        (n * l_k, (ev, e)),  # v
        (n * l_q, (e, e)),  # output projection
        (2 * n * l_q * l_k, (e,)),  # q k^T and attention x v, over the kept heads
    ]


def mha_shape(ctx):
    """(output, attention weights or None), as nn.MultiheadAttention returns them."""
    m = ctx.module
    q, k = ctx.arg(0, "query"), ctx.arg(1, "key")
    expect(q.shape[-1], m.embed_dim, "attention embedding dim")
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


def sdpa_couple(ctx) -> None:
    """scaled_dot_product_attention(q, k, v): q and k contract on their last dim; the output
    takes v's last dim and the query positions; batch and head dims are shared, with the mask's
    where it has them (a relative position bias per head). With `enable_gqa`, each key/value
    head serves a run of query heads: those query heads shrink with it."""
    q, k = ctx.arg(0, "query"), ctx.arg(1, "key")
    lq, lk, lv = ctx.lay(0, "query"), ctx.lay(1, "key"), ctx.lay(2, "value")
    scores = ctx.unify(lq[-1], lk[-1], why="attention scores")
    if ctx.arg(6, "scale", None) is None:  # the default scale 1/sqrt(E) follows the width
        ctx.mix(scores)
    ctx.sink(lk[-2], why="attention over key positions")
    ctx.sink(lv[-2], why="attention over key positions")
    lk, lv = list(lk), list(lv)
    if q.ndim >= 3 and k.shape[-3] != q.shape[-3] and ctx.arg(7, "enable_gqa", False):
        shared = q.shape[-3] // k.shape[-3]  # query heads per key/value head
        lk[-3] = ctx.repeat(lk[-3], shared, why="grouped-query attention")
        lv[-3] = ctx.repeat(lv[-3], shared, why="grouped-query attention")
    batch = [ctx.unify(lq[d], lk[d], lv[d], why="attention batch") for d in range(q.ndim - 2)]
    mask, lm = ctx.arg(3, "attn_mask", None), ctx.lay(3, "attn_mask")
    if isinstance(mask, TensorMeta):  # broadcast against (batch..., L, S)
        dims = [*batch, lq[-2], lk[-2]]
        for d in range(mask.ndim):
            j = d + len(dims) - mask.ndim
            if j >= 0 and mask.shape[d] != 1:
                dims[j] = ctx.unify(dims[j], lm[d], why="attention mask")
        batch = dims[: len(batch)]
    ctx.set((*batch, lq[-2], lv[-1]))


def sdpa_flops(ctx) -> list:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    lq, lv = ctx.lay(0, "query"), ctx.lay(2, "value")
    const, factors = numel_split(TensorMeta(q.shape[:-1]), lq[:-1])  # batch x heads x L
    s = k.shape[-2]
    e = lq[-1] if lq[-1] is not None else q.shape[-1]
    ev = lv[-1] if lv[-1] is not None else v.shape[-1]
    return [(const * s, (*factors, e)), (const * s, (*factors, ev))]


def einsum_parse(ctx):
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


def einsum_couple(ctx) -> None:
    """einsum: dims that share a letter share channels; the output takes its letters' dims."""
    parsed = einsum_parse(ctx)
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


def einsum_flops(ctx) -> list:
    parsed = einsum_parse(ctx)
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


def window_attention_couple(ctx) -> None:
    """torchvision's shifted_window_attention(x, qkv_weight, proj_weight, bias, window, heads,
    ...): it computes head_dim as x's width // num_heads and reshapes its output to x's width,
    so x's channels (the stage's residual stream) shrink in whole heads together with the
    heads. The literal head count is rewritten."""
    x, lx = ctx.arg(0, "input"), ctx.lay(0, "input")
    n_heads = ctx.arg(5, "num_heads")
    heads = ctx.coarsen(lx[-1], x.shape[-1] // n_heads)
    if heads is None:
        return ctx.barrier("window attention over channels that cannot shrink in whole heads")
    e = heads.repeat(x.shape[-1] // n_heads)
    rows = Layout(e.segments * 3)  # q, k and v
    wq, wp = ctx.lay(1, "qkv_weight"), ctx.lay(2, "proj_weight")
    ctx.unify(wq[1], e, why="attention input projection")
    ctx.unify(wq[0], rows, why="attention heads")
    ctx.unify(wp[1], e, why="attention output projection")
    ctx.unify(wp[0], e, why="attention output projection")
    for i, name, lay in ((9, "qkv_bias", rows), (10, "proj_bias", e)):
        bias = ctx.lay(i, name)
        if bias is not None:
            ctx.unify(bias[0], lay, why="attention bias")
    for i, name, dim in ((3, "relative_position_bias", -3), (11, "logit_scale", 0)):
        t = ctx.lay(i, name)
        if t is not None:
            ctx.unify(t[dim], heads, why="attention heads")
    ctx.rewrite(("args", 5) if len(ctx.node.args) > 5 else ("kwargs", "num_heads"), heads)
    ctx.set((*lx[:-1], e))


def window_attention_flops(ctx) -> list:
    """Projections and both attention matmuls over the padded windows, with the kept heads."""
    x, lx = ctx.arg(0, "input"), ctx.lay(0, "input")
    window = ctx.arg(4, "window_size")
    padded = [-(-s // w) * w for s, w in zip(x.shape[1:3], window)]
    tokens = x.shape[0] * padded[0] * padded[1]
    e = lx[-1] if lx[-1] is not None else x.shape[-1]
    per_window = window[0] * window[1]
    return [(4 * tokens, (e, e)), (2 * tokens * per_window, (e,))]


def position_bias_couple(ctx) -> None:
    """torchvision's _get_relative_position_bias(table, index, window): the table's rows are
    addressed by the index; its columns (one per head) become dim 1 of the (1, H, N, N) bias."""
    table = ctx.lay(0, "relative_position_bias_table")
    ctx.sink(table[0], why="position bias rows are addressed by an index")
    ctx.set((None, table[1], None, None))
