"""Attention heads, MLP width and the residual stream as searchable widths (issue 19): golden
groups for each way the libraries write attention (tests/transformer_zoo.py), the weights and
literals that follow whole heads, bins counted in heads, FLOPs against an independent count,
slimmed models proved equal to the supernet, and a property test over random transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformer_zoo as tz
import zoo
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap
from torch import nn

import widthc
from widthc.cli import main
from widthc.ir import Layout, Segment
from widthc.passes.coupling import REWRITES
from widthc.passes.flops import count_macs
from widthc.report.analysis import print_analysis

OUT = "output of the network"
C = tz.Config()  # dim 16, 4 heads of 8, 2 key/value heads, MLP 24, depth 2

# per attention kind, per group: (channels counted, channels per counted unit, first producer)
GOLDEN = {
    "fused": [(16, 1, "embed"), (4, 8, "blocks.0.attn.qkv"), (24, 1, "blocks.0.mlp.fc1")],
    "split": [(16, 1, "embed"), (4, 8, "blocks.0.attn.q_proj"), (24, 1, "blocks.0.mlp.fc1")],
    # heads merged back to the width read from the input (`reshape(B, N, C)`): that size is
    # rewritten per width, so the heads need not keep the residual stream's channels
    "fused_width": [(32, 1, "embed"), (4, 8, "blocks.0.attn.qkv"), (24, 1, "blocks.0.mlp.fc1")],
    # a key/value head and the two query heads it serves shrink together: 2 units of 2 x 8
    "gqa": [(16, 1, "embed"), (2, 16, "blocks.0.attn.q_proj"), (24, 1, "blocks.0.mlp.fc1")],
    "gqa_sdpa": [(16, 1, "embed"), (2, 16, "blocks.0.attn.q_proj"), (24, 1, "blocks.0.mlp.fc1")],
    # SDPA's mask, a bias per head, follows the heads (its parameter is sliced with them)
    "fused_bias": [(16, 1, "embed"), (4, 8, "blocks.0.attn.qkv"), (24, 1, "blocks.0.mlp.fc1")],
    "conv1d": [(16, 1, "embed"), (4, 8, "addmm"), (24, 1, "blocks.0.mlp.fc1")],
    # nn.MultiheadAttention computes head_dim from the query's width: the residual stream and
    # every block's heads are one group, counted in heads of 8 channels
    "mha": [(4, 8, "embed"), (24, 1, "blocks.0.mlp.fc1"), (24, 1, "blocks.1.mlp.fc1")],
    # EfficientViT: a grouped conv with one group per q, k or v of a head keeps or removes whole
    # groups, so that the rows of (q, k, v) of a head (4 heads of 3 x 8) follow the heads
    "lite": [(16, 1, "embed"), (4, 24, "blocks.0.attn.qkv"), (24, 1, "blocks.0.mlp.fc1")],
    # VOLO: the values' view (heads, C // heads, k x k) and the weights' (heads, k x k, k x k)
    # are both read heads first, so the attention matmul joins their heads (the residual
    # stream is cut in 4 equal pieces by `C // num_heads`, as in VOLO)
    "outlook": [(8, 1, "embed"), (4, 8, "blocks.0.attn.v"), (24, 1, "blocks.0.mlp.fc1")],
}


def _lay(*segments) -> Layout:
    return Layout(tuple(Segment(*s) for s in segments))


def _compile(attention: str, **kw):
    if attention in tz.SAME_WIDTH:
        kw.setdefault("dim", C.heads * C.head_dim)
    model, inputs = tz.model(tz.Config(attention=attention, **kw))
    return widthc.compile(model, inputs), model, inputs


@pytest.mark.parametrize("attention", sorted(GOLDEN))
def test_golden_head_groups(attention):
    program, _, _ = _compile(attention)
    got = [(g.n, g.unit, g.producers[0]) for g in program.groups]
    assert got[: len(GOLDEN[attention])] == GOLDEN[attention], got
    head = program.groups[-1]
    assert head.producers == ("head",) and any(r.why == OUT for r in head.frozen)
    assert all(g.searchable for g in program.groups[:-1]), [g.frozen for g in program.groups]


def test_a_grouped_conv_per_q_k_v_of_a_head_keeps_or_removes_whole_groups():
    """EfficientViT's aggregation conv (groups = 3 x heads) follows the heads: its groups shrink
    with them, each group's head_dim channels stay; an ordinary grouped conv (ResNeXt) still
    shrinks in equal blocks."""
    program, model, inputs = _compile("lite")
    heads = program.groups[1]
    assert heads.producers == ("blocks.0.attn.qkv", "blocks.0.attn.aggreg.1")
    assert (heads.n, heads.unit, heads.blocks) == (4, 24, 1)
    weight = program.param_dims["blocks.0.attn.aggreg.1.weight"]
    assert weight == {0: _lay((heads.id, 4, 24))}  # dim 1: a group's 8 input channels stay
    choice = widthc.WidthChoice.of({heads.id: 3})
    conv = widthc.slim(program, choice).get_submodule("blocks.0.attn.aggreg.1")
    assert (conv.groups, conv.in_channels, conv.out_channels) == (9, 72, 72)
    assert conv.weight.shape == (72, 8, 1)
    grouped = widthc.compile(*zoo.small_model("grouped"))
    assert sorted(g.blocks for g in grouped.searchable) == [1, 1, 4, 4]


def test_outlook_attention_weights_and_values_share_their_heads():
    """VOLO's two views are read heads first (a second walk: read as a fused qkv's pieces, the
    heads met at the attention matmul froze both): a head's k^4 weights and its values go."""
    program, model, inputs = _compile("outlook")
    heads = program.groups[1]
    assert heads.producers == ("blocks.0.attn.v", "blocks.0.attn.attn") and heads.searchable
    assert program.param_dims["blocks.0.attn.attn.weight"][0] == _lay((heads.id, 4, 81))
    small = widthc.slim(program, widthc.WidthChoice.of({heads.id: 3}))
    assert small.get_submodule("blocks.0.attn.attn").out_features == 3 * 81
    assert small.get_submodule("blocks.0.attn.v").out_features == 3 * 8


