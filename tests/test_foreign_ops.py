"""Ops and patterns of other people's architectures (issue 8, "Found"): each model here slims at
random widths to half its FLOPs and passes widthc.verify (equal to the zeroed-weights reference
or the supernet, FLOPs recounted exactly, ONNX parity), and the supernet computes the same
outputs as the slimmed model; where an op cannot follow the channels, the group is frozen
with a reason that names it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations
from zoo import check_random_widths, reasons, searchable

import widthc
from widthc.verify import verify

# --- 1. a functional depthwise conv whose groups come from a module attribute -----------------


def test_blurpool_groups_follow_the_width():
    timm = pytest.importorskip("timm")
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        timm.layers.BlurPool2d(16, filt_size=3, stride=2), nn.Conv2d(16, 8, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    x = torch.randn(1, 3, 16, 16)
    program = check_random_widths(model, x)
    assert searchable(program, "0")
    small = widthc.slim(program, program.uniform(ratio=0.5))
    (conv,) = [n for n in small.graph.nodes if n.target in (torch.conv2d, F.conv2d)]
    filt = small.get_submodule("3").filt
    assert conv.kwargs["groups"] == filt.shape[0] < 16


# --- 2. weight norm: the stored tensors are sliced, a norm across channels freezes -------------


def _weight_normed(kind: str, dim: int) -> nn.Module:
    conv = nn.Conv2d(8, 16, 3, padding=1)
    if kind == "parametrization":
        conv = parametrizations.weight_norm(conv, dim=dim)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the old hook is deprecated
            conv = nn.utils.weight_norm(conv, dim=dim)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), conv, nn.ReLU(), nn.Conv2d(16, 8, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["parametrization", "hook"])
def test_weight_norm_slices_its_stored_tensors(kind, tmp_path):
    model, x = _weight_normed(kind, dim=0), torch.randn(1, 3, 8, 8)
    program = check_random_widths(model, x)
    assert searchable(program, "0") and searchable(program, "2")
    stored = (
        ("2.parametrizations.weight.original0", "2.parametrizations.weight.original1")
        if kind == "parametrization"
        else ("2.weight_g", "2.weight_v")
    )
    assert set(program.param_dims[stored[0]]) == {0}  # g: one scale per output channel
    assert set(program.param_dims[stored[1]]) == {0, 1}  # v: output and input channels
    assert "2.weight" not in program.param_dims
    full = widthc.slim(program, program.full())
    with torch.no_grad():
        assert torch.equal(full(x), model(x))
    small = widthc.slim(program, program.uniform(ratio=0.5))
    conv = small.get_submodule("2")
    assert conv.weight.shape == (conv.out_channels, conv.in_channels, 3, 3)
    assert conv.out_channels < 16 and conv.in_channels < 8
    widthc.save(small, tmp_path / "slim.pt")  # the weight norm is described and put back
    loaded = widthc.load(tmp_path / "slim.pt")
    assert sorted(loaded.state_dict()) == sorted(small.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


@pytest.mark.parametrize("kind", ["parametrization", "hook"])
def test_weight_norm_across_channels_freezes_them(kind):
    program = widthc.compile(_weight_normed(kind, dim=2).eval(), torch.randn(1, 3, 8, 8))
    for producer in ("0", "2"):  # the input and the output channels of the normed conv
        assert reasons(program, producer) == ["weight norm over dim=2 normalises across channels"]
    assert searchable(program, "4")


@pytest.mark.parametrize(
    "norm, why",
    [
        (parametrizations.spectral_norm, "parametrization (_SpectralNorm) of `weight`"),
        (nn.utils.spectral_norm, "spectral norm of `weight`"),
    ],
)
def test_other_weight_parametrizations_freeze_without_running(norm, why):
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), norm(nn.Linear(8, 8)), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(),
        nn.Linear(6, 2),
    ).train()  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    program = widthc.compile(model, torch.randn(2, 4))
    assert reasons(program, "0") == reasons(program, "2") == [why]
    assert searchable(program, "4")
    # the analysis does not run the power iteration (it would update the model's buffers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    choice = program.uniform(ratio=0.5)
    verify(program, choice, widthc.slim(program, choice), check_onnx=False)


# --- 4. structured return values keep their channel layout --------------------------------------


class _Ranked(nn.Module):
    """A conv's output through max / min / topk / sort / median along the spatial dim."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv, self.mix, self.fc = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv1d(8, 6, 1),
            nn.Linear(6, 2),
        )

    def forward(self, x):
        y = self.conv(x).flatten(2)
        if self.kind == "max":
            y = y.max(dim=-1).values * 0.5
        elif self.kind == "torch.max":
            y = torch.max(y, -1)[0] * 0.5
        elif self.kind == "min":
            y = y.min(-1, keepdim=True).values[..., 0] + 1
        elif self.kind == "median":
            y = torch.median(y, dim=2).values
        y = y[..., None]
        if self.kind == "topk":
            y = y.squeeze(-1).topk(3, dim=-1).values * 0.5
        elif self.kind == "sort":
            y = y.squeeze(-1).sort(dim=-1, descending=True).values[..., :4]
        return self.fc(self.mix(y).mean(-1))


