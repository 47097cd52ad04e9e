"""Ops that move positions around the channels (issue 19): windows rolled, tiled, slid and
folded; a bias table gathered per head; a conv-layout attention split into (3, heads,
head_dim). Each keeps the channels it does not move searchable, and slim equals the supernet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import zoo
from torch import nn

import widthc
from widthc.ir import Segment
from widthc.passes.coupling import REWRITES


class Rolled(nn.Module):
    """torch.roll over the spatial dims and x.repeat over the batch: channels pass."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 1)
        self.pos = nn.Conv2d(2, 8, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = torch.roll(self.a(x), shifts=(1, -1), dims=(2, 3))
        grid = torch.ones(1, 2, *x.shape[2:], device=x.device)
        y = y + self.pos(grid).repeat(x.shape[0], 1, 1, 1)
        return self.fc(self.b(F.relu(y)).mean((2, 3)))


class Tiled(nn.Module):
    """x.repeat(1, 1, 2) over a channels-last dim: the channels twice, block-major."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(12, 4)

    def forward(self, x):
        return self.b(F.gelu(self.a(x)).repeat(1, 1, 2)).mean(1)


class Outlook(nn.Module):
    """VOLO's unfold / fold: im2col repeats each channel over its kernel taps, col2im folds
    them back; Tensor.unfold slides windows along a spatial dim (HaloNet)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Conv2d(3, 8, 1)
        self.unfold = nn.Unfold(3, padding=1)
        self.mix = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        v = self.v(x)
        cols = self.unfold(v) * 0.5  # N, 8*9, L
        y = F.fold(cols, output_size=x.shape[2:], kernel_size=3, padding=1)
        windows = self.mix(y).unfold(2, 4, 4)  # N, 6, 2, W, 4
        return self.fc(windows.mean((2, 3, 4)))


class ConvAttention(nn.Module):
    """Visformer's attention: a 1x1 conv qkv reshaped to (3, heads, head_dim, H*W)."""

    def __init__(self, dim: int = 12, heads: int = 3):
        super().__init__()
        self.num_heads, self.head_dim = heads, 4
        self.stem = nn.Conv2d(3, dim, 1)
        self.qkv = nn.Conv2d(dim, 3 * heads * 4, 1)
        self.proj = nn.Conv2d(heads * 4, dim, 1)
        self.fc = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x)
        B, C, H, W = x.shape
        qkv = self.qkv(x).reshape(B, 3, self.num_heads, self.head_dim, -1).permute(1, 0, 2, 4, 3)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).permute(0, 1, 3, 2).reshape(B, -1, H, W)
        return self.fc((x + self.proj(y)).mean((2, 3)))


def _compile(model, x):
    torch.manual_seed(0)
    return zoo.check_random_widths(model.eval(), x, seeds=(0, 1), onnx=False)


def _frozen(program) -> list[str]:
    return [g.producers[0] for g in program.groups if not g.searchable]


def test_roll_and_batch_repeat_keep_the_channels():
    program = _compile(Rolled(), torch.randn(2, 3, 6, 6))
    assert _frozen(program) == ["fc"]


def test_repeat_of_a_channel_dim_tiles_it():
    program = _compile(Tiled(), torch.randn(2, 4, 5))
    assert _frozen(program) == ["b"]
    weight = program.param_dims["b.weight"][1]
    assert weight == widthc.Layout(program.param_dims["a.weight"][0].segments * 2)


def test_unfold_and_fold_repeat_and_gather_kernel_taps():
    program = _compile(Outlook(), torch.randn(2, 3, 8, 8))
    assert _frozen(program) == ["fc"]
    v = program.groups[0]
    assert v.producers == ("v",) and v.searchable


def test_conv_attention_is_searchable_in_heads():
    program = _compile(ConvAttention(), torch.randn(2, 3, 4, 4))
    assert _frozen(program) == ["fc"]
    assert [(g.n, g.unit) for g in program.groups if g.unit > 1] == [(3, 4)]