def test_fused_qkv_rows_are_three_pieces_of_the_same_heads():
    program, _, _ = _compile("fused")
    heads = _lay((1, 4, 8))
    assert program.param_dims["blocks.0.attn.qkv.weight"] == {
        0: _lay(*[(1, 4, 8)] * 3),
        1: _lay((0, 16, 1)),
    }
    assert program.param_dims["blocks.0.attn.proj.weight"] == {0: _lay((0, 16, 1)), 1: heads}
    # the literal head count of reshape(B, N, 3, heads, head_dim) and the width of
    # reshape(B, N, heads * head_dim) follow the kept heads; 3 and head_dim stay
    reshapes = [n for n in program.gm.graph.nodes if n.target == "reshape"][:2]
    assert [p for p, _ in reshapes[0].meta[REWRITES]] == [("args", 4)]
    assert [p for p, _ in reshapes[1].meta[REWRITES]] == [("args", 3)]


def test_sdpa_mask_heads_are_sliced_with_the_heads():
    program, _, _ = _compile("fused_bias")
    assert program.param_dims["blocks.0.attn.bias"] == {1: _lay((1, 4, 1))}


def test_grouped_query_heads_follow_their_key_value_head():
    program, _, _ = _compile("gqa")
    dims = program.param_dims
    assert dims["blocks.0.attn.q_proj.weight"][0] == _lay((1, 2, 16))  # 2 query heads each
    assert dims["blocks.0.attn.k_proj.weight"][0] == _lay((1, 2, 8))
    assert dims["blocks.0.attn.o_proj.weight"][1] == _lay((1, 2, 16))
    choice = widthc.WidthChoice.of({1: 1})  # one key/value head kept: its 2 query heads too
    small = widthc.slim(program, choice)
    assert small.get_submodule("blocks.0.attn.q_proj").out_features == 16
    assert small.get_submodule("blocks.0.attn.k_proj").out_features == 8


def test_multihead_attention_module_is_resized_in_heads():
    program, _, inputs = _compile("mha")
    choice = widthc.WidthChoice.of({0: 1})  # one head of 8: the residual stream keeps 8 too
    small = widthc.slim(program, choice)
    mha = small.get_submodule("blocks.0.attn.mha")
    assert (mha.embed_dim, mha.num_heads, mha.head_dim) == (8, 1, 8)
    assert tuple(mha.in_proj_weight.shape) == (24, 8)
    assert small(*inputs).shape == (2, 3)


@pytest.mark.parametrize("shrunk", ["residual", "heads"])
def test_a_width_read_from_the_input_is_rewritten_per_width(shrunk):
    """`reshape(B, N, C)` with C read from the block's input: the slimmed graph holds the kept
    heads' width there, whether the residual stream shrinks and the heads keep theirs or the
    other way round."""
    program, _, inputs = _compile("fused_width")
    gid = 0 if shrunk == "residual" else 1
    choice = widthc.WidthChoice.of({gid: 2})
    small = widthc.slim(program, choice)
    net = widthc.supernet(program).eval()
    net.set_choice(choice)
    with torch.no_grad():
        torch.testing.assert_close(small(*inputs), net(*inputs), rtol=1e-5, atol=1e-6)
    assert widthc.compile(small, inputs).flops() == program.flops(choice)