@pytest.mark.parametrize("kind", ["max", "torch.max", "min", "median", "topk", "sort"])
def test_values_of_a_reduction_keep_their_channels(kind):
    # (ONNX has no median)
    program = check_random_widths(_Ranked(kind), torch.randn(1, 3, 5, 5), onnx=kind != "median")
    assert searchable(program, "conv") and searchable(program, "mix")


def test_ranking_along_the_channel_dim_freezes_it():
    class TopkChannels(_Ranked):
        def forward(self, x):
            y = self.conv(x).flatten(2).topk(6, dim=1).values
            return self.fc(y.mean(-1))

    program = widthc.compile(TopkChannels("topk").eval(), torch.randn(1, 3, 5, 5))
    assert reasons(program, "conv") == ["sorting along the channel dim ranks the channels"]


def test_max_over_channels_is_a_mixing_reduction():
    class ChannelMax(_Ranked):  # CBAM's spatial attention: the max over channels
        def forward(self, x):
            y = self.conv(x)
            y = y * torch.sigmoid(torch.max(y, 1, keepdim=True)[0])
            return self.fc(self.mix(y.flatten(2)).mean(-1))

    program = check_random_widths(ChannelMax("max"), torch.randn(1, 3, 5, 5))
    assert next(g for g in program.groups if "conv" in g.producers).mixing == ("max_1",)


def test_unknown_structured_value_freezes_instead_of_failing():
    class Pair(nn.Module):  # an unknown op returning a namedtuple-like value
        def forward(self, x):
            return torch.linalg.qr(x)

    class UsesPair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.pair, self.b = nn.Linear(4, 4), Pair(), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.pair(self.a(x)).Q * 2.0)

    program = widthc.compile(UsesPair(), torch.randn(4, 4), leaves=[Pair])
    assert reasons(program, "a") == ["touches unknown op `Pair`"]


