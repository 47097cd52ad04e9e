"""Patterns of other people's models that crashed or froze too much (issue 17), one small model
each: every model slims at random widths and passes widthc.verify (zoo.check_random_widths:
equal to the reference, FLOPs recounted exactly, ONNX parity, equal to the supernet); where a
pattern cannot be followed, the group freezes with a reason that names it."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations
from zoo import check_random_widths, reasons, searchable

import widthc
from widthc.verify import verify

# --- 1. a head reshape written as a tuple sum: the literal follows the width -------------------


@torch.fx.wrap
def _heads_shape(lead, heads: int, dim: int):
    """A shape the tracer cannot see into (one traced value holding every size)."""
    return lead + (heads, dim)


class _TupleSumAttention(nn.Module):
    """PVT's `t.view(t.size()[:-1] + (heads, dim))`; `opaque` builds the shape in a function
    torch.fx does not enter."""

    def __init__(self, opaque: bool = False):
        super().__init__()
        self.opaque = opaque
        self.q, self.k, self.v = nn.Linear(16, 32), nn.Linear(16, 32), nn.Linear(16, 32)
        self.out = nn.Linear(32, 16)

    def heads(self, t):
        shape = _heads_shape(t.size()[:-1], 2, 16) if self.opaque else t.size()[:-1] + (2, 16)
        return t.view(shape).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        a = (q @ k.transpose(-1, -2) * 0.25).softmax(-1) @ v
        return self.out(a.permute(0, 2, 1, 3).flatten(2))


def test_a_head_reshape_written_as_a_tuple_sum_follows_the_width():
    torch.manual_seed(0)
    program = check_random_widths(_TupleSumAttention(), torch.randn(1, 5, 16))
    assert searchable(program, "q") and searchable(program, "k")
    small = widthc.slim(program, program.uniform(ratio=0.5))
    view = next(n for n in small.graph.nodes if n.target == "view")
    # heads are the unit (issue 19): head_dim stays 16, so half the width is one head of 16 and
    # the head-count literal 2 is what follows the width
    assert view.args[1][-2:] == (1, 16)


def test_a_shape_computed_at_run_time_freezes_the_channels_it_sizes():
    torch.manual_seed(0)
    program = widthc.compile(_TupleSumAttention(opaque=True).eval(), torch.randn(1, 5, 16))
    assert not searchable(program, "q")
    assert "reshape to a size computed at run time" in reasons(program, "q")
    choice = program.uniform(flops=program.flops())
    assert verify(program, choice, widthc.slim(program, choice)).flops_error == 0


def test_a_slimmed_model_that_does_not_run_is_refused_in_one_sentence():
    torch.manual_seed(0)
    program = widthc.compile(_TupleSumAttention().eval(), torch.randn(1, 5, 16))
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice)
    small.get_submodule("out").weight = nn.Parameter(torch.randn(16, 3))  # broken on purpose
    with pytest.raises(widthc.WidthcError) as e:
        verify(program, choice, small)
    message = str(e.value)
    assert "does not run on the example input at node `out`" in message and "\n" not in message


# --- 2. split sizes read from a shape (FocalNet's modulation) ---------------------------------


class _Modulation(nn.Module):
    """`torch.split(x, (C, C, levels + 1), 1)` with C read from the input's shape."""

    def __init__(self, dim: int = 16, levels: int = 2):
        super().__init__()
        self.levels = levels
        self.proj_in = nn.Linear(dim, 2 * dim + levels + 1)
        self.ctx = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x):  # x: N x H x W x C
        c = x.shape[-1]
        q, ctx, gates = torch.split(self.proj_in(x).permute(0, 3, 1, 2), (c, c, self.levels + 1), 1)
        out = q * self.ctx(ctx) * gates[:, :1]
        return self.proj_out(out.permute(0, 2, 3, 1))


class _FocalBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(3, 16)
        self.mod = _Modulation()
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + self.mod(h)).mean((1, 2))


def test_split_sizes_read_from_a_shape_follow_their_channels():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 3)
    program = check_random_widths(_FocalBlock(), x)
    assert searchable(program, "stem")
    net = widthc.supernet(program).eval()  # the full width runs too (it raised here before)
    with torch.no_grad():
        assert torch.equal(net(x), program.gm(x))


# --- 3. hand-written per-channel weight statistics ----------------------------------------------


