"""Channel coupling: golden groups for every row of DESIGN §4's table, layouts of the weights
that follow them, FLOPs and bins, and a property test over random small architectures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import widthc
from widthc.ir import Layout, Segment
from widthc.passes import bins as bins_pass
from widthc.passes.coupling import REWRITES
from widthc.passes.flops import count_macs
from widthc.passes.slim import slim
from widthc.verify import zeroed_reference

OUT = "output of the network"

# per model, per group id: (channels, producers, None if searchable else a reason it must give)
GOLDEN = {
    "chain": [
        (16, ("features.0.0",), None),
        (32, ("features.1.0",), None),
        (24, ("features.2.0",), None),
        (10, ("fc",), OUT),
    ],
    "residual": [  # one group for the whole residual stream, one per block interior
        (16, ("stem.0", "a2.0", "b2.0"), None),
        (12, ("a1.0",), None),
        (20, ("b1.0",), None),
        (32, ("down.0", "c.0"), None),
        (10, ("fc",), OUT),
    ],
    "depthwise": [  # the depthwise conv shares its input's group; its x2 multiplier repeats it
        (16, ("stem.0", "project.0"), None),
        (48, ("expand.0",), None),
        (10, ("head",), OUT),
    ],
    "grouped": [  # a grouped conv's input and output shrink alike in each of its 4 blocks
        (16, ("a.0",), None),
        (32, ("b.0",), None),
        (32, ("g.0",), None),
        (24, ("c.0",), None),
        (10, ("fc",), OUT),
    ],
    "se_conv": [  # the gate's producer joins the gated features' group
        (24, ("stem.0", "expand"), None),
        (6, ("reduce",), None),
        (16, ("out.0",), None),
        (10, ("fc",), OUT),
    ],
    "se_linear": [
        (24, ("stem.0", "fc2"), None),
        (8, ("fc1",), None),
        (16, ("out.0",), None),
        (10, ("fc",), OUT),
    ],
    "concat": [  # concatenation is a composite layout, not a union
        (16, ("stem.0",), None),
        (8, ("b1.0",), None),
        (12, ("b2.0",), None),
        (20, ("mix.0",), None),
        (10, ("fc",), OUT),
    ],
    "chunk_split": [  # the GLU's halves: parts of one producer that multiply (one group of
        # 16 channels kept alike in both halves); a split on concat boundaries inverts it
        (16, ("stem.0",), None),
        (16, ("glu",), None),
        (8, ("left.0",), None),
        (8, ("right.0",), None),
        (10, ("fc",), OUT),
    ],
    "flatten_linear": [
        (8, ("features.0.0",), None),
        (16, ("features.2.0",), None),
        (32, ("fc1",), None),
        (10, ("fc2",), OUT),
    ],
    "layernorm_mlp": [
        (32, ("embed", "fc2"), None),
        (64, ("fc1",), None),
        (5, ("head",), OUT),
    ],
    "channel_shuffle": [  # 4 equal pieces of a.0's channels that keep the same channels
        (4, ("a.0",), None),
        (16, ("b.0",), None),
        (10, ("fc",), OUT),
    ],
    "unknown_op": [
        (16, ("a.0",), None),
        (16, ("b.0",), "touches unknown op `torch.cumsum`"),
        (8, ("c.0",), None),
        (10, ("fc",), OUT),
    ],
    "multi_io": [  # the broadcast add of a Linear over N x C x 1 x 1 couples it to the conv
        (16, ("img.0", "aux"), None),
        (24, ("mid.0",), None),
        (10, ("cls",), OUT),
        (2, ("seg",), OUT),
    ],
}


def _compile(name):
    model, inputs = zoo.small_model(name)
    return widthc.compile(model, inputs), model, inputs


@pytest.mark.parametrize("name", sorted(zoo.SMALL))
def test_golden_groups(name):
    program, _, _ = _compile(name)
    got = [
        (g.n, g.producers, None if g.searchable else [r.why for r in g.frozen])
        for g in program.groups
    ]
    assert len(got) == len(GOLDEN[name]), got
    for (n, producers, reasons), (want_n, want_producers, want_reason) in zip(got, GOLDEN[name]):
        assert (n, producers) == (want_n, want_producers), got
        if want_reason is None:
            assert reasons is None, f"expected searchable, frozen because {reasons}"
        else:
            assert reasons is not None and any(want_reason in r for r in reasons), reasons


def _lay(*segments):
    return Layout(tuple(Segment(*s) for s in segments))


def test_weights_follow_composite_layouts():
    program, _, _ = _compile("concat")
    # the batch norm after the concat slices its parameters by all three groups in order
    concat = _lay((0, 16, 1), (1, 8, 1), (2, 12, 1))
    for p in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert program.param_dims[p] == {0: concat}
    assert program.param_dims["mix.0.weight"] == {0: _lay((3, 20, 1)), 1: concat}


def test_flatten_repeats_each_channel_over_its_pixels():
    program, _, _ = _compile("flatten_linear")
    assert program.param_dims["fc1.weight"][1] == _lay((1, 16, 16))  # 16 channels x 4x4 pixels
    view = next(n for n in program.gm.graph.nodes if n.target == "view")
    assert [path for path, _ in view.meta[REWRITES]] == [("args", 2)]  # the literal 16*4*4


def test_depthwise_multiplier_repeats_channels():
    program, _, _ = _compile("depthwise")
    assert program.param_dims["dw_mult.weight"] == {0: _lay((0, 16, 2))}
    assert program.param_dims["head.weight"][1] == _lay((0, 16, 2))
    assert program.param_dims["dw.0.weight"] == {0: _lay((1, 48, 1))}  # no input dim: depthwise


def test_grouped_conv_shrinks_in_blocks():
    program, _, _ = _compile("grouped")
    assert [g.blocks for g in program.groups] == [1, 4, 4, 1, 1]
    assert all(sum(g.bins) == g.block_size for g in program.groups)
    # output channels: 4 blocks of 8; input channels per conv group: one block of the input
    assert program.param_dims["g.0.weight"] == {0: _lay((2, 8, 1, 4)), 1: _lay((1, 8, 1, 1))}
    assert program.param_dims["b.1.weight"] == {0: _lay((1, 8, 1, 4))}
    choice = widthc.WidthChoice.of({1: 2, 2: 1})  # keep bins [0, 2) and [0, 1) of each block
    g1 = program.groups[1]
    kept = choice.indices(g1)
    assert len(kept) == choice.channels(g1) == 4 * g1.channels(range(2))
    assert kept.tolist() == [b * 8 + i for b in range(4) for i in range(g1.channels(range(2)))]


def test_split_on_concat_boundaries_is_reordered_by_the_concat_after_it():
    program, _, _ = _compile("chunk_split")
    assert program.param_dims["fc.weight"][1] == _lay((3, 8, 1), (2, 8, 1))


def test_reasons_name_the_node_and_op():
    program, _, _ = _compile("unknown_op")
    (reason,) = program.groups[1].frozen
    assert (reason.node, reason.op) == ("cumsum", "torch.cumsum")
    assert "at node `cumsum`" in str(reason)


def test_channel_mixing_ops_are_recorded():
    program, _, _ = _compile("layernorm_mlp")
    assert program.groups[0].mixing == ("norm", "norm2")
    assert program.groups[1].mixing == ()


def test_group_ids_are_deterministic():
    a, _, _ = _compile("residual")
    b, _, _ = _compile("residual")
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize("name", sorted(zoo.SMALL))
def test_flops_match_an_independent_count(name):
    program, _, inputs = _compile(name)
    assert program.flops() == count_macs(program.gm, inputs)
    assert program.params() == sum(p.numel() for p in program.gm.parameters())


def test_sensitivity_is_eq7_on_a_chain():
    program, _, _ = _compile("chain")
    # group 1: output of features.1.0 (16->32, 3x3, stride 2: 8x8 out), input of features.2.0
    # (32->24, 3x3, 8x8); per sample. eq. 7: FLOPs(n_prev, 1) + FLOPs(1, n_next)
    expected = 16 * 1 * 9 * 64 + 1 * 24 * 9 * 64
    assert program.groups[1].sensitivity == expected


def test_bins_follow_eq9():
    program, _, _ = _compile("residual")
    eps = {g.id: g.sensitivity for g in program.searchable}
    top = max(eps.values())
    for beta in (1.0, 0.5, 2.0):
        p = program.rebin(beta)
        for g in p.searchable:
            size = int(min(g.n, max(1, round(beta * top / eps[g.id]))))
            assert g.bins[:-1] == (size,) * (len(g.bins) - 1)
            assert 0 < g.bins[-1] <= size and sum(g.bins) == g.n
        for g in p.groups:
            if not g.searchable:
                assert g.bins == (g.n,)
    assert program.bins == {g.id: g.bins for g in program.searchable}


def test_aligned_bins_keep_multiples_of_eight_channels():
    model, inputs = zoo.small_model("grouped")
    program = widthc.compile(model, inputs, align=8)
    for g in program.searchable:
        multiple = 8 // math.gcd(8, g.blocks)  # per block: 4 blocks of 2 make 8
        starts = g.bin_starts()[1:-1]
        assert all(s % multiple == 0 for s in starts), (g.id, g.bins)
        assert sum(g.bins) == g.block_size
    assert program.rebin(1.0, align=1).align == 1 and program.align == 8
    with pytest.raises(widthc.WidthcError, match="align"):
        widthc.compile(model, inputs, align=0)


def test_multi_stage_schedule_is_eq10():
    sched = bins_pass.stage_schedule(300.0, 100.0, stages=4, beta=1.0, alpha=2.0)
    assert sched == [(250.0, 1.0), (200.0, 0.5), (150.0, 0.25), (100.0, 0.125)]


# --- property test: random small architectures ---------------------------------------------


class _Block(nn.Module):
    def __init__(self, kind: str, c: int, width: int):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.f = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
            )
            self.out = width
        elif kind == "res":
            self.f = nn.Sequential(
                nn.Conv2d(c, width, 1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, c, 3, padding=1),
            )
            self.out = c
        elif kind == "dw":
            self.f = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU6()
            )
            self.out = c
        elif kind == "se":
            self.f = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(c, width, 1),
                nn.ReLU(),
                nn.Conv2d(width, c, 1),
                nn.Sigmoid(),
            )
            self.out = c
        elif kind == "cat":
            self.f = nn.Conv2d(c, width, 1)
            self.out = c + width
        elif kind == "grouped":  # ResNeXt-style bottleneck around a grouped 3x3 conv
            self.f = nn.Sequential(
                nn.Conv2d(c, 4 * width, 1), nn.BatchNorm2d(4 * width), nn.ReLU(),
                nn.Conv2d(4 * width, 4 * width, 3, padding=1, groups=4), nn.ReLU(),
                nn.Conv2d(4 * width, c, 1),
            )  # fmt: skip
            self.out = c
        elif kind == "pool":
            self.f = nn.MaxPool2d(2)
            self.out = c
        elif kind == "attn":  # a hybrid's attention over the positions: 2 heads of `width`
            self.f = nn.ModuleDict(
                {"qkv": nn.Linear(c, 6 * width), "proj": nn.Linear(2 * width, c)}
            )
            self.out = c

    def forward(self, x):
        if self.kind == "attn":
            B, C, H, W = x.shape
            qkv = self.f["qkv"](x.flatten(2).transpose(1, 2)).reshape(B, H * W, 3, 2, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, -1)
            return x + self.f["proj"](a).transpose(1, 2).reshape(B, C, H, W)
        if self.kind in ("res", "grouped"):
            return x + self.f(x)
        if self.kind == "se":
            return x * self.f(x)
        if self.kind == "cat":
            return torch.cat([x, self.f(x)], 1)
        return self.f(x)


class _RandomNet(nn.Module):
    def __init__(self, kinds, widths, flatten: bool):
        super().__init__()
        c, size = 6, 8
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        blocks = []
        for kind, w in zip(kinds, widths):
            if kind == "pool" and size <= 2:
                kind = "conv"
            blocks.append(_Block(kind, c, w))
            c = blocks[-1].out
            size = size // 2 if kind == "pool" else size
        self.blocks = nn.ModuleList(blocks)
        self.flatten = flatten
        self.head = nn.Linear(c * size * size if flatten else c, 5)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        x = torch.flatten(x, 1) if self.flatten else x.mean((2, 3))
        return self.head(x)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    kinds=st.lists(
        st.sampled_from(["conv", "res", "dw", "se", "cat", "pool", "grouped", "attn"]),
        min_size=1,
        max_size=6,
    ),
    widths=st.lists(st.integers(2, 12), min_size=6, max_size=6),
    flatten=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_architectures(kinds, widths, flatten, seed):
    torch.manual_seed(seed)
    model = _RandomNet(kinds, widths, flatten).eval()
    zoo.randomize_norms(model, seed)
    x = torch.randn(2, 3, 8, 8)
    program = widthc.compile(model, x)
    assert program.flops() == count_macs(program.gm, (x,))
    choice = program.random(seed)
    small = slim(program, choice)
    with torch.no_grad():
        out, ref = small(x), zeroed_reference(program, choice)(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert widthc.compile(small, x).flops() == program.flops(choice)


def test_one_channel_dim_flattened_next_to_the_batch():
    """(N, 1, H, W) -> (N, H*W): the one channel must not be taken for the batch dim."""
    model = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Flatten(), nn.Linear(64, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    program = widthc.compile(model, x)
    assert program.flops() == count_macs(program.gm, (x,))
    flatten = next(n for n in program.gm.graph.nodes if n.op == "call_module" and n.target == "1")
    assert flatten.meta["widthc.layouts"] == (None, None)
