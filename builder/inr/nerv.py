"""NeRV (Chen et al., NeurIPS 2021): a video as a function of the frame index."""
from __future__ import annotations

from torch import Tensor, nn

from ..config import INRConfig
from .base import INR
from .layers import PositionalEncoding, make_activation

__all__ = ["NeRV"]


class NeRV(INR):
    """PE(t) -> MLP stem -> initial ``stem_channels x grid`` map -> NeRV blocks -> 1x1 RGB head."""

    def __init__(self, config: INRConfig) -> None:
        if config.arch != "nerv":
            raise ValueError(f"NeRV needs an arch='nerv' config, got {config.arch!r}")
        super().__init__(config)
        self.pe = PositionalEncoding(config.pe_base, config.pe_levels)
        gh, gw = config.grid
        self.mlp = nn.Sequential(
            nn.Linear(self.pe.dim, config.mlp_dim), make_activation(config.activation),
            nn.Linear(config.mlp_dim, config.stem_channels * gh * gw), make_activation(config.activation),
        )

    def stem(self, idx: Tensor, frames: Tensor | None = None) -> Tensor:
        t = idx.float() / max(self.config.frames - 1, 1)
        gh, gw = self.config.grid
        return self.mlp(self.pe(t)).view(-1, self.config.stem_channels, gh, gw)
