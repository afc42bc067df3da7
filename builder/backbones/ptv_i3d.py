"""I3D-ResNet50 (Kinetics-400) from pytorchvideo.

Architecture: ``pytorchvideo.models.hub.i3d_r50`` (its ``create_resnet`` config; built with
``pretrained=False``, so nothing is downloaded). Weights: ``I3D_8x8_R50.pyth`` (a checkpoint
dict whose ``model_state`` is loaded strictly) in ``$NVP_WEIGHTS_DIR`` or the torch hub cache.

Input: one clip (1, 3, T, 224, 224) normalised with the Kinetics mean/std; the seed feeds 32
consecutive frames (the 8x8 checkpoint was trained on 8; its head pools 4x7x7 windows and then
averages globally, so any T >= 8 works). The model is ``Net(blocks)``: blocks.0 stem,
blocks.1 res2, blocks.2 the temporal max-pool after res2 (``stage1_pool``), blocks.3..5 res3..res5,
blocks.6 the classification head.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..weights import WeightsSpec, torch_hub_checkpoint
from ._ptv import KINETICS_MEAN, KINETICS_STD, pytorchvideo
from .base import Backbone, check_frames, register_backbone, resize_frames, with_preprocessing

__all__ = ["I3DR50", "i3d_r50", "load_pyth"]

FILENAME = "I3D_8x8_R50.pyth"
ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


def i3d_r50(head_pool_kernel_size: tuple[int, int, int] = (4, 7, 7), **kw: Any) -> nn.Module:
    """pytorchvideo's hub ``i3d_r50`` architecture, random weights."""
    hub = pytorchvideo("models.hub")
    return hub.i3d_r50(pretrained=False, head_pool_kernel_size=head_pool_kernel_size, **kw)


def load_pyth(model: nn.Module, path: Path) -> nn.Module:
    """Load a pytorchvideo model-zoo ``.pyth`` checkpoint (``{"model_state": ...}``) strictly."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # zoo files may pickle training metadata next to the weights
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["model_state"] if isinstance(ckpt, dict) and "model_state" in ckpt else ckpt
    model.load_state_dict(state, strict=True)
    return model


def _video_clip(frames: Tensor, size: tuple[int, int], backbone: Backbone) -> Tensor:
    """(T,3,H,W) in [0,1] -> normalised (1,3,T,h,w)."""
    x = resize_frames(check_frames(frames), size)
    return backbone.normalize(x.permute(1, 0, 2, 3).unsqueeze(0))


@register_backbone
class I3DR50(Backbone):
    name = "i3d_r50"
    input_kind = "video"
    mean = KINETICS_MEAN
    std = KINETICS_STD
    default_input_size = (32, 224, 224)  # (T, H, W)
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url=f"{ZOO}/{FILENAME}",
        description="I3D-R50 Kinetics-400 weights (pytorchvideo model zoo)",
        fallbacks=(lambda: torch_hub_checkpoint(FILENAME),),
    )
    # stem, res2, temporal pool, res3, res4, res5
    curated_cuts = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5")
    default_cut = "blocks.3"

    def build(self, *, num_classes: int = 400, input_size: tuple[int, int, int] | None = None) -> nn.Module:
        kernel = (4, 7, 7)
        if input_size is not None:  # small test clips: pool the whole final feature map
            t, h, w = input_size
            kernel = (max(t // 2, 1), max(h // 32, 1), max(w // 32, 1))
        return with_preprocessing(i3d_r50(head_pool_kernel_size=kernel, model_num_class=num_classes),
                                  input_size=input_size)

    def load_weights(self, path: Path) -> nn.Module:
        return load_pyth(i3d_r50(), path)

    def preprocess(self, frames: Tensor) -> Tensor:
        """(T,3,H,W) frames in [0,1] -> one clip (1,3,T,H',W')."""
        return _video_clip(frames, tuple(self.input_size[-2:]), self)
