"""SlowFast-R50 (Kinetics-400, 8x8) from pytorchvideo.

Architecture: ``pytorchvideo.models.hub.slowfast_r50`` (``create_slowfast`` config, built with
``pretrained=False``). Weights: ``SLOWFAST_8x8_R50.pyth`` (``model_state`` loaded strictly) in
``$NVP_WEIGHTS_DIR`` or the torch hub cache.

Input: a list ``[slow, fast]`` of clips: fast = the 32 frames (1,3,32,224,224), slow = every 4th
(alpha = 4) of them, both normalised with the Kinetics mean/std. Every cut carries two tensors,
the slow and the fast pathway.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..weights import WeightsSpec, torch_hub_checkpoint
from ._ptv import KINETICS_MEAN, KINETICS_STD, pytorchvideo
from .base import Backbone, register_backbone, with_preprocessing
from .ptv_i3d import ZOO, _video_clip, load_pyth

__all__ = ["SlowFastR50", "slowfast_r50", "pack_pathways"]

FILENAME = "SLOWFAST_8x8_R50.pyth"
ALPHA = 4


def slowfast_r50(head_pool_kernel_sizes=((8, 7, 7), (32, 7, 7)), **kw: Any) -> nn.Module:
    """pytorchvideo's hub ``slowfast_r50`` architecture, random weights."""
    hub = pytorchvideo("models.hub")
    return hub.slowfast_r50(pretrained=False, head_pool_kernel_sizes=head_pool_kernel_sizes, **kw)


def pack_pathways(clip: Tensor, alpha: int = ALPHA) -> list[Tensor]:
    """(B,3,T,H,W) -> [slow (B,3,T//alpha,H,W), fast (B,3,T,H,W)] (pytorchvideo's PackPathway)."""
    t = clip.shape[2]
    idx = torch.linspace(0, t - 1, max(t // alpha, 1)).long()
    return [clip.index_select(2, idx.to(clip.device)), clip]


@register_backbone
class SlowFastR50(Backbone):
    name = "slowfast_r50"
    input_kind = "video"
    mean = KINETICS_MEAN
    std = KINETICS_STD
    default_input_size = (32, 224, 224)  # fast pathway (T, H, W); slow has T // 4 frames
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url=f"{ZOO}/{FILENAME}",
        description="SlowFast-R50 Kinetics-400 weights (pytorchvideo model zoo)",
        fallbacks=(lambda: torch_hub_checkpoint(FILENAME),),
    )
    # blocks.0 stem (+ fast->slow fusion), blocks.1..4 residual stages; blocks.5 pools, blocks.6 classifies
    curated_cuts = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")
    default_cut = "blocks.2"

    def build(self, *, num_classes: int = 400, input_size: tuple[int, int, int] | None = None) -> nn.Module:
        kernels = ((8, 7, 7), (32, 7, 7))
        if input_size is not None:
            t, h, w = input_size
            s = (max(h // 32, 1), max(w // 32, 1))
            kernels = ((max(t // ALPHA, 1), *s), (t, *s))
        return with_preprocessing(slowfast_r50(head_pool_kernel_sizes=kernels, model_num_class=num_classes),
                                  input_size=input_size)

    def load_weights(self, path: Path) -> nn.Module:
        return load_pyth(slowfast_r50(), path)

    def fx_options(self) -> dict:
        from torch.fx._symbolic_trace import PH

        # Net.forward(x) takes the [slow, fast] list and MultiPathWayWithFuse asserts it is a list
        return {"concrete_args": {"x": [PH, PH]}}

    def preprocess(self, frames: Tensor) -> list[Tensor]:
        """(T,3,H,W) frames in [0,1] -> [slow (1,3,T/4,H',W'), fast (1,3,T,H',W')]."""
        return pack_pathways(_video_clip(frames, tuple(self.input_size[-2:]), self))

    def example_inputs(self, batch: int = 1, input_size: Sequence[int] | None = None) -> tuple[list[Tensor]]:
        return (pack_pathways(torch.randn(batch, 3, *(input_size or self.input_size))),)

    def cut_names(self, at: str, n: int) -> list[str]:
        return ["slow", "fast"] if n == 2 else super().cut_names(at, n)
