"""The ops and patterns that froze most channels of six timm models (issue 8, "low coverage":
skresnet18, gmlp_ti16_224, convnextv2_atto, mambaout_femto, mixnet_s, ghostnetv2_100), each in a
small model: searchable now, and exact (widthc.verify at random widths, supernet equal)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo import check_random_widths, randomize_norms

import widthc

# --- low coverage: the ops and patterns that froze most channels of six timm models -----------


class _MixedDepthwise(nn.Module):
    """MixNet's mixed depthwise conv: one layer's channels split into unequal parts, each with
    its own kernel, concatenated, then gated by a squeeze-excite (one layer's output)."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 24, 1)
        self.dw = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c) for c, k in ((6, 3), (8, 5), (10, 7))
        )
        self.se_reduce, self.se_expand = nn.Conv2d(24, 4, 1), nn.Conv2d(4, 24, 1)
        self.project, self.head = nn.Conv2d(24, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.expand(x))
        x = torch.cat([conv(p) for conv, p in zip(self.dw, torch.split(x, [6, 8, 10], 1))], 1)
        x = x * torch.sigmoid(
            self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True))))
        )
        return self.head(self.project(x).mean((2, 3)))


class _Ghost(nn.Module):
    """GhostNet: a concatenation of two layers' outputs multiplied by a third layer's output."""

    def __init__(self):
        super().__init__()
        self.primary, self.cheap = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gate, self.head = nn.Conv2d(3, 16, 1), nn.Linear(16, 2)

    def forward(self, x):
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], 1) * torch.sigmoid(self.gate(x))
        return self.head(out.mean((2, 3)))


class _GatedMLP(nn.Module):
    """MambaOut: one linear's output split into a gate, an identity part and a conv part
    (unequal sizes); gMLP: chunked into two halves that multiply."""

    def __init__(self, chunk: bool):
        super().__init__()
        self.chunk = chunk
        self.fc1, self.conv = nn.Linear(6, 32), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc2, self.head = nn.Linear(16, 6), nn.Linear(6, 2)

    def forward(self, x):  # x: N x H x W x C
        y = self.fc1(x)
        if self.chunk:
            u, v = y.chunk(2, dim=-1)
            y = u * v
        else:
            g, i, c = torch.split(y, [16, 8, 8], dim=-1)
            c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            y = F.gelu(g) * torch.cat([i, c], dim=-1)
        return self.head(self.fc2(y).mean((1, 2)))


class _SplitAttention(nn.Module):
    """SKNet's selective kernel: two paths stacked, weighted by a softmax over the paths of a
    layer whose output is viewed as (paths, C // paths), and the input split by a size."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.paths = nn.ModuleList(nn.Conv2d(8, 12, k, padding=k // 2) for k in (3, 5))
        self.reduce, self.select = nn.Conv2d(12, 4, 1), nn.Conv2d(4, 24, 1)
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        x = torch.split(self.stem(x), 8, dim=1)
        x = torch.stack([p(t) for p, t in zip(self.paths, x)], dim=1)
        a = self.select(torch.relu(self.reduce(x.sum(1).mean((2, 3), keepdim=True))))
        b, c, h, w = a.shape
        a = torch.softmax(a.view(b, 2, c // 2, h, w), dim=1)
        return self.head((x * a).sum(1).mean((2, 3)))


class _Shuffle(nn.Module):
    """ShuffleNet's channel shuffle between two convs."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 8, 3), nn.Linear(8, 2)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 3, c // 3, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.b(x).mean((2, 3)))


class _GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: per-channel L2 norms over space, divided by their mean over channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 8, 1), nn.Linear(8, 2)
        self.gamma, self.beta = nn.Parameter(torch.rand(12)), nn.Parameter(torch.rand(12))

    def forward(self, x):
        x = self.a(x)
        g = x.norm(p=2, dim=(2, 3), keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
        x = x + self.beta.view(1, -1, 1, 1) + self.gamma.view(1, -1, 1, 1) * (x * n)
        return self.head(self.b(x).mean((2, 3)))


PATTERNS = {
    "mixed depthwise": (_MixedDepthwise, ("expand",)),
    "ghost": (_Ghost, ("primary", "cheap", "gate")),
    "gated split": (lambda: _GatedMLP(chunk=False), ("fc1",)),
    "glu halves": (lambda: _GatedMLP(chunk=True), ("fc1",)),
    "split attention": (_SplitAttention, ("stem", "paths.0", "select")),
    "channel shuffle": (_Shuffle, ("a",)),
    "global response norm": (_GlobalResponseNorm, ("a",)),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_patterns_that_froze_most_channels_are_searchable_and_exact(name):
    factory, producers = PATTERNS[name]
    torch.manual_seed(0)
    shape = (1, 5, 5, 6) if "gate" in name or "glu" in name else (1, 3, 6, 6)
    program = check_random_widths(factory(), torch.randn(*shape), seeds=(0, 1, 2))
    for producer in producers:
        assert all(g.searchable for g in program.groups if producer in g.producers), (
            producer,
            [g.to_json() for g in program.groups],
        )


def test_split_sizes_follow_the_parts():
    torch.manual_seed(0)
    program = widthc.compile(_MixedDepthwise().eval(), torch.randn(1, 3, 6, 6))
    parts = [g for g in program.groups if "expand" in g.producers]
    assert [g.n for g in parts] == [6, 8, 10]  # three parts of one layer, each its own group
    small = widthc.slim(program, program.uniform(ratio=0.5))
    (split,) = [n for n in small.graph.nodes if n.target is torch.split]
    kept = [small.get_submodule(f"dw.{i}").in_channels for i in range(3)]
    assert list(split.args[1]) == kept and sum(kept) < 24


COVERAGE = {  # searchable conv/linear channel fraction: issue 8 found these below 0.2
    "skresnet18": 224, "gmlp_ti16_224": 224, "convnextv2_atto": 224, "mambaout_femto": 224,
    "mixnet_s": 224, "ghostnetv2_100": 224,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(COVERAGE))
def test_timm_models_that_had_low_coverage(name):
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, num_classes=10).eval()
    size = COVERAGE[name]
    program = widthc.compile(model, torch.randn(1, 3, size, size))
    assert program.to_json()["searchable_channel_fraction"] > 0.95


SLIMMED = {  # the six at 64x64 (gMLP's token count needs 224), and relatives of their patterns
    **COVERAGE, "skresnet18": 64, "convnextv2_atto": 64, "mambaout_femto": 64, "mixnet_s": 64,
    "ghostnetv2_100": 64, "mixnet_m": 64, "ghostnet_100": 64, "resnest14d": 64,
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLIMMED))
def test_timm_models_that_had_low_coverage_slim_exactly(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    with torch.no_grad():  # timm zero-inits some heads and scales: a zero output proves nothing
        for p in model.parameters():
            if (p == p.flatten()[0]).all():
                p.add_(torch.rand_like(p) - 0.5)
    randomize_norms(model)
    size = SLIMMED[name]
    check_random_widths(model, torch.randn(1, 3, size, size), seeds=(0, 1, 2))