class _StandardisedConv(nn.Conv2d):
    """Weight standardisation written by hand, over each filter's non-channel dims."""

    def __init__(self, *args, stat: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.stat = stat

    def forward(self, x):
        w, dims = self.weight, (1, 2, 3)
        if self.stat == "var":
            spread = torch.sqrt(w.var(dim=dims, keepdim=True, unbiased=False) + 1e-5)
        elif self.stat == "std":
            spread = torch.std(w, dims, keepdim=True) + 1e-5
        else:
            spread = w.norm(2, dim=dims, keepdim=True)
        w = (w - w.mean(dim=dims, keepdim=True)) / spread
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("stat", ["var", "std", "norm"])
def test_per_channel_weight_statistics_keep_the_channel_layout(stat):
    torch.manual_seed(0)
    model = nn.Sequential(
        _StandardisedConv(3, 16, 3, padding=1, stat=stat), nn.ReLU(),
        _StandardisedConv(16, 24, 3, stat=stat), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(24, 2),
    )  # fmt: skip
    program = check_random_widths(model, torch.randn(1, 3, 8, 8))
    first, second = (
        next(g for g in program.groups if p in g.producers) for p in ("conv2d", "conv2d_1")
    )
    assert first.searchable and second.searchable
    # the second conv's statistics run over its input channels (the first group): mixing there
    assert first.mixing and not second.mixing
    assert {0, 1} <= set(program.param_dims["2.weight"])


# --- 4. fused projections sliced by indexing ---------------------------------------------------


class _FusedQKV(nn.Module):
    """Phi-3: one projection, sliced into query, key and value; a fused gate/up split by slicing."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.out = nn.Linear(16, 16)
        self.gate_up = nn.Linear(16, 64)
        self.down = nn.Linear(32, 16)

    def forward(self, x):
        qkv = self.qkv(x)
        q, k, v = qkv[..., :16], qkv[..., 16:32], qkv[..., 32:]
        x = x + self.out(((q @ k.transpose(-1, -2)) * 0.25).softmax(-1) @ v)
        gate_up = self.gate_up(x)
        half = gate_up.shape[-1] // 2
        return x + self.down(F.silu(gate_up[..., :half]) * gate_up[..., half:])


def test_slices_of_a_fused_projection_are_parts_that_shrink_on_their_own():
    torch.manual_seed(0)
    program = check_random_widths(_FusedQKV(), torch.randn(1, 5, 16))
    parts = [g for g in program.groups if "qkv" in g.producers]
    assert len(parts) == 2 and all(g.searchable for g in parts)  # query+key (one), value
    assert sorted(g.n for g in parts) == [16, 16]
    assert searchable(program, "gate_up")
    small = widthc.slim(program, program.uniform(ratio=0.5))
    ends = [
        (i.start, i.stop)
        for n in small.graph.nodes
        if n.target is operator.getitem and isinstance(n.args[1], tuple)
        for i in n.args[1][-1:]
        if isinstance(i, slice) and isinstance(i.stop, (int, type(None)))
    ]
    assert ends[:3] == [(None, 8), (8, 16), (16, None)]  # query, key, value of 8 channels each


# --- 5. an in-place slice update ---------------------------------------------------------------


class _BoxUpdate(nn.Module):
    """DETR-style: `boxes[..., :2] += reference` on a fixed-width tensor of 4 coordinates."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 32)
        self.box = nn.Linear(32, 4)
        self.ref = nn.Linear(32, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        boxes = self.box(h)
        boxes[..., :2] += self.ref(h)
        return boxes.sigmoid()


def test_an_in_place_slice_update_is_an_ordinary_op():
    torch.manual_seed(0)
    program = check_random_widths(_BoxUpdate(), torch.randn(1, 5, 8))
    assert searchable(program, "body")
    assert not program.traced.auto_leaves


# --- 6. weight norm over another dim: the FLOPs recount counts the conv -------------------------


def test_weight_norm_over_the_kernel_dim_counts_its_flops_after_slimming():
    """Wav2Vec2's positional conv: weight norm over dim 2, a grouped conv."""
    torch.manual_seed(0)
    conv = parametrizations.weight_norm(nn.Conv1d(16, 16, 5, padding=2, groups=4), dim=2)
    model = nn.Sequential(
        nn.Conv1d(3, 16, 3), nn.ReLU(), conv, nn.ReLU(), nn.Conv1d(16, 12, 1), nn.ReLU(),
        nn.Conv1d(12, 8, 1),
    )  # fmt: skip
    program = check_random_widths(model, torch.randn(1, 3, 20))
    assert not searchable(program, "2") and searchable(program, "4")
    assert "weight norm over dim=2 normalises across channels" in reasons(program, "2")
