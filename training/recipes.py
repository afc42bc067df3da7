"""INR training recipes by name: optimiser settings and reconstruction loss (an INR family names its recipe)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from .metrics import ssim

__all__ = ["Recipe", "RECIPES", "nerv_loss", "hnerv_loss", "dnerv_loss"]


def nerv_loss(pred: Tensor, target: Tensor) -> Tensor:
    """NeRV's fusion loss: 0.7 L1 + 0.3 (1 - SSIM)."""
    return 0.7 * F.l1_loss(pred, target) + 0.3 * (1 - ssim(pred, target))


def hnerv_loss(pred: Tensor, target: Tensor) -> Tensor:
    """HNeRV trains with plain L2."""
    return F.mse_loss(pred, target)


def dnerv_loss(pred: Tensor, target: Tensor) -> Tensor:
    """D-NeRV's reconstruction loss (L1 + SSIM, the NeRV fusion weights): 0.7 L1 + 0.3 (1 - SSIM)."""
    return nerv_loss(pred, target)


@dataclass(frozen=True)
class Recipe:
    lr: float
    betas: tuple[float, float]
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizer: str = "adam"  # "adam" | "adamw" (training.collection reads it; fit_inr uses Adam)
    weight_decay: float = 0.0


# NeRV: Adam(5e-4, betas 0.5/0.999) in the paper; small CPU-sized models converge faster at 1e-3.
RECIPES = {
    "nerv": Recipe(lr=1e-3, betas=(0.9, 0.999), loss=nerv_loss),
    "hnerv": Recipe(lr=1e-3, betas=(0.9, 0.999), loss=hnerv_loss),
    # D-NeRV's reference recipe: AdamW, warm-up + cosine (TrainConfig.warmup), L1 + SSIM; lr measured on CPU-sized
    # collections (training.collection)
    "dnerv": Recipe(lr=2e-3, betas=(0.9, 0.999), loss=dnerv_loss, optimizer="adamw", weight_decay=0.01),
}
