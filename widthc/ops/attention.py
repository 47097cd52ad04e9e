"""Rules of attention: multi-head attention (a barrier with exact FLOPs), scaled dot-product
attention and einsum (contractions pair channels index by index, like matmul)."""

from __future__ import annotations

from widthc.ir import TensorMeta
from widthc.ops.common import expect, numel_split


def mha_flops(ctx) -> list:
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
    takes v's last dim and the query positions; batch and head dims are shared."""
    q, lq, lk, lv = ctx.arg(0, "query"), ctx.lay(0, "query"), ctx.lay(1, "key"), ctx.lay(2, "value")
    scores = ctx.unify(lq[-1], lk[-1], why="attention scores")
    if ctx.arg(6, "scale", None) is None:  # the default scale 1/sqrt(E) follows the width
        ctx.mix(scores)
    ctx.sink(lk[-2], why="attention over key positions")
    ctx.sink(lv[-2], why="attention over key positions")
    batch = [ctx.unify(lq[d], lk[d], lv[d], why="attention batch") for d in range(q.ndim - 2)]
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
