"""The neural-centric path: INR decoder prefix (exit block k) -> adapters -> backbone tail (after layer l)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..adapters import adapter_from_config
from ..inr import INR

__all__ = ["inr_features", "DerivedMask", "piece_from_config", "AdapterSet", "NVPPath"]


@torch.no_grad()
def inr_features(inr: INR, frames: Sequence[int], exit_block: int, video: bool) -> Tensor:
    """Features after ``exit_block`` for the given frames: (N, C, h, w), or (1, C, T, h, w) for a clip."""
    f = torch.cat([inr.features(list(frames[i:i + 8]), exit_block) for i in range(0, len(frames), 8)])
    return f.permute(1, 0, 2, 3).unsqueeze(0) if video else f


class DerivedMask(nn.Module):
    """A cut's padding mask, made rather than learned (DETR's cut carries features + mask): all-valid, at the
    shape and dtype the backbone's front produces. Frames of one video share one size, so DETR never pads them and
    the front's own mask is all ones too."""

    kind = "mask"

    def __init__(self, shape: Sequence[int], dtype: str) -> None:
        super().__init__()
        self.shape, self.dtype = tuple(int(s) for s in shape), dtype

    def forward(self, f: Tensor) -> Tensor:
        return torch.ones((f.shape[0], *self.shape), dtype=getattr(torch, self.dtype), device=f.device)

    def num_params(self) -> int:
        return 0

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "out_shape": list(self.shape), "dtype": self.dtype}


def piece_from_config(cfg: dict[str, Any]) -> nn.Module:
    """One stored piece of an :class:`AdapterSet`: a derived mask or an adapter."""
    return DerivedMask(cfg["out_shape"], cfg["dtype"]) if cfg["kind"] == DerivedMask.kind else adapter_from_config(cfg)


class AdapterSet(nn.ModuleList):
    """One adapter per tensor crossing the cut (one for most backbones; SlowFast's cut carries two pathways;
    DETR's carries features + a :class:`DerivedMask`)."""

    def forward(self, f: Tensor) -> tuple[Tensor, ...]:
        return tuple(a(f) for a in self)

    def num_params(self) -> int:
        return sum(a.num_params() for a in self)

    def configs(self) -> list[dict[str, Any]]:
        return [a.config() for a in self]

    @classmethod
    def from_configs(cls, configs: Sequence[dict[str, Any]]) -> AdapterSet:
        return cls([piece_from_config(c) for c in configs])


class NVPPath(nn.Module):
    """prefix (INR up to ``exit_block``) -> adapters -> tail; ``forward(frame_indices)`` returns the task output."""

    def __init__(self, inr: INR, exit_block: int, adapters: AdapterSet, tail: nn.Module, video: bool) -> None:
        super().__init__()
        self.inr, self.exit_block, self.adapters, self.tail, self.video = inr, exit_block, adapters, tail, video

    @torch.no_grad()
    def forward(self, frames: Sequence[int]) -> Any:
        return self.tail(*self.adapters(inr_features(self.inr, frames, self.exit_block, self.video)))
