"""Downstream backbones read through INR features: registry, split (front/tail) and weights.

``get_backbone(name)`` returns a :class:`Backbone`; ``load()`` reads local weights (or
``random_init=True``), ``split(at)`` cuts the model at a curated point. Heavy libraries (timm,
open_clip, pytorchvideo, transformers) are imported only when a family builds its model.
"""

import importlib as _importlib

from ..weights import WeightsNotFound
from .base import (Backbone, SplitError, SplitModel, TensorSpec, get_backbone, list_backbones, register_backbone,
                   with_preprocessing)

__all__ = [
    "Backbone",
    "SplitError",
    "SplitModel",
    "TensorSpec",
    "WeightsNotFound",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "with_preprocessing",
]

# one module per family; importing it registers the backbone
for _family in ("effnet_lite0", "tv_resnet", "clip_rn50", "tv_vit", "ptv_i3d", "ptv_slowfast", "hf_detr", "hf_blip",
                "tv_mobilenet_v2"):
    _importlib.import_module(f".{_family}", __name__)