class _Encoder(nn.Module):
    """A leaf returning a HuggingFace ModelOutput (a dataclass and a dict at once)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 12)

    def forward(self, x):
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=self.proj(x))


@pytest.mark.parametrize("read", ["attribute", "index", "key"])
def test_a_model_output_is_read_by_attribute_index_or_key(read):
    pytest.importorskip("transformers")

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.a, self.b = _Encoder(), nn.Linear(12, 16), nn.Linear(16, 3)

        def forward(self, x):
            out = self.encoder(x)
            h = {"attribute": lambda: out.last_hidden_state, "index": lambda: out[0]}.get(
                read, lambda: out["last_hidden_state"]
            )()
            return self.b(torch.relu(self.a(h[:, 0])))

    program = widthc.compile(Head().eval(), torch.randn(1, 5, 6), leaves=[_Encoder])
    assert searchable(program, "a")
    check_random_widths(program.gm, torch.randn(1, 5, 6))


def test_hf_vit_with_its_encoder_as_a_leaf_compiles():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        image_size=16, patch_size=8, num_labels=3,
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config).eval()
    program = widthc.compile(model, torch.randn(1, 3, 16, 16), leaves=["ViTModel"])
    assert [g.producers for g in program.groups] == [("classifier",)]


# --- 3. tied weights: one tensor shared by several layers couples their groups -----------------


class _TiedLM(nn.Module):
    """A language model head whose decoder is the word embedding (BERT, GPT-2), with a transform
    layer between the residual stream and the decoder (its own group until the tie couples it)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.emb, self.up, self.down = nn.Embedding(20, 16), nn.Linear(16, 32), nn.Linear(32, 16)
        self.transform, self.decoder = nn.Linear(16, 16), nn.Linear(16, 20)
        self.decoder.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        h = torch.relu(self.transform(h + self.down(torch.relu(self.up(h)))))
        if self.functional:
            return F.linear(h, self.emb.weight, self.decoder.bias)
        return self.decoder(h)


@pytest.mark.parametrize("functional", [False, True])
def test_tied_weights_couple_their_groups(functional):
    torch.manual_seed(0)
    program = check_random_widths(
        _TiedLM(functional), torch.randint(0, 20, (1, 7)), seeds=(0, 1, 2)
    )
    (hidden,) = [g for g in program.groups if "emb" in g.producers]
    assert "transform" in hidden.producers and hidden.searchable
    assert set(program.param_dims["emb.weight"]) == {1}  # rows are addressed by token ids
    if not functional:
        assert program.param_dims["decoder.weight"] == program.param_dims["emb.weight"]


def test_a_tensor_shared_with_a_leaf_keeps_its_width():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        vocab_size=50,
    )  # fmt: skip

    class MaskedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = transformers.BertForMaskedLM(config)

        def forward(self, ids):
            return self.m(input_ids=ids).logits

    model = MaskedLM().eval()
    decoder = model.m.cls.predictions.decoder
    assert decoder.weight is model.m.bert.embeddings.word_embeddings.weight
    program = widthc.compile(model, torch.randint(0, 50, (1, 7)), leaves=["BertModel"])
    # the decoder's input features are the embedding's columns, which BertModel reads unseen
    assert reasons(program, "m.cls.predictions.transform.dense") == [
        "a tensor of `m.bert` (BertModel), which widthc does not see into"
    ]


# --- 7. weight-standardised convs: the weight is normalised per output channel in the graph ----