def test_shifted_window_transformer_is_searchable_in_heads():
    """Swin as timm writes it: torch.roll over the spatial dims, windows partitioned and
    reversed, head_dim read as C // heads (pinned, the dim keeps its width), a relative position
    bias table gathered per head, 2x2 patch merging flattened to 4C (the channels four times,
    block-major). Every group but the classifier's is searchable; slim equals the supernet."""
    model = randomize_swin(tz.Swin())
    x = torch.randn(2, 3, 8, 8)
    program = zoo.check_random_widths(model, x, seeds=(0, 1), onnx=False)
    assert [g.producers[0] for g in program.groups if not g.searchable] == ["head"]
    heads = [(g.n, g.unit) for g in program.groups if g.unit > 1]
    assert heads == [(2, 4), (2, 4), (4, 4)]
    table = program.param_dims["stage1.0.attn.relative_position_bias_table"]
    assert list(table) == [1]  # one column per head; the rows are addressed by the index
    merge = program.param_dims["merge.reduction.weight"][1]
    # the residual stream (cut in two equal pieces by C // heads), four times over
    assert merge == Layout(program.param_dims["stage1.0.norm1.weight"][0].segments * 4)
    # head_dim read as C // heads: pinned to its value, the heads' count follows them
    reshape = next(n for n in program.gm.graph.nodes if n.target == "reshape" and len(n.args) == 6)
    assert sorted(type(lay).__name__ for _, lay in reshape.meta[REWRITES]) == ["Layout", "int"]


def randomize_swin(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return tz.randomize(model)


@pytest.mark.parametrize("attention", tz.ATTENTIONS)
def test_slimmed_transformers_equal_the_supernet(attention):
    dim = C.heads * C.head_dim if attention in tz.SAME_WIDTH else C.dim
    model, inputs = tz.model(tz.Config(attention=attention, dim=dim, mlp="gated", norm="rms"))
    zoo.check_random_widths(model, inputs, seeds=(0,), onnx=attention in ("fused", "gqa"))


@pytest.mark.parametrize("attention", [a for a in tz.ATTENTIONS if a != "mha"])
def test_flops_with_heads_match_an_independent_count(attention):
    """FlopCounterMode (attention kernels included) on the full model and on a slimmed one:
    QK^T and AV count the kept heads only. (nn.MultiheadAttention's fused CPU path is not
    counted by FlopCounterMode, see tests/test_flops.py.)"""
    program, model, inputs = _compile(attention)
    assert program.flops() == pytest.approx(count_macs(model, inputs), rel=1e-9)
    heads = next(g for g in program.groups if g.unit > 1)
    choice = widthc.WidthChoice.of({heads.id: 1})
    small = widthc.slim(program, choice)
    assert program.flops(choice) == pytest.approx(count_macs(small, inputs), rel=1e-9)
    assert program.flops(choice) < program.flops()


def test_bins_count_whole_heads_and_leave_the_mlp_fine():
    """eq. 9 is per channel: a head of 32 channels costs as much as 32 channels and gets a bin
    of its own; it does not set the scale of every other group's bins (here it would leave the
    MLP a single bin of all its 64 channels: nothing to search)."""
    program, _, _ = _compile("fused", head_dim=32, hidden=64)
    qkv = next(g for g in program.groups if g.producers[0] == "blocks.0.attn.qkv")
    mlp = next(g for g in program.groups if g.producers[0] == "blocks.0.mlp.fc1")
    assert qkv.bins == (1, 1, 1, 1)
    per_channel = max(g.sensitivity / g.unit for g in program.searchable)
    assert mlp.bins[0] == round(per_channel / mlp.sensitivity) < mlp.n
    assert round(qkv.sensitivity / mlp.sensitivity) >= mlp.n


def test_aligned_bins_count_channels_of_whole_heads():
    """--align counts channels: heads of 32 channels are aligned to 8 and 16 already (a bin per
    head, as unaligned); to 64, two heads a bin. The MLP's bins stay multiples of the align."""
    program, _, _ = _compile("fused", head_dim=32, hidden=64)
    for align, heads in ((8, (1, 1, 1, 1)), (16, (1, 1, 1, 1)), (64, (2, 2))):
        aligned = program.rebin(program.beta, align=align)
        qkv = next(g for g in aligned.groups if g.producers[0] == "blocks.0.attn.qkv")
        mlp = next(g for g in aligned.groups if g.producers[0] == "blocks.0.mlp.fc1")
        assert qkv.bins == heads, align
        assert all(b % min(align, mlp.n) == 0 for b in mlp.bins[:-1]), (align, mlp.bins)
        uniform = program.rebin(program.beta, align=align, uniform=4)
        assert next(g for g in uniform.groups if g.unit > 1).bins == heads, align


def test_analysis_shows_heads():
    program, _, _ = _compile("fused")
    console = Console(record=True, width=200)
    print_analysis(program, "fused", console)
    assert "4 heads ×8" in console.export_text()


class _Alibi(nn.Module):
    """A head count read from a shape and used as a number (ALiBi's per-head slopes made with
    `torch.arange`): the trace cannot follow it."""

    def __init__(self):
        super().__init__()
        self.attn = tz.FusedAttention(C, sdpa=False)
        self.head = nn.Linear(C.dim, 3)

    def forward(self, x):
        B, N, _ = x.shape
        qkv = self.attn.qkv(x).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        slopes = torch.arange(1, q.shape[1] + 1, dtype=x.dtype).view(-1, 1, 1)
        attn = (q @ k.transpose(-2, -1)) * slopes
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, 32)
        return self.head(self.attn.proj(x).mean(1))


