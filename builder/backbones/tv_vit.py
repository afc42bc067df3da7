"""ViT-B/16 (torchvision ``vit_b_16`` architecture) with Google's ImageNet-21k weights.

Weights: the AugReg ImageNet-21k checkpoint published by Google Research, in timm's format:
``vit_base_patch16_224.augreg_in21k.safetensors`` (the ``model.safetensors`` of the Hugging Face
repo ``timm/vit_base_patch16_224.augreg_in21k``; 21843 classes). :func:`timm_to_torchvision`
renames its keys (qkv -> in_proj, fc1/fc2 -> mlp.0/mlp.3, ...); the architectures are the same
computation, which a test checks on random weights. Any other ViT-B/16 file in timm format (e.g.
an ``*_in21k_ft_in1k`` one) or torchvision format (``vit_b_16-c867db91.pth``) can be passed as a
path; the classifier size is taken from the file.

Preprocessing: resize 224x224, mean = std = 0.5 (what the Google ViT weights were trained with;
the seed's text says "ImageNet mean/std").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vit_b_16

from ..weights import WeightsSpec, hf_cached_file
from .base import Backbone, register_backbone, with_preprocessing

__all__ = ["ViTB16", "timm_to_torchvision", "load_state_dict_file"]

FILENAME = "vit_base_patch16_224.augreg_in21k.safetensors"
HF_REPO = "timm/vit_base_patch16_224.augreg_in21k"


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (``.pth``/``.bin``)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def timm_to_torchvision(sd: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """timm ``VisionTransformer`` keys -> torchvision ``VisionTransformer`` keys (ViT-B/16)."""
    top = {
        "cls_token": "class_token",
        "pos_embed": "encoder.pos_embedding",
        "patch_embed.proj.weight": "conv_proj.weight",
        "patch_embed.proj.bias": "conv_proj.bias",
        "norm.weight": "encoder.ln.weight",
        "norm.bias": "encoder.ln.bias",
        "head.weight": "heads.head.weight",
        "head.bias": "heads.head.bias",
        "pre_logits.fc.weight": "heads.pre_logits.weight",
        "pre_logits.fc.bias": "heads.pre_logits.bias",
    }
    blk = {
        "norm1": "ln_1", "attn.qkv": "self_attention.in_proj", "attn.proj": "self_attention.out_proj",
        "norm2": "ln_2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3",
    }
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
            continue
        if not k.startswith("blocks."):
            raise KeyError(f"unexpected key in timm ViT state dict: {k}")
        _, i, rest = k.split(".", 2)
        mod, param = rest.rsplit(".", 1)
        new = blk[mod]
        if new == "self_attention.in_proj":
            out[f"encoder.layers.encoder_layer_{i}.self_attention.in_proj_{param}"] = v
        else:
            out[f"encoder.layers.encoder_layer_{i}.{new}.{param}"] = v
    return out


def _cached() -> Path | None:
    return hf_cached_file(HF_REPO, "model.safetensors") or hf_cached_file(HF_REPO, "pytorch_model.bin")


@register_backbone
class ViTB16(Backbone):
    name = "vit_b16"
    input_kind = "image"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    default_input_size = (224, 224)
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url=f"https://huggingface.co/{HF_REPO}/resolve/main/model.safetensors (save it as {FILENAME})",
        description="ViT-B/16 ImageNet-21k weights (Google AugReg, timm format)",
        fallbacks=(_cached,),
        fallback_hint=f"The Hugging Face cache of {HF_REPO} is used too (HF_HUB_OFFLINE=1).",
    )
    # encoder.dropout: the (B,197,768) token sequence after class token + position embedding (where
    # the seed's ViT adapter injects); then encoder blocks. (conv_proj is no clean cut: the tail
    # reshapes with the input image's shape.)
    curated_cuts = (
        "encoder.dropout",
        "encoder.layers.encoder_layer_2",
        "encoder.layers.encoder_layer_5",
        "encoder.layers.encoder_layer_8",
    )
    default_cut = "encoder.dropout"

    def build(
        self, *, num_classes: int = 21843, image_size: int = 224, representation_size: int | None = None
    ) -> nn.Module:
        return with_preprocessing(vit_b_16(weights=None, num_classes=num_classes, image_size=image_size,
                                           representation_size=representation_size),
                                  input_size=(image_size, image_size))

    def load_weights(self, path: Path) -> nn.Module:
        sd = load_state_dict_file(path)
        if "cls_token" in sd:  # timm format
            sd = timm_to_torchvision(sd)
        rep = sd["heads.pre_logits.weight"].shape[0] if "heads.pre_logits.weight" in sd else None
        grid = math.isqrt(sd["encoder.pos_embedding"].shape[1] - 1)  # 14 for 224x224 inputs
        model = vit_b_16(weights=None, num_classes=sd["heads.head.weight"].shape[0], representation_size=rep,
                         image_size=grid * 16)
        model.load_state_dict(sd, strict=True)
        return with_preprocessing(model, input_size=(grid * 16, grid * 16))
