"""Zoo sweep: every torchvision classification model and a sample of timm models compile.

For each model: the traced GraphModule computes what the eager model computes (the leaf policy
and tracing lose nothing), the analysis is well formed, and the search space is real.
`make test` runs a slice; `make test-all` runs all 80 torchvision models and the timm sample.
`bench/coverage.py` prints the searchable fraction of each model (BENCHMARKS.md).
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision

import widthc
from widthc.passes.flops import count_macs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # googlenet, inception init

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
TORCHVISION_DEFAULT = [
    "alexnet", "resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
    "convnext_tiny", "inception_v3", "shufflenet_v2_x0_5", "regnet_x_400mf", "mnasnet0_5",
    "swin_t", "vit_b_16", "maxvit_t",
]  # fmt: skip

# timm models with control flow or padding helpers in forward (mobilevit*, tf_*, dm_nfnet*)
# only trace with timm's no-trace modules and functions as leaves
TIMM_DEFAULT = [
    "mobilevit_xxs", "tf_efficientnet_lite0", "dm_nfnet_f0", "convnext_nano",
    "vit_tiny_patch16_224", "ghostnet_100",
]  # fmt: skip
TIMM_MORE = [
    "resnet50d", "efficientnet_b0", "mobilenetv3_large_100", "regnetx_002", "deit_tiny_patch16_224",
    "mixer_b16_224", "hrnet_w18_small", "dla34", "rexnet_100", "mobilevitv2_050", "levit_128s",
    "poolformer_s12", "cspdarknet53", "res2net50_14w_8s", "lcnet_050", "resnest14d",
    "edgenext_xx_small", "repvgg_a0", "efficientformer_l1", "xception41", "coatnet_0_rw_224",
    "fastvit_t8", "swin_tiny_patch4_window7_224",
]  # fmt: skip

# FlopCounterMode counts nothing for F.scaled_dot_product_attention on CPU (measured: 0 FLOPs
# for a 3x197x64 attention), so it misses the attention matmuls of these; widthc counts them
# (vit_tiny_patch16_224: 1.254 G, timm's table 1.26 G, FlopCounterMode 1.075 G)
# (mobilevit_xxs: 0.407 G, timm's table 0.42 G, FlopCounterMode 0.329 G)
SDPA = {"vit_tiny_patch16_224", "deit_tiny_patch16_224", "coatnet_0_rw_224", "mobilevit_xxs"}
# Models where no conv/linear channel is searchable, with the reason. dm_nfnet_f0's
# ScaledStdConv2dSame standardises each filter over its input channels (a channel-mixing weight
# transform) inside a timm no-trace module, so every group touches an opaque leaf.
NOTHING_SEARCHABLE: dict[str, str] = {}  # dm_nfnet_f0 was, while NormFreeBlock was a leaf


def _torchvision_input(name: str) -> tuple[dict, int]:
    """Small inputs where the architecture allows them."""
    if name == "vit_h_14":
        return {"image_size": 56}, 56
    if name.startswith("vit_"):
        return {"image_size": 64}, 64
    return {}, {"maxvit_t": 224, "inception_v3": 96}.get(name, 64)


def _assert_same_outputs(got, want) -> None:
    if isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want)
    else:
        assert type(got) is type(want) and len(got) == len(want)
        for a, b in zip(got, want):
            _assert_same_outputs(a, b)


def _check(program, model, inputs, name: str) -> None:
    with torch.no_grad():
        _assert_same_outputs(program.gm(*inputs), model(*inputs))
    data = json.loads(json.dumps(program.to_json()))
    assert [g["id"] for g in data["groups"]] == list(range(len(program.groups)))
    for g in program.groups:
        assert sum(g.bins) * g.blocks == g.n  # bins of one block (grouped convs)
        assert g.searchable or all(str(r) for r in g.frozen)
    fraction = data["searchable_channel_fraction"]
    if name in NOTHING_SEARCHABLE:
        assert fraction == 0.0 and not program.searchable
        return
    assert 0.0 < fraction <= 1.0 and program.searchable
    assert program.flops(program.smallest()) < program.flops()
    assert program.params(program.smallest()) < program.params()
    assert program.flops(program.random(0)) <= program.flops()


def _slow_unless(default: list[str], names: list[str]) -> list:
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _slow_unless(TORCHVISION_DEFAULT, TORCHVISION))
def test_torchvision_model_compiles(name):
    kwargs, size = _torchvision_input(name)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    inputs = (torch.randn(1, 3, size, size),)
    _check(widthc.compile(model, inputs), model, inputs, name)


@pytest.mark.parametrize("name", _slow_unless(TIMM_DEFAULT, TIMM_DEFAULT + TIMM_MORE))
def test_timm_model_compiles_through_the_leaf_policy(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    inputs = (torch.randn(1, *model.default_cfg["input_size"]),)
    program = widthc.compile(model, inputs)
    _check(program, model, inputs, name)
    if name not in SDPA:
        assert program.flops() == pytest.approx(count_macs(model, inputs), rel=0.01)


def test_timm_no_trace_modules_are_traced_into_where_they_can_be():
    """Plain torch.fx cannot trace mobilevit_xxs (control flow in MobileVitBlock.forward, on
    shapes only): widthc traces into timm's no-trace modules and specialises that control flow
    to the example's shapes, so the blocks' convolutions are searchable and slim exactly. With
    --no-auto-leaf, timm's no-trace modules are leaves, which freeze the channels they touch."""
    from widthc.verify import verify

    model = timm.create_model("mobilevit_xxs", pretrained=False).eval()
    inputs = (torch.randn(1, 3, 256, 256),)
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    program = widthc.compile(model, inputs)
    modules = dict(program.gm.named_modules())
    called = {
        type(modules[n.target]).__name__ for n in program.gm.graph.nodes if n.op == "call_module"
    }
    assert "MobileVitBlock" not in called and "Conv2d" in called
    choice = program.random(0, flops=0.5 * program.flops())
    assert (
        verify(program, choice, widthc.slim(program, choice), check_onnx=False).equivalence < 1e-5
    )
    strict = widthc.compile(model, inputs, auto_leaf=False)
    leaves = [n for n in strict.gm.graph.nodes if n.op == "call_module"]
    modules = dict(strict.gm.named_modules())
    blocks = [n.target for n in leaves if type(modules[n.target]).__name__ == "MobileVitBlock"]
    assert len(blocks) == 3
    reasons = " ".join(str(r) for g in strict.groups for r in g.frozen)
    assert all(f"`{b}`" in reasons for b in blocks)
    fraction = program.to_json()["searchable_channel_fraction"]
    assert fraction > strict.to_json()["searchable_channel_fraction"]


def test_lists_name_real_models():
    assert len(TORCHVISION) == 80 and set(TORCHVISION_DEFAULT) <= set(TORCHVISION)
    available = set(timm.list_models())
    assert set(TIMM_DEFAULT + TIMM_MORE) <= available
    assert SDPA | set(NOTHING_SEARCHABLE) <= set(TIMM_DEFAULT + TIMM_MORE)
