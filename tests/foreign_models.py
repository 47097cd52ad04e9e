"""Factories of the models nobody here wrote (tests/foreign.py): each `NAME -> (factory, example
inputs)`, random weights from small configs, nothing downloaded. A family whose package is not
installed raises ImportError (tests skip it; bench/coverage.py reports it)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch

S = 32  # image side of the small vision configs


def hf_configs() -> dict:
    """transformers: name -> (model class, config)."""
    import transformers as T

    sizes = {"hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_labels": 5}
    vit = {"image_size": S, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2}
    vit |= {"num_attention_heads": 2, "intermediate_size": 64}
    swin = {"image_size": S, "patch_size": 4, "embed_dim": 16, "depths": [1, 1]}
    swin |= {"num_heads": [2, 2], "window_size": 4, "num_labels": 5}
    gpt2 = {"vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 2}
    gpt2 |= {"bos_token_id": 0, "eos_token_id": 0}
    text = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2}
    text |= {"num_attention_heads": 2, "intermediate_size": 64}
    llm = text | {"use_cache": False, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}
    audio = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    audio |= {"intermediate_size": 64, "conv_dim": (16, 16), "conv_stride": (5, 2)}
    audio |= {"conv_kernel": (10, 3), "num_conv_pos_embeddings": 16}
    audio |= {"num_conv_pos_embedding_groups": 4}
    pyramid = sizes | {"num_attention_heads": [1, 2, 2, 4], "image_size": S}
    resnet = T.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
        out_features=["stage4"],
    )  # fmt: skip
    return {
        "resnet": (T.ResNetForImageClassification, T.ResNetConfig(embedding_size=16, **sizes)),
        "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig(**sizes)),
        "convnextv2": (T.ConvNextV2ForImageClassification, T.ConvNextV2Config(**sizes)),
        "regnet": (
            T.RegNetForImageClassification,
            T.RegNetConfig(embedding_size=16, groups_width=8, **sizes),
        ),
        "bit": (T.BitForImageClassification, T.BitConfig(embedding_size=16, num_groups=4, **sizes)),
        "mobilenet_v1": (
            T.MobileNetV1ForImageClassification,
            T.MobileNetV1Config(depth_multiplier=0.25, image_size=S, num_labels=5),
        ),
        "mobilenet_v2": (
            T.MobileNetV2ForImageClassification,
            T.MobileNetV2Config(depth_multiplier=0.35, image_size=S, num_labels=5),
        ),
        "mobilevit": (
            T.MobileViTForImageClassification,
            T.MobileViTConfig(
                image_size=64,
                hidden_sizes=[32, 48, 64],
                neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 64],
                num_labels=5,
            ),  # fmt: skip
        ),
        "efficientnet": (
            T.EfficientNetForImageClassification,
            T.EfficientNetConfig(
                image_size=S, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320
            ),
        ),
        "vit": (T.ViTForImageClassification, T.ViTConfig(**vit, num_labels=5)),
        "dinov2": (T.Dinov2Model, T.Dinov2Config(**vit)),
        "swin": (T.SwinForImageClassification, T.SwinConfig(**swin)),
        "swinv2": (T.Swinv2ForImageClassification, T.Swinv2Config(**swin)),
        "segformer": (
            T.SegformerForSemanticSegmentation,
            T.SegformerConfig(
                hidden_sizes=[16, 32, 40, 64],
                depths=[1, 1, 1, 1],
                decoder_hidden_size=32,
                num_labels=5,
            ),  # fmt: skip
        ),
        "distilbert": (
            T.DistilBertModel,
            T.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64),
        ),
        "gpt2": (T.GPT2Model, T.GPT2Config(**gpt2)),
        "gpt2_no_cache": (T.GPT2Model, T.GPT2Config(use_cache=False, **gpt2)),
        # issue 17: more vision, text, audio and decoder-only families
        "beit": (T.BeitForImageClassification, T.BeitConfig(**vit, num_labels=5)),
        "deit": (T.DeiTForImageClassification, T.DeiTConfig(**vit, num_labels=5)),
        "data2vec_vision": (
            T.Data2VecVisionForImageClassification,
            T.Data2VecVisionConfig(**vit, num_labels=5),
        ),
        "levit": (
            T.LevitForImageClassification,
            T.LevitConfig(
                image_size=64,
                hidden_sizes=[32, 48, 64],
                num_attention_heads=[2, 2, 2],
                depths=[1, 1, 1],
                key_dim=[8, 8, 8],
                num_labels=5,
            ),  # fmt: skip
        ),
        "poolformer": (T.PoolFormerForImageClassification, T.PoolFormerConfig(**sizes)),
        "cvt": (
            T.CvtForImageClassification,
            # depth[i] > i: transformers 5 indexes stage i's drop-path rates with i
            T.CvtConfig(embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3], num_labels=5),
        ),
        "focalnet": (
            T.FocalNetForImageClassification,
            T.FocalNetConfig(
                image_size=S,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                focal_levels=[2, 2],
                focal_windows=[3, 3],
                num_labels=5,
            ),  # fmt: skip
        ),
        "dpt": (
            T.DPTForDepthEstimation,
            T.DPTConfig(
                **vit,
                backbone_out_indices=[0, 1],
                neck_hidden_sizes=[8, 16],
                reassemble_factors=[4, 2],
                fusion_hidden_size=16,
                head_in_index=-1,
            ),  # fmt: skip
        ),
        "pvt": (T.PvtForImageClassification, T.PvtConfig(**pyramid)),
        "pvt_v2": (T.PvtV2ForImageClassification, T.PvtV2Config(**pyramid)),
        "hiera": (
            T.HieraForImageClassification,
            T.HieraConfig(
                embed_dim=16,
                image_size=[64, 64],
                patch_size=[7, 7],
                patch_stride=[4, 4],
                patch_padding=[3, 3],
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 2, 2],
                num_labels=5,
            ),  # fmt: skip
        ),
        "clip_vision": (T.CLIPVisionModel, T.CLIPVisionConfig(**vit)),
        "siglip_vision": (T.SiglipVisionModel, T.SiglipVisionConfig(**vit)),
        "bert": (T.BertModel, T.BertConfig(**text)),
        "roberta": (T.RobertaModel, T.RobertaConfig(**text, pad_token_id=0)),
        "albert": (T.AlbertModel, T.AlbertConfig(embedding_size=16, **text)),
        "t5_encoder": (
            T.T5EncoderModel,
            T.T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2),
        ),
        "wav2vec2": (T.Wav2Vec2Model, T.Wav2Vec2Config(**audio)),
        "hubert": (T.HubertModel, T.HubertConfig(**audio)),
        "whisper_classifier": (
            T.WhisperForAudioClassification,
            T.WhisperConfig(
                d_model=32,
                encoder_layers=2,
                encoder_attention_heads=2,
                encoder_ffn_dim=64,
                num_mel_bins=16,
                max_source_positions=16,
                num_labels=5,
            ),  # fmt: skip
        ),
        "llama": (T.LlamaModel, T.LlamaConfig(**llm, num_key_value_heads=2)),
        "llama_eager": (
            T.LlamaModel,
            T.LlamaConfig(**llm, num_key_value_heads=2, attn_implementation="eager"),
        ),
        # grouped-query attention (issue 19): 4 query heads, 2 key/value heads, a causal LM head
        "llama_gqa": (
            T.LlamaForCausalLM,
            T.LlamaConfig(**llm | {"num_attention_heads": 4}, num_key_value_heads=2),
        ),
        "qwen2": (T.Qwen2Model, T.Qwen2Config(**llm, num_key_value_heads=2)),
        "mistral": (T.MistralModel, T.MistralConfig(**llm, num_key_value_heads=1)),
        "phi3": (T.Phi3Model, T.Phi3Config(**llm, num_key_value_heads=2)),
        "conditional_detr": (
            T.ConditionalDetrForObjectDetection,
            T.ConditionalDetrConfig(
                backbone_config=resnet,
                d_model=32,
                encoder_layers=1,
                decoder_layers=1,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                num_queries=5,
                num_labels=5,
            ),  # fmt: skip
        ),
    }


_TEXT = {
    "distilbert", "gpt2", "gpt2_no_cache", "bert", "roberta", "albert", "t5_encoder", "llama",
    "llama_eager", "qwen2", "mistral", "phi3", "llama_gqa",
}  # fmt: skip
_AUDIO = {"wav2vec2": (1, 400), "hubert": (1, 400), "whisper_classifier": (1, 16, 32)}
_IMAGE_64 = {"mobilevit", "levit", "hiera", "conditional_detr"}


def hf(name: str) -> tuple[Callable, tuple]:
    cls, config = hf_configs()[name]
    if name in _TEXT:
        inputs = (torch.randint(1, 100, (1, 8)),)
    elif name in _AUDIO:
        inputs = (torch.randn(*_AUDIO[name]),)
    else:
        side = 64 if name in _IMAGE_64 else S
        inputs = (torch.randn(1, 3, side, side),)
    return (lambda: cls(config)), inputs


# segmentation_models_pytorch: architecture and encoder (random weights: encoder_weights=None)
SMP = {
    "unet_resnet18": ("Unet", "resnet18"), "unetplusplus_resnet18": ("UnetPlusPlus", "resnet18"),
    "fpn_mobilenet_v2": ("FPN", "mobilenet_v2"), "deeplabv3plus_resnet18": ("DeepLabV3Plus", "resnet18"),
    "pspnet_efficientnet-b0": ("PSPNet", "efficientnet-b0"), "linknet_resnet18": ("Linknet", "resnet18"),
    "pan_resnet18": ("PAN", "resnet18"), "manet_mobilenet_v2": ("MAnet", "mobilenet_v2"),
    "upernet_resnet18": ("UPerNet", "resnet18"), "segformer_mit_b0": ("Segformer", "mit_b0"),
}  # fmt: skip


def smp(name: str) -> tuple[Callable, tuple]:
    import segmentation_models_pytorch as smp_lib

    arch, encoder = SMP[name]
    cls = getattr(smp_lib, arch)
    side = 128 if arch == "PAN" else 64  # PAN pools its deepest (1/32) features 8x8 -> 1x1
    return (lambda: cls(encoder_name=encoder, encoder_weights=None, classes=3)), (
        torch.randn(1, 3, side, side),
    )


def diffusers(name: str) -> tuple[Callable, tuple]:
    import diffusers as D

    blocks = {"block_out_channels": (16, 32), "norm_num_groups": 8, "layers_per_block": 1}
    x = torch.randn(1, 3, S, S)
    t = torch.tensor([10])
    table = {
        "unet2d": (
            lambda: D.UNet2DModel(
                sample_size=S,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=8,
                **blocks,
            ),  # fmt: skip
            (x, t),
        ),
        "unet2d_condition": (
            lambda: D.UNet2DConditionModel(
                sample_size=S,
                in_channels=3,
                out_channels=3,
                cross_attention_dim=16,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                attention_head_dim=8,
                **blocks,
            ),  # fmt: skip
            (x, t, torch.randn(1, 4, 16)),
        ),
        "autoencoder_kl": (
            lambda: D.AutoencoderKL(
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                latent_channels=4,
                **blocks,
            ),  # fmt: skip
            (x,),
        ),
    }
    return table[name]


ULTRALYTICS = {
    "yolov8n_seg": ("SegmentationModel", "yolov8n-seg.yaml"),
    "yolov8n_pose": ("PoseModel", "yolov8n-pose.yaml"),
    "yolo11n": ("DetectionModel", "yolo11n.yaml"),
    "rtdetr_l": ("RTDETRDetectionModel", "rtdetr-l.yaml"),
}


def ultralytics(name: str) -> tuple[Callable, tuple]:
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="widthc-yolo-"))
    from ultralytics.nn import tasks

    cls_name, yaml = ULTRALYTICS[name]
    cls = getattr(tasks, cls_name)
    return (lambda: cls(yaml, nc=5, verbose=False)), (torch.randn(1, 3, 64, 64),)
