"""Models nobody here wrote (issues 8 and 17), shared by tests/test_foreign_zoo.py and
bench/coverage.py (their factories: tests/foreign_models.py).

Each model ends in one of three states: `verified` (random widths at about half the FLOPs are
slimmed and pass widthc.verify: outputs equal the reference, FLOPs recounted exactly, ONNX
parity), `refused` (a WidthcError: one clear sentence), or `limited` (a known limitation,
written in LIMITS with its reason). Anything else is a failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import foreign_models
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

# timm (issue 17): of each timm module, the smallest model of another architecture than the
# smallest (its name's leading letters differ), at most 30M parameters:
# `python bench/coverage.py --timm-variants`
TIMM_VARIANTS = [
    "convnext_zepto_rms", "darknet17", "densenetblur121d", "eca_botnext26ts_256",
    "eva02_tiny_patch14_224", "ghostnetv3_050", "gmixer_12_224", "hgnet_tiny", "lcnet_035",
    "mambaout_femto", "maxvit_pico_rw_256", "mobilenetv2_035", "mobileone_s1", "mobilevitv2_050",
    "nf_regnet_b0", "poolformer_s12", "regnety_002", "resnet10t", "rexnetr_100",
    "skresnext50_32x4d", "vit_srelpos_small_patch16_224", "vit_tiny_patch16_224", "vovnet39a",
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

# torchvision detection: the models take a list of images (issue 17: refused at their line)
TORCHVISION_DETECTION = [
    "fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn", "keypointrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
]  # fmt: skip

# known limitations: name -> (a fragment of the error, or "nothing searchable"; the reason)
LIMITS: dict[str, tuple[str, str]] = {
    "hf:bit": (
        "ONNX output `logits` differs from PyTorch",
        "weight standardisation (F.batch_norm over each filter in training mode) exports to ONNX "
        "with a relative error of 7.7e-3 after slimming",
    ),
    "ultralytics:rtdetr_l": (
        "ONNX output `output_0` differs from PyTorch",
        "RT-DETR's decoder keeps the 300 queries of highest class score (topk): with random "
        "weights the scores nearly tie, and float rounding (onnxruntime vs PyTorch) swaps them, "
        "relative error 1.8e-2; the slimmed model equals the supernet exactly and the "
        "zeroed-weights reference in float64",
    ),
}
# refused inputs: name -> a fragment of the WidthcError
REFUSED: dict[str, str] = {
    # the forward builds a DynamicCache object and hands it to every block
    "hf:gpt2": "build the model with `use_cache=False`",
    # `for img in images:` over a list of images (GeneralizedRCNN, SSD, RetinaNet, FCOS)
    **{
        f"torchvision:{n}": "a loop over the rows of a tensor (a list of inputs given as one tensor)"
        for n in TORCHVISION_DETECTION
    },
}


@dataclass
class Outcome:
    state: str  # verified | refused | limited
    detail: str  # the checks' summary, the error, or why nothing is searchable
    searchable_fraction: float = 0.0


HF = [
    "resnet", "convnext", "convnextv2", "regnet", "bit", "mobilenet_v1", "mobilenet_v2",
    "mobilevit", "efficientnet", "vit", "dinov2", "swin", "swinv2", "segformer", "distilbert",
    "gpt2", "gpt2_no_cache",
    # issue 17
    "beit", "deit", "data2vec_vision", "levit", "poolformer", "cvt", "focalnet", "dpt", "pvt",
    "pvt_v2", "hiera", "clip_vision", "siglip_vision", "bert", "roberta", "albert", "t5_encoder",
    "wav2vec2", "hubert", "whisper_classifier", "llama", "llama_eager", "qwen2", "mistral",
    "phi3", "conditional_detr",
    # issue 19
    "llama_gqa",
]  # fmt: skip
SMP = list(foreign_models.SMP)
DIFFUSERS = ["unet2d", "unet2d_condition", "autoencoder_kl"]
ULTRALYTICS = list(foreign_models.ULTRALYTICS)


def _timm(name: str) -> tuple[Callable, tuple]:
    import timm

    def make():
        return timm.create_model(name, pretrained=False)

    shape = timm.get_pretrained_cfg(name).input_size if timm.get_pretrained_cfg(name) else None
    return make, (torch.randn(1, *(shape or (3, 224, 224))),)


def _torchvision(name: str) -> tuple[Callable, tuple]:
    import torchvision

    kwargs = {"weights": None}
    if name in TORCHVISION_DETECTION:  # a list of images, given as one tensor: refused
        kwargs |= {"weights_backbone": None, "num_classes": 3}
        size = (1, 3, 64, 64)
    elif name in TORCHVISION_SEGMENTATION:
        kwargs |= {"weights_backbone": None, "num_classes": 5}
        size = (1, 3, 64, 64)
    elif name.startswith(("mvit", "s3d")):  # fixed by positional embeddings, a final 2x7x7 pool
        size = (1, 3, 16, 224, 224)
    else:
        size = (1, 3, 4, 32, 32)
    return (lambda: torchvision.models.get_model(name, **kwargs)), (torch.randn(*size),)


def source(spec: str) -> tuple[Callable, tuple]:
    """`FAMILY:NAME` (hf, timm, torchvision, smp, diffusers, ultralytics) -> (factory, example
    inputs). A family whose package is missing raises ImportError."""
    family, name = spec.split(":", 1)
    return {
        "hf": foreign_models.hf, "timm": _timm, "torchvision": _torchvision,
        "smp": foreign_models.smp, "diffusers": foreign_models.diffusers,
        "ultralytics": foreign_models.ultralytics,
    }[family](name)  # fmt: skip


def specs() -> list[str]:
    """Every model of the sweep, as `FAMILY:NAME`."""
    return (
        [f"hf:{n}" for n in HF]
        + [f"timm:{n}" for n in TIMM_SAMPLE + TIMM_VARIANTS]
        + [
            f"torchvision:{n}"
            for n in TORCHVISION_SEGMENTATION + TORCHVISION_VIDEO + TORCHVISION_DETECTION
        ]
        + [f"smp:{n}" for n in SMP]
        + [f"diffusers:{n}" for n in DIFFUSERS]
        + [f"ultralytics:{n}" for n in ULTRALYTICS]
    )


PACKAGES = {
    "hf": "transformers", "timm": "timm", "torchvision": "torchvision",
    "smp": "segmentation_models_pytorch", "diffusers": "diffusers", "ultralytics": "ultralytics",
}  # fmt: skip


def run(spec: str, seed: int = 0) -> Outcome:
    """Compile, check the traced graph against the eager model, slim random widths at about
    half the FLOPs and verify them. A WidthcError is a refusal; other exceptions propagate."""
    torch.manual_seed(seed)  # the example inputs, then the weights
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
