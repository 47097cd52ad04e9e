"""Small transformers written the ways the big libraries write them, for the tests of attention
heads (tests/test_heads.py): timm's fused qkv, HuggingFace's separate projections with rotary
embeddings and grouped-query attention, GPT-2's Conv1D (`torch.addmm`), nn.MultiheadAttention,
EfficientViT's linear attention with a grouped conv per q, k or v of a head, VOLO's outlook
attention;
LayerNorm or RMSNorm; a plain or a gated MLP. Every size is an argument, so that a property
test can draw random architectures."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = (
    "fused", "fused_matmul", "fused_width", "fused_bias", "split", "gqa", "gqa_sdpa", "conv1d",
    "mha", "lite", "outlook",
)  # fmt: skip
# EfficientViT's linear attention divides by a sum: masked execution refuses it
MASKABLE = tuple(a for a in ATTENTIONS if a != "lite")
SAME_WIDTH = ("fused_width", "mha", "outlook")  # attention whose width must be the residual's (dim)


@dataclass(frozen=True)
class Config:
    attention: str = "fused"
    dim: int = 16
    heads: int = 4
    head_dim: int = 8
    kv_heads: int = 2  # gqa only
    hidden: int = 24
    depth: int = 2
    norm: str = "layer"  # layer | rms
    mlp: str = "plain"  # plain | gated
    tokens: int = 6
    features: int = 5
    classes: int = 3


class FusedAttention(nn.Module):
    """timm's Attention: one qkv linear viewed as (3, heads, head_dim). `read_width`: the heads
    are merged back to the input's width read from its shape (older timm, many codebases)."""

    def __init__(self, c: Config, sdpa: bool = True, read_width: bool = False, bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.sdpa = c.heads, c.head_dim, sdpa
        self.read_width = read_width
        # a learned bias per head and pair of positions, given to SDPA as its mask
        self.bias = nn.Parameter(torch.randn(1, c.heads, c.tokens, c.tokens)) if bias else None
        self.scale = c.head_dim**-0.5
        self.qkv = nn.Linear(c.dim, 3 * c.heads * c.head_dim)
        self.proj = nn.Linear(c.heads * c.head_dim, c.dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        width = C if self.read_width else self.num_heads * self.head_dim
        return self.proj(x.transpose(1, 2).reshape(B, N, width))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class SplitAttention(nn.Module):
    """HuggingFace's LLaMA attention: q/k/v projections, rotary embeddings over head_dim,
    key/value heads repeated for their query heads (grouped-query attention when fewer)."""

    def __init__(self, c: Config, kv_heads: int, sdpa: bool = False):
        super().__init__()
        self.head_dim, self.groups, self.sdpa = c.head_dim, c.heads // kv_heads, sdpa
        self.num_key_value_heads = kv_heads
        self.q_proj = nn.Linear(c.dim, c.heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.dim, kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.dim, kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.heads * c.head_dim, c.dim, bias=False)
        angles = torch.arange(c.tokens)[:, None] * torch.rand(c.head_dim)[None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def repeat_kv(self, x):
        b, h, n, d = x.shape
        if self.groups == 1:
            return x
        x = x[:, :, None, :, :].expand(b, h, self.groups, n, d)
        return x.reshape(b, h * self.groups, n, d)

    def forward(self, x):
        B, N, _ = x.shape
        shape = (B, N, -1, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        q = q * self.cos + rotate_half(q) * self.sin
        k = k * self.cos + rotate_half(k) * self.sin
        if self.sdpa:  # torch repeats each key/value head for its query heads
            x = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = self.repeat_kv(k), self.repeat_kv(v)
            attn = (q @ k.transpose(2, 3)) * self.head_dim**-0.5
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, -1).contiguous()
        return self.o_proj(x)


class Conv1D(nn.Module):
    """GPT-2's Conv1D: a linear layer with an (in, out) weight, computed by addmm."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        B, N, _ = x.shape
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(B, N, self.nf)


class Conv1DAttention(nn.Module):
    """GPT-2's attention: one Conv1D for q, k and v, split by size, heads by view."""

    def __init__(self, c: Config):
        super().__init__()
        self.num_heads, self.head_dim = c.heads, c.head_dim
        self.split_size = c.heads * c.head_dim
        self.c_attn = Conv1D(3 * self.split_size, c.dim)
        self.c_proj = Conv1D(c.dim, self.split_size)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        q, k, v = (t.view(B, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(x.transpose(1, 2).reshape(B, N, self.split_size))


class MHAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.mha = nn.MultiheadAttention(c.dim, c.dim // c.head_dim, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class LiteAttention(nn.Module):
    """EfficientViT's LiteMLA over tokens: a 1x1 qkv conv, a multi-scale aggregation (a
    depthwise conv, then a grouped 1x1 conv with one group per q, k or v of a head), both read
    as rows of (q, k, v) of one head, ReLU linear attention."""

    def __init__(self, c: Config):
        super().__init__()
        self.head_dim, total = c.head_dim, c.heads * c.head_dim
        self.qkv = nn.Conv1d(c.dim, 3 * total, 1, bias=False)
        self.aggreg = nn.Sequential(
            nn.Conv1d(3 * total, 3 * total, 3, padding=1, groups=3 * total, bias=False),
            nn.Conv1d(3 * total, 3 * total, 1, groups=3 * c.heads, bias=False),
        )
        self.proj = nn.Conv1d(2 * total, c.dim, 1)

    def forward(self, x):
        B, N, _ = x.shape
        qkv = self.qkv(x.transpose(1, 2))
        qkv = torch.cat([qkv, self.aggreg(qkv)], 1).reshape(B, -1, 3 * self.head_dim, N)
        q, k, v = qkv.transpose(-1, -2).chunk(3, dim=-1)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        out = F.relu(q) @ (F.relu(k).transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + 1.0)  # (EfficientViT's eps is 1e-5)
        return self.proj(out.transpose(-1, -2).reshape(B, -1, N)).transpose(1, 2)


class OutlookAttention(nn.Module):
    """timm's VOLO outlook attention over the tokens as a 2 x (N / 2) grid: the values unfolded
    by k x k windows and viewed as (heads, C // heads, k x k); per head (k x k)^2 weights from a
    linear layer, viewed as (heads, k x k, k x k); folded back. C: the input's width."""

    def __init__(self, c: Config, k: int = 3):
        super().__init__()
        self.num_heads, self.k = c.heads, k
        self.scale = c.head_dim**-0.5
        self.v = nn.Linear(c.dim, c.dim, bias=False)
        self.attn = nn.Linear(c.dim, k**4 * c.heads)
        self.proj = nn.Linear(c.dim, c.dim)
        self.unfold = nn.Unfold(kernel_size=k, padding=k // 2)

    def forward(self, x):
        B, N, C = x.shape
        H, W, kk = 2, N // 2, self.k * self.k
        v = self.v(x).transpose(1, 2).reshape(B, C, H, W)
        v = self.unfold(v).reshape(B, self.num_heads, C // self.num_heads, kk, N)
        attn = self.attn(x).reshape(B, N, self.num_heads, kk, kk).permute(0, 2, 1, 3, 4)
        attn = (attn * self.scale).softmax(dim=-1)
        x = (attn @ v.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2).reshape(B, C * kk, N)
        x = F.fold(x, output_size=(H, W), kernel_size=self.k, padding=self.k // 2)
        return self.proj(x.flatten(2).transpose(1, 2))


def attention(c: Config) -> nn.Module:
    if c.attention.startswith("fused"):
        kind = c.attention
        return FusedAttention(
            c, kind != "fused_matmul", kind == "fused_width", kind == "fused_bias"
        )
    if c.attention in ("split", "gqa", "gqa_sdpa"):
        kv_heads = c.heads if c.attention == "split" else c.kv_heads
        return SplitAttention(c, kv_heads, sdpa=c.attention == "gqa_sdpa")
    if c.attention == "conv1d":
        return Conv1DAttention(c)
    if c.attention == "lite":
        return LiteAttention(c)
    if c.attention == "outlook":
        return OutlookAttention(c)
    return MHAttention(c)


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gated = c.mlp == "gated"
        self.fc1 = nn.Linear(c.dim, c.hidden)
        self.gate = nn.Linear(c.dim, c.hidden) if self.gated else None
        self.fc2 = nn.Linear(c.hidden, c.dim)

    def forward(self, x):
        h = F.silu(self.gate(x)) * self.fc1(x) if self.gated else F.gelu(self.fc1(x))
        return self.fc2(h)


def norm(c: Config) -> nn.Module:
    return nn.LayerNorm(c.dim) if c.norm == "layer" else nn.RMSNorm(c.dim)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm(c), attention(c), norm(c), MLP(c)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Token features -> embedding + position embedding -> blocks -> norm -> mean -> head."""

    def __init__(self, c: Config):
        super().__init__()
        self.embed = nn.Linear(c.features, c.dim)
        self.pos_embed = nn.Parameter(torch.randn(1, c.tokens, c.dim) * 0.1)
        self.blocks = nn.Sequential(*(Block(c) for _ in range(c.depth)))
        self.norm = norm(c)
        self.head = nn.Linear(c.dim, c.classes)

    def forward(self, x):
        x = self.blocks(self.embed(x) + self.pos_embed)
        return self.head(self.norm(x).mean(1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm affine parameters away from 1 and 0, so that a wrong slice shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


def model(c: Config, seed: int = 0, batch: int = 2) -> tuple[nn.Module, tuple]:
    torch.manual_seed(seed)
    return randomize(Transformer(c), seed), (torch.randn(batch, c.tokens, c.features),)


class WindowAttention(nn.Module):
    """timm's Swin and DaViT attention: head_dim read as C // num_heads from the input, a
    relative position bias table read at every pair of positions of a window."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.num_heads, n = heads, window * window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        self.register_buffer("index", torch.randint(0, (2 * window - 1) ** 2, (n, n)))

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.index.view(-1)].view(N, N, -1)
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias.permute(2, 0, 1).unsqueeze(0)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Shifted windows (torch.roll), window partition and reverse, attention, an MLP."""

    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):  # B, H, W, C
        B, H, W, C = x.shape
        w = self.window
        y = torch.roll(self.norm1(x), shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = y.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        y = self.attn(y).view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
        y = torch.roll(y.reshape(B, H, W, C), shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """timm's 2x2 patch merging: (2, 2, C) flattened to 4C, a norm, a linear to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2, window: int = 2, classes: int = 3):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 2, 2)
        self.stage1 = nn.Sequential(
            SwinBlock(dim, heads, window, 0), SwinBlock(dim, heads, window, 1)
        )
        self.merge = PatchMerging(dim)
        self.stage2 = SwinBlock(2 * dim, 2 * heads, window, 0)
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # B, H, W, C
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(x.mean((1, 2)))


def without_norms(model: nn.Module) -> nn.Module:
    """Layer norms replaced by identities: a norm over the residual stream mixes its channels."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.LayerNorm, nn.RMSNorm)):
                setattr(module, name, nn.Identity())
    return model


def masked_model(attention: str):
    """A transformer with attention `attention` (or a Swin) and its input, for the masked and
    stacked execution tests (the norms over the residual stream: `without_norms`)."""
    if attention == "swin":  # timm's way: torch.roll, windows, a position bias table, merging
        torch.manual_seed(0)
        return randomize(Swin()), (torch.randn(2, 3, 8, 8),)
    if attention == "torchvision_swin":  # shifted_window_attention and _patch_merging_pad
        from torchvision.models.swin_transformer import SwinTransformer

        torch.manual_seed(0)
        swin = SwinTransformer(
            [4, 4], 16, [1, 1], [2, 2], [4, 4], stochastic_depth_prob=0.0, num_classes=5
        )
        return swin.eval(), (torch.randn(2, 3, 32, 32),)
    dim = 32 if attention in SAME_WIDTH else 16
    return model(Config(attention=attention, dim=dim, mlp="gated"))
