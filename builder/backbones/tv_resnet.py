"""torchvision ResNet-50 with the official ImageNet-1k weights.

Weights: ``resnet50-0676ba61.pth`` (``ResNet50_Weights.IMAGENET1K_V1``, the "official PyTorch
weights" of the seed) or ``resnet50-11ad3fa6.pth`` (``IMAGENET1K_V2``), found in
``$NVP_WEIGHTS_DIR`` or the torch hub cache ``$TORCH_HOME/hub/checkpoints/``.
Preprocessing: resize 224x224, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from ..weights import WeightsSpec, torch_hub_checkpoint, weights_dir
from .base import Backbone, register_backbone, with_preprocessing

__all__ = ["ResNet50"]

V1 = "resnet50-0676ba61.pth"
V2 = "resnet50-11ad3fa6.pth"


@register_backbone
class ResNet50(Backbone):
    name = "resnet50"
    input_kind = "image"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_input_size = (224, 224)
    weights_spec = WeightsSpec(
        filename=V1,
        url=f"https://download.pytorch.org/models/{V1}",
        description="ResNet-50 ImageNet-1k weights (torchvision IMAGENET1K_V1)",
        fallbacks=(lambda: torch_hub_checkpoint(V1), lambda: weights_dir() / V2, lambda: torch_hub_checkpoint(V2)),
        fallback_hint=f"The IMAGENET1K_V2 file {V2} (https://download.pytorch.org/models/{V2}) is accepted too.",
    )
    # stem output (conv1-bn1-relu-maxpool), then the four stages
    curated_cuts = ("maxpool", "layer1", "layer2", "layer3", "layer4")
    default_cut = "layer2"

    def build(self, *, num_classes: int = 1000, image_size: int | None = None) -> nn.Module:
        return with_preprocessing(resnet50(weights=None, num_classes=num_classes),
                                  input_size=image_size and (image_size, image_size))

    def load_weights(self, path: Path) -> nn.Module:
        model = resnet50(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model
