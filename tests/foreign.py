"""Models nobody here wrote (issue 8), shared by tests/test_foreign_zoo.py and bench/coverage.py.

Each model ends in one of three states: `verified` (random widths at about half the FLOPs are
slimmed and pass widthc.verify: outputs equal the reference, FLOPs recounted exactly, ONNX
parity), `refused` (a WidthcError: one clear sentence), or `limited` (a known limitation,
written in LIMITS with its reason). Anything else is a failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

import widthc
from widthc.verify import verify

# timm: of each timm module (timm.list_modules()), the model with the fewest parameters (counted
# on the meta device; the first by name on a tie), where that is at most 30M parameters (15 of
# timm 1.0.31's 98 modules have none that small). `python bench/coverage.py --timm-sample`
# prints the list from the installed timm; it is written out so that collecting builds nothing.
TIMM_SAMPLE = [
    "cait_xxs24_224", "coat_tiny", "convit_tiny", "convmixer_768_32", "cpubone_nano",
    "crossvit_tiny_240", "cs3darknet_focus_s", "csatv2", "cspnext_tiny", "davit_tiny",
    "deit_tiny_patch16_224", "densenet121", "dla46x_c", "dpn48b", "edgenext_xx_small",
    "efficientformer_l1", "efficientformerv2_s0", "efficientvim_m1", "efficientvit_b0",
    "efficientvit_m0", "ese_vovnet19b_slim_dw", "fasternet_t0", "fastvit_t8",
    "focalnet_tiny_srf", "gcvit_xxtiny", "ghostnet_050", "gmlp_ti16_224", "halonet_h1",
    "hardcorenas_b", "hgnetv2_b0", "hiera_tiny_224", "hrnet_w18_small", "iformer_t",
    "inception_next_atto", "inception_v3", "lcnetv2_small", "legacy_seresnet18",
    "legacy_xception", "levit_128s", "lowformer_b0", "mobilenetv3_small_050", "mobilevit_xxs",
    "mvitv2_tiny", "nest_tiny", "pit_ti_224", "poolformerv2_s12", "pvt_v2_b0", "rdnet_tiny",
    "regnetx_002", "repghostnet_050", "repvit_m1", "res2next50", "resnest14d", "resnetv2_18",
    "rexnet_100", "sam2_hiera_tiny", "sequencer2d_s", "shvit_s1", "skresnet18", "starnet_s050",
    "swiftformer_xs", "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224",
    "swinv2_tiny_window8_256", "test_byobnet", "test_coatnet", "test_convnext",
    "test_efficientnet", "test_mambaout", "test_nfnet", "test_resnet", "test_vit",
    "test_vit_relpos", "tiny_vit_5m_224", "tnt_s_legacy_patch16_224", "twins_svt_small",
    "visformer_tiny", "vit_tiny_patch16_dinov3_qkvb", "vit_tiny_r_s16_p8_224",
    "vitamin_small_224", "volo_d1_224", "xception41p", "xcit_nano_12_p8_224",
]  # fmt: skip

# torchvision: every segmentation and video model, at small inputs
TORCHVISION_SEGMENTATION = [
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50",
    "fcn_resnet101", "fcn_resnet50", "lraspp_mobilenet_v3_large",
]  # fmt: skip
TORCHVISION_VIDEO = [
    "mc3_18", "mvit_v1_b", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_b", "swin3d_s",
    "swin3d_t",
]  # fmt: skip

# known limitations: name -> (a fragment of the error, or "nothing searchable"; the reason)
LIMITS: dict[str, tuple[str, str]] = {
    "hf:gpt2_no_cache": (
        "nothing searchable",
        "GPT-2's Conv1D layers are `torch.addmm(bias, x, weight)` with an (in, out) weight: the "
        "op registry has no channel rule for addmm",
    ),
    "hf:bit": (
        "ONNX output `logits` differs from PyTorch",
        "weight standardisation (F.batch_norm over each filter in training mode) exports to ONNX "
        "with a relative error of 7.7e-3 after slimming",
    ),
}
# refused inputs: name -> a fragment of the WidthcError
REFUSED: dict[str, str] = {
    # the forward builds a DynamicCache object and hands it to every block
    "hf:gpt2": "build the model with `use_cache=False`",
}


@dataclass
class Outcome:
    state: str  # verified | refused | limited
    detail: str  # the checks' summary, the error, or why nothing is searchable
    searchable_fraction: float = 0.0


def _hf(name: str) -> tuple[Callable, tuple]:
    import transformers as T

    s = 32
    img = (1, 3, s, s)
    sizes = {"hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_labels": 5}
    vit = {"image_size": s, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2}
    vit |= {"num_attention_heads": 2, "intermediate_size": 64, "num_labels": 5}
    swin = {"image_size": s, "patch_size": 4, "embed_dim": 16, "depths": [1, 1]}
    swin |= {"num_heads": [2, 2], "window_size": 4, "num_labels": 5}
    gpt2 = {"vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 2}
    gpt2 |= {"bos_token_id": 0, "eos_token_id": 0}
    table = {
        "resnet": (T.ResNetForImageClassification, T.ResNetConfig(embedding_size=16, **sizes)),
        "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig(**sizes)),
        "convnextv2": (T.ConvNextV2ForImageClassification, T.ConvNextV2Config(**sizes)),
        "regnet": (
            T.RegNetForImageClassification,
            T.RegNetConfig(embedding_size=16, groups_width=8, **sizes),
        ),
        "bit": (
            T.BitForImageClassification,
            T.BitConfig(embedding_size=16, num_groups=4, **sizes),
        ),
        "mobilenet_v1": (
            T.MobileNetV1ForImageClassification,
            T.MobileNetV1Config(depth_multiplier=0.25, image_size=s, num_labels=5),
        ),
        "mobilenet_v2": (
            T.MobileNetV2ForImageClassification,
            T.MobileNetV2Config(depth_multiplier=0.35, image_size=s, num_labels=5),
        ),
        "mobilevit": (
            T.MobileViTForImageClassification,
            T.MobileViTConfig(
                image_size=64,
                hidden_sizes=[32, 48, 64],
                neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 64],
                num_labels=5,
            ),
        ),
        "efficientnet": (
            T.EfficientNetForImageClassification,
            T.EfficientNetConfig(
                image_size=s, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320
            ),
        ),
        "vit": (T.ViTForImageClassification, T.ViTConfig(**vit)),
        "dinov2": (T.Dinov2Model, T.Dinov2Config(**{**vit, "image_size": s})),
        "swin": (T.SwinForImageClassification, T.SwinConfig(**swin)),
        "swinv2": (T.Swinv2ForImageClassification, T.Swinv2Config(**swin)),
        "segformer": (
            T.SegformerForSemanticSegmentation,
            T.SegformerConfig(
                hidden_sizes=[16, 32, 40, 64],
                depths=[1, 1, 1, 1],
                decoder_hidden_size=32,
                num_labels=5,
            ),
        ),
        "distilbert": (
            T.DistilBertModel,
            T.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64),
        ),
        "gpt2": (T.GPT2Model, T.GPT2Config(**gpt2)),
        "gpt2_no_cache": (T.GPT2Model, T.GPT2Config(use_cache=False, **gpt2)),
    }
    cls, config = table[name]
    text = name in ("distilbert", "gpt2", "gpt2_no_cache")
    if name == "mobilevit":
        img = (1, 3, 64, 64)
    inputs = (torch.randint(0, 100, (1, 8)),) if text else (torch.randn(*img),)
    return (lambda: cls(config)), inputs


HF = [
    "resnet", "convnext", "convnextv2", "regnet", "bit", "mobilenet_v1", "mobilenet_v2",
    "mobilevit", "efficientnet", "vit", "dinov2", "swin", "swinv2", "segformer", "distilbert",
    "gpt2", "gpt2_no_cache",
]  # fmt: skip


def _timm(name: str) -> tuple[Callable, tuple]:
    import timm

    def make():
        return timm.create_model(name, pretrained=False)

    shape = timm.get_pretrained_cfg(name).input_size if timm.get_pretrained_cfg(name) else None
    return make, (torch.randn(1, *(shape or (3, 224, 224))),)


def _torchvision(name: str) -> tuple[Callable, tuple]:
    import torchvision

    kwargs = {"weights": None}
    if name in TORCHVISION_SEGMENTATION:
        kwargs |= {"weights_backbone": None, "num_classes": 5}
        size = (1, 3, 64, 64)
    elif name.startswith(("mvit", "s3d")):  # fixed by positional embeddings, a final 2x7x7 pool
        size = (1, 3, 16, 224, 224)
    else:
        size = (1, 3, 4, 32, 32)
    return (lambda: torchvision.models.get_model(name, **kwargs)), (torch.randn(*size),)


def source(spec: str) -> tuple[Callable, tuple]:
    """`hf:NAME`, `timm:NAME` or `torchvision:NAME` -> (factory, example inputs)."""
    family, name = spec.split(":", 1)
    return {"hf": _hf, "timm": _timm, "torchvision": _torchvision}[family](name)


def run(spec: str, seed: int = 0) -> Outcome:
    """Compile, check the traced graph against the eager model, slim random widths at about
    half the FLOPs and verify them. A WidthcError is a refusal; other exceptions propagate."""
    make, inputs = source(spec)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().eval()
    try:
        program = widthc.compile(model, inputs)
    except widthc.WidthcError as e:
        return Outcome("refused", str(e))
    with torch.no_grad():
        got, want = program.gm(*inputs), model(*inputs)
    assert_same(got, want)
    fraction = program.to_json()["searchable_channel_fraction"]
    if not program.searchable:
        from widthc.diagnose import freeze_summary

        causes = freeze_summary(program)
        return Outcome("limited", f"nothing searchable: {causes[:2]}", fraction)
    full, least = program.flops(), program.flops(program.smallest())
    choice = program.random(seed, flops=max(0.5 * full, least + 0.05 * (full - least)))
    small = widthc.slim(program, choice)
    checks = verify(program, choice, small)
    return Outcome("verified", checks.summary(), fraction)


def assert_same(got, want) -> None:
    """The traced graph computes what the eager model computes (structures, then tensors)."""
    a = [t for t in torch.utils._pytree.tree_flatten(got)[0] if isinstance(t, torch.Tensor)]
    b = [t for t in torch.utils._pytree.tree_flatten(want)[0] if isinstance(t, torch.Tensor)]
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