def test_a_head_count_the_trace_cannot_follow_freezes_the_heads_with_a_reason():
    model = _Alibi().eval()
    x = torch.randn(2, 6, 16)
    program = widthc.compile(model, x)
    heads = next(g for g in program.groups if "attn.qkv" in g.producers)
    assert not heads.searchable
    assert any("arithmetic" in r.why and r.node == "add" for r in heads.frozen), heads.frozen


RUNTIME_CONFIG = {"num_heads": 4}


@torch.fx.wrap
def _configured_heads(t: torch.Tensor) -> int:
    """The head count looked up in a config when the model runs (torch.fx does not enter this
    function: the trace holds its result, not the literal 4)."""
    return RUNTIME_CONFIG["num_heads"]


class _ConfigHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = tz.FusedAttention(C)
        self.head = nn.Linear(C.dim, 3)

    def forward(self, x):
        B, N, _ = x.shape
        heads = _configured_heads(x)
        qkv = self.attn.qkv(x).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(*qkv.unbind(0)).transpose(1, 2).reshape(B, N, 32)
        return self.head(self.attn.proj(x).mean(1))


def test_a_head_count_read_from_a_config_at_run_time_freezes_the_heads_with_a_reason():
    """The reshape's head count is a value of the run that reads no channels, not a literal
    widthc can rewrite (rewritten anyway, it would stop following the config, and a product
    such as `B * C` would be pinned to one batch size): the heads freeze with a reason naming
    it; the residual stream is still searched and every slimmed model is proved."""
    torch.manual_seed(0)
    program = widthc.compile(_ConfigHeads().eval(), torch.randn(2, 6, 16))
    heads = next(g for g in program.groups if "attn.qkv" in g.producers)
    assert not heads.searchable
    assert any("size computed at run time" in r.why for r in heads.frozen), heads.frozen
    assert any(g.searchable for g in program.groups)  # the residual stream
    zoo.check_random_widths(_ConfigHeads(), torch.randn(2, 6, 16), seeds=(0,), onnx=False)


class _ConvRelPos(nn.Module):
    """CoaT's convolutional relative position encoding: the values viewed as an image of
    `heads * head_dim` channels, both sizes read from their shape, and a depthwise conv."""

    def __init__(self):
        super().__init__()
        self.attn = tz.FusedAttention(C)
        self.conv = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.head = nn.Linear(C.dim, 3)

    def forward(self, x):  # 4 tokens: a 2x2 image
        B, N, _ = x.shape
        q, k, v = self.attn.qkv(x).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        _, h, _, d = v.shape
        pos = self.conv(v.transpose(-1, -2).reshape(B, h * d, 2, 2))
        y = F.scaled_dot_product_attention(q, k, v) + q * pos.reshape(B, h, d, N).transpose(2, 3)
        return self.head(self.attn.proj(y.transpose(1, 2).reshape(B, N, 32)).mean(1))