@pytest.mark.parametrize("conv", ["StdConv2d", "ScaledStdConv2d"])
def test_weight_standardised_convs_are_searchable(conv):
    layers = pytest.importorskip("timm.layers")
    std = getattr(layers, conv)
    torch.manual_seed(0)
    model = nn.Sequential(
        std(3, 16, 3), nn.ReLU(), std(16, 24, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(24, 2),
    )  # fmt: skip
    program = check_random_widths(model, torch.randn(1, 3, 8, 8))
    first, second = (
        next(g for g in program.groups if p in g.producers) for p in ("conv2d", "conv2d_1")
    )
    assert first.searchable and second.searchable
    # standardising over a filter's input channels mixes them (each filter's mean and
    # variance): the supernet, not the zeroed weights, is the reference there
    assert first.mixing == ("batch_norm_1",) and second.mixing == ()
    small = widthc.slim(program, program.uniform(ratio=0.5))
    assert small.get_submodule("2").weight.shape[:2] == (second.n // 2, first.n // 2)


def test_hf_bit_is_searchable():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BitConfig(
        num_groups=4, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], num_labels=3,
        layer_type="preactivation",
    )  # fmt: skip

    class Bit(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = transformers.BitForImageClassification(config)

        def forward(self, x):
            return self.m(pixel_values=x).logits

    # (no ONNX check: onnxruntime differs from PyTorch by 2e-3 on the unchanged model already)
    program = check_random_widths(Bit(), torch.randn(1, 3, 32, 32), onnx=False)
    assert program.to_json()["searchable_channel_fraction"] > 0.9


# --- 8. size attributes follow the sliced weights -----------------------------------------------


class _Sizes(nn.Module):
    """Every module with a size attribute: embedding_dim, normalized_shape, num_channels,
    num_features, num_parameters, unflattened_size."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(20, 16), nn.Linear(16, 24)
        self.ln, self.rms = nn.LayerNorm(24), nn.RMSNorm(24)
        self.up, self.unflatten = nn.Linear(24, 8), nn.Unflatten(1, (8, 1, 1))
        self.conv, self.gn = nn.Conv2d(8, 12, 1), nn.GroupNorm(3, 12)
        self.inorm, self.prelu = nn.InstanceNorm2d(12, affine=True), nn.PReLU(12)
        self.conv2 = nn.Conv2d(12, 6, 3, padding=1)
        self.unflatten2 = nn.Unflatten(1, (6, 2, 2))
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        h = self.rms(self.ln(torch.relu(self.fc(self.emb(ids))))).mean(1)
        y = self.unflatten(self.up(h)).expand(-1, -1, 2, 2)
        y = self.conv2(self.prelu(self.inorm(self.gn(self.conv(y)))))
        y = self.unflatten2(y.flatten(1))  # flatten then unflatten: channels of `conv2`
        return self.head(y.mean((2, 3)))


def test_slimmed_modules_state_their_new_sizes(tmp_path):
    torch.manual_seed(0)
    model, ids = _Sizes(), torch.randint(0, 20, (1, 5))
    # (no ONNX check: RMSNorm exports only through the dynamo exporter, ~10 s)
    program = check_random_widths(model, ids, onnx=False)
    for producer in ("emb", "fc", "conv", "conv2"):
        assert searchable(program, producer), producer
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice)
    emb, ln, rms = small.emb, small.ln, small.rms
    assert emb.embedding_dim == emb.weight.shape[1] < 16 and emb.num_embeddings == 20
    assert ln.normalized_shape == tuple(ln.weight.shape) == rms.normalized_shape
    assert small.gn.num_channels == small.inorm.num_features == small.prelu.num_parameters
    assert small.unflatten2.unflattened_size == (small.conv2.out_channels, 2, 2)
    # the sizes are what a rebuilt module reads: the model saves and loads
    widthc.save(small, tmp_path / "slim.pt")
    with torch.no_grad():
        assert torch.equal(widthc.load(tmp_path / "slim.pt")(ids), small(ids))


# --- recurrent layers: known, counted, kept at their width (sequencer2d) ----------------------


class _Sequencer(nn.Module):
    """timm's Sequencer block: a bidirectional LSTM along the rows, then a linear layer."""

    def __init__(self, rnn: str):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        kind = {"LSTM": nn.LSTM, "GRU": nn.GRU}[rnn]
        self.rnn = kind(8, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x):
        x = self.embed(x)
        return self.mlp(x + self.fc(self.rnn(x)[0])).mean(1)


@pytest.mark.parametrize("rnn", ["LSTM", "GRU"])
def test_recurrent_layers_keep_their_widths_with_a_reason_and_count_their_flops(rnn):
    model, x = _Sequencer(rnn).eval(), torch.randn(2, 4, 5)
    program = check_random_widths(model, x, seeds=(0,))
    why = reasons(program, "embed")
    assert any(f"recurrent layer `{rnn}`" in r and "_flat_weights" in r for r in why), why
    assert searchable(program, "mlp.0")  # the MLP beside it is searched
    gates = {"LSTM": 4, "GRU": 3}[rnn]  # per step and sample: every weight times a vector
    macs = gates * 6 * (8 + 6) * 2 + gates * 6 * (12 + 6) * 2
    rest = 5 * 8 + 12 * 8 + 8 * 16 + 16 * 3
    assert program.flops() == 4 * (macs + rest)
