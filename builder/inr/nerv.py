"""NeRV (Chen et al., NeurIPS 2021): a video as a function of the frame index."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from .base import INR
from .config import BlockInfo, INRConfig, choose_layout, seed_size_rule, widest
from .layers import PositionalEncoding, make_activation, nerv_decoder
from .registry import register_inr

__all__ = ["NeRV", "NeRVConfig", "nerv_config", "nerv_for_params"]


@dataclass(frozen=True)
class NeRVConfig(INRConfig):
    arch: ClassVar[str] = "nerv"
    # format-1 header layout: HNeRV's embed_dim / enc_dim were written into NeRV headers too (see INRConfig)
    stored_layout: ClassVar[tuple[str, ...]] = ("mlp_dim", "pe_base", "pe_levels", "embed_dim", "enc_dim")
    stored_constants: ClassVar[dict[str, Any]] = {"embed_dim": 16, "enc_dim": 64}

    mlp_dim: int = 512  # hidden width of the MLP stem
    pe_base: float = 1.25  # positional encoding base
    pe_levels: int = 40  # positional encoding levels (2 * levels inputs)

    def stem_info(self) -> list[BlockInfo]:
        gh, gw = self.grid
        pe = 2 * self.pe_levels
        out = self.stem_channels * gh * gw
        params = pe * self.mlp_dim + self.mlp_dim + self.mlp_dim * out + out
        flops = 2.0 * (pe * self.mlp_dim + self.mlp_dim * out)
        return [BlockInfo("stem", self.stem_channels, gh, gw, 0, 1, params, flops / 1e9, exit=0)]


def nerv_config(
    frames: int,
    height: int,
    width: int,
    *,
    stem_dim: int | None = None,
    lower_width: int | None = None,
    mlp_dim: int = 512,
    num_blocks: int | None = None,
    reduction: int = 2,
    activation: str = "relu",
    norm: str = "instance",
    pe_levels: int = 40,
) -> NeRVConfig:
    """NeRV as in the seed: PE(t) -> MLP stem -> [conv -> PixelShuffle -> norm -> act] x n -> 1x1 RGB head.

    Channels follow NeRV: block 1 keeps ``stem_dim``, each later block halves (``reduction``) but never drops
    below ``lower_width``. Missing sizes come from seed Table 1 by frame count.
    """
    t_stem, t_lower = seed_size_rule(frames)
    stem = stem_dim or t_stem
    lower = lower_width or t_lower
    strides, ch, cw = choose_layout(height, width, num_blocks)
    channels, c = [], stem
    for i in range(len(strides)):
        c = stem if i == 0 else max(c // reduction, lower)
        channels.append(c)
    return NeRVConfig(
        frames=frames, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
        channels=tuple(channels), kernels=(3,) * len(strides), stem_channels=stem, mlp_dim=mlp_dim,
        pe_levels=pe_levels, activation=activation, norm=norm, head_kernel=1, out_act="tanh",
    )


def nerv_for_params(frames: int, height: int, width: int, max_params: int, *, num_blocks: int | None = None,
                    activation: str = "relu", norm: str = "instance") -> NeRVConfig | None:
    """The largest NeRV of one shape that fits ``max_params``: width ``w`` gives stem ``w``, block floor ``2w``
    and an MLP of ``8w`` (at most 512), the proportions of the CPU-sized models docs/BENCHMARKS.md measured
    (nerv-xs/s: w = 8/16); then the MLP widens (up to ``16w``) into what is left, since one step of ``w`` is a
    large step in size for small models."""
    def shape(w: int, mlp: int) -> NeRVConfig:
        return nerv_config(frames, height, width, stem_dim=w, lower_width=2 * w, mlp_dim=mlp, num_blocks=num_blocks,
                           activation=activation, norm=norm)

    base = widest(lambda w: shape(w, min(512, 8 * w)), max_params)
    if base is None:
        return None
    w = base.stem_channels
    return widest(lambda m: shape(w, m), max_params, lo=min(512, 8 * w), hi=min(512, 16 * w))


@register_inr("nerv", config=NeRVConfig, sizing=nerv_config, for_params=nerv_for_params)
class NeRV(INR):
    """PE(t) -> MLP stem -> initial ``stem_channels x grid`` map -> NeRV blocks -> 1x1 RGB head."""

    config: NeRVConfig
    recipe = "nerv"
    # NeRV learns everything from the frame index: still climbing at 60 epochs on a 32-frame clip (BENCHMARKS.md)
    min_epochs = 100

    def __init__(self, config: NeRVConfig) -> None:
        if not isinstance(config, NeRVConfig):
            raise ValueError(f"NeRV needs a NeRVConfig (arch='nerv'), got arch={config.arch!r}")
        super().__init__(config)
        self.blocks, self.head = nerv_decoder(config)
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