def test_heads_times_a_head_dim_read_from_a_shape_follow_the_heads():
    """`h * d` with d read from a shape: d is the same at every batch size (a second shape
    propagation at another batch says so), so the product counts the heads' channels; a batch
    size in its place would not be (tests/test_window_ops.py)."""
    torch.manual_seed(0)
    program = zoo.check_random_widths(_ConvRelPos(), torch.randn(2, 4, 16), seeds=(0,), onnx=False)
    heads = next(g for g in program.groups if "attn.qkv" in g.producers)
    assert heads.searchable and (heads.n, heads.unit) == (4, 8)


class _FixedWidthXCA(nn.Module):
    """EdgeNeXt's cross-covariance attention: the heads merged back with `reshape(B, N, C)`, C
    read from the block's input, whose width cannot shrink (here the network's input)."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, 4, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        return self.head(self.proj(y).mean(1))


def test_a_size_read_from_a_fixed_width_is_rewritten_like_a_literal():
    """C reads no channels that can shrink: computed from shapes only and the same at every
    batch size, it is a literal in effect, rewritten to the kept heads' width (EdgeNeXt), not
    a size computed at run time that would freeze the heads."""
    torch.manual_seed(0)
    program = zoo.check_random_widths(
        _FixedWidthXCA(), torch.randn(2, 5, 16), seeds=(0,), onnx=True
    )
    heads = next(g for g in program.groups if "qkv" in g.producers)
    assert heads.searchable and (heads.n, heads.unit) == (4, 4)
    small = widthc.slim(program, widthc.WidthChoice.of({heads.id: 1}))
    assert small(torch.randn(3, 5, 16)).shape == (3, 3)


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    attention=st.sampled_from(tz.ATTENTIONS),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4, 6]),
    kv_ratio=st.sampled_from([1, 2, 4]),
    hidden=st.integers(3, 20),
    depth=st.integers(1, 3),
    norm=st.sampled_from(["layer", "rms"]),
    mlp=st.sampled_from(["plain", "gated"]),
    seed=st.integers(0, 2**16),
)
def test_random_transformers(attention, heads, head_dim, kv_ratio, hidden, depth, norm, mlp, seed):
    kv_heads = max(1, heads // kv_ratio)
    dim = heads * head_dim if attention in tz.SAME_WIDTH else 5 + seed % 7
    c = tz.Config(attention, dim, heads, head_dim, kv_heads, hidden, depth, norm, mlp)
    model, inputs = tz.model(c, seed)
    program = widthc.compile(model, inputs)
    if attention != "mha":
        assert program.flops() == pytest.approx(count_macs(model, inputs), rel=1e-9)
    choice = program.random(seed)
    small = widthc.slim(program, choice)
    net = widthc.supernet(program).eval()
    net.set_choice(choice)
    with torch.no_grad():
        assert torch.allclose(small(*inputs), net(*inputs), rtol=1e-4, atol=1e-5)
    assert widthc.compile(small, inputs).flops() == program.flops(choice)


VIT = str(Path(__file__).resolve().parents[1] / "examples" / "vit_digits.py")
TINY = ["--epochs", "1", "--batch-size", "64", "--population", "4", "--generations", "1",
        "--calib-batches", "2", "--retrain-epochs", "1", *CHEAP_TUNING]  # fmt: skip


@pytest.mark.slow
def test_widthc_slim_searches_the_heads_of_a_vit_on_digits(tmp_path):
    """The whole pipeline on a ViT (3x32x32 digits, patches of 4): heads, MLP widths and the
    residual stream searched, the slimmed model proved and retrained, the report written."""
    out = tmp_path / "vit"
    res = CliRunner().invoke(
        main, ["slim", VIT, "--data", "digits", "--flops", "50%", "--out", str(out), *TINY]
    )
    assert res.exit_code == 0, res.output
    analysis = json.loads((out / "analysis.json").read_text())
    heads = [g for g in analysis["groups"] if g["searchable"] and g["unit"] > 1]
    assert [(g["channels"], g["unit"]) for g in heads] == [(4, 12)] * 3
    widths = json.loads((out / "flops-50pct" / "widths.json").read_text())
    assert widths["flops"]["after"] <= widths["budget"]["flops"]
    assert widths["checks"]["flops_counted"] == widths["flops"]["after"]
    assert widths["checks"]["equivalence_rel_error"] <= 1e-5
    small = widthc.load(out / "flops-50pct" / "slim.pt")
    for g in (g for g in widths["groups"] if g["unit"] > 1):
        qkv = small.get_submodule(g["name"])  # every kept head: q, k and v of 12 channels
        assert qkv.out_features == 3 * 12 * g["channels_after"]
    report = (out / "report.md").read_text()
    assert "widths.png" in report and (out / "widths.png").stat().st_size > 0
    assert (out / "flops-50pct" / "metrics.json").exists()