class PatchUnfold(nn.Module):
    """MobileViT's unfolding: batch, channels and a spatial dim merged into one dim whose size
    is computed from the batch size (`B * C * nh`, C read from the tensor), then taken back
    out. The channels inside the merged dim follow (widthc/ops/spans.py), and no size is
    pinned to the example's batch."""

    def __init__(self, hf: bool = False, ceil: bool = False):
        super().__init__()
        self.hf, self.ceil = hf, ceil
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 1)
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = self.a(x)
        B, C, H, W = y.shape
        if not self.hf:  # timm's form: the patch rows from `math.ceil(H / p) * p // p`
            nh = math.ceil(H / 2) * 2 // 2 if self.ceil else H // 2
            y = y.reshape(B * C * nh, 2, W // 2, 2).transpose(1, 2).reshape(B, C, H, W)
            return self.fc(self.b(y).mean((2, 3)))
        # transformers' MobileViT: patches as tokens of the channels, folded back with the
        # channel count read before (`B * C * nh` is computed from the batch size)
        n = (H // 2) * (W // 2)
        p = y.reshape(B * C * (H // 2), 2, W // 2, 2).transpose(1, 2).reshape(B, C, n, 4)
        p = self.mix(p.transpose(1, 3).reshape(B * 4, n, -1))
        p = p.contiguous().view(B, 4, n, -1).transpose(1, 3)
        y = p.reshape(B * C * (H // 2), W // 2, 2, 2).transpose(1, 2).reshape(B, C, H, W)
        return self.fc(self.b(y).mean((2, 3)))


# (hf, side): at side 2 transformers' form computes `B * C * 1` (one patch row): rewriting it
# like a channel literal would pin it to the example's batch
@pytest.mark.parametrize(("hf", "side", "ceil"), [(False, 4, False), (False, 4, True),
                                                   (True, 4, False), (True, 2, False)])  # fmt: skip
def test_a_size_computed_from_the_batch_is_not_pinned(hf, side, ceil):
    model = PatchUnfold(hf, ceil).eval()
    program = widthc.compile(model, torch.randn(1, 3, side, side))
    # the unfolded channels are searched; transformers' form folds the tokens' mixer back
    # with the width read before (`B * C * nh`, a product with the batch size that no constant
    # can replace) although the mixer's channels are others: both stay whole
    assert _frozen(program) == (["a", "mix", "fc"] if hf else ["fc"])
    choice = program.random(0)
    small = widthc.slim(program, choice)
    net = widthc.supernet(program).eval()
    net.set_choice(choice)
    x = torch.randn(3, 3, side, side)  # another batch size than the example's
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x))


class QkvBias(nn.Module):
    """BEiT's and DINOv3's qkv bias (q and v biases around zeros for k, concatenated), a width
    asserted against a literal and against another tensor's, a query repeated over the batch
    (repeat_interleave, GCViT's global query)."""

    def __init__(self):
        super().__init__()
        self.embed, self.ctx = nn.Linear(5, 8), nn.Linear(5, 8)
        self.qkv = nn.Linear(8, 24, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(8))
        self.register_buffer("k_bias", torch.zeros(8), persistent=False)
        self.proj, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        B, N, _ = h.shape
        torch._assert(h.shape[-1] == 8, "the embedding's width")
        torch._assert(h.shape[-1] == self.ctx(x).shape[-1], "the context's width")
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        q, k, v = F.linear(h, self.qkv.weight, bias).reshape(B, N, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q = q.mean(0, keepdim=True).repeat_interleave(B, dim=0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, 8)
        return self.head(self.proj(y).mean(1))


def test_concatenated_weights_asserted_widths_and_repeated_queries_follow_the_heads():
    program = _compile(QkvBias(), torch.randn(2, 4, 5))
    assert _frozen(program) == ["head"]
    heads = next(g for g in program.groups if g.unit > 1)
    assert (heads.n, heads.unit, heads.producers[0]) == (2, 4, "linear")
    assert program.param_dims["q_bias"] == {0: widthc.Layout((Segment(heads.id, 2, 4),))}
    # the two asserted widths: the embedding's and the context's are one group
    assert program.groups[0].producers[:2] == ("embed", "ctx")
    eq = next(n for n in program.gm.graph.nodes if n.name == "eq")
    assert [p for p, _ in eq.meta[REWRITES]] == [("args", 1)]
