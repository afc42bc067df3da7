"""HNeRV (Chen et al., CVPR 2023): a ConvNeXt encoder gives each frame a small embedding; a NeRV-style decoder
with growing kernels and per-block channel reduction turns it back into the frame. Only the decoder and the
embeddings are stored; the encoder exists while training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import INR
from .config import BlockInfo, INRConfig, choose_layout, conv_flops, conv_params, seed_size_rule, widest
from .layers import ConvNeXtBlock, LayerNorm2d, make_activation, nerv_decoder
from .registry import register_inr

__all__ = ["HNeRV", "HNeRVConfig", "HNeRVEncoder", "hnerv_config", "hnerv_for_params"]


@dataclass(frozen=True)
class HNeRVConfig(INRConfig):
    arch: ClassVar[str] = "hnerv"
    # format-1 header layout: NeRV's mlp_dim / pe_base / pe_levels were written into HNeRV headers too
    stored_layout: ClassVar[tuple[str, ...]] = ("mlp_dim", "pe_base", "pe_levels", "embed_dim", "enc_dim")
    stored_constants: ClassVar[dict[str, Any]] = {"mlp_dim": 512, "pe_base": 1.25, "pe_levels": 40}

    embed_dim: int = 16  # channels of the per-frame embedding
    enc_dim: int = 64  # width of the ConvNeXt encoder (not stored)

    def stem_info(self) -> list[BlockInfo]:
        gh, gw = self.grid
        return [BlockInfo("embeddings", self.embed_dim, gh, gw, 0, 1, self.frames * self.embed_dim * gh * gw, 0.0),
                BlockInfo("stem", self.stem_channels, gh, gw, 1, 1, conv_params(self.embed_dim, self.stem_channels, 1),
                          conv_flops(self.embed_dim, self.stem_channels, 1, gh, gw) / 1e9, exit=0)]


def hnerv_config(
    frames: int,
    height: int,
    width: int,
    *,
    stem_dim: int | None = None,
    lower_width: int = 12,
    embed_dim: int = 16,
    enc_dim: int = 64,
    num_blocks: int | None = None,
    reduce: float = 1.2,
    ks: tuple[int, int] = (1, 5),
    activation: str = "gelu",
    norm: str = "none",
) -> HNeRVConfig:
    """HNeRV: per-frame embedding -> 1x1 conv stem -> blocks with growing kernels (1, 3, 5, 5, ...) and channels
    divided by ``reduce`` per block (floor ``lower_width``) -> 3x3 RGB head. ``stem_dim`` (first decoder width)
    defaults to Table 1's lower width for the frame count.
    """
    stem = stem_dim or seed_size_rule(frames)[1]
    strides, ch, cw = choose_layout(height, width, num_blocks)
    channels, c = [], float(stem)
    for _ in strides:
        c = max(round(c / reduce), lower_width)
        channels.append(int(c))
    kernels = tuple(min(ks[0] + 2 * i, ks[1]) for i in range(len(strides)))
    return HNeRVConfig(
        frames=frames, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
        channels=tuple(channels), kernels=kernels, stem_channels=stem, embed_dim=embed_dim, enc_dim=enc_dim,
        activation=activation, norm=norm, head_kernel=3, out_act="sigmoid",
    )


def hnerv_for_params(frames: int, height: int, width: int, max_params: int, *, num_blocks: int | None = None,
                     enc_dim: int = 16, activation: str = "gelu") -> HNeRVConfig | None:
    """The largest HNeRV of one shape that fits ``max_params``. The embeddings grow with the frame count, so they
    get at most a quarter of the budget (2-16 channels; HNeRV's own is 16); the decoder takes the rest with
    first width ``w`` and channel floor ``max(8, w // 4)`` (docs/BENCHMARKS.md's hnerv-xs/s: w = 24/48). The
    encoder (not stored) is 16 wide: it is most of a small model's training time, and at equal time the
    narrower one wins (gradio b.mp4, 24 frames of 240x136, 60 s: 33.8 dB with 16 against 30.6 dB with 64)."""
    strides, ch, cw = choose_layout(height, width, num_blocks)
    p = math.prod(strides)
    embed = max(2, min(16, max_params // (4 * frames * (ch // p) * (cw // p))))
    return widest(lambda w: hnerv_config(frames, height, width, stem_dim=w, lower_width=max(8, w // 4),
                                         embed_dim=embed, enc_dim=enc_dim, num_blocks=num_blocks,
                                         activation=activation), max_params)


class HNeRVEncoder(nn.Module):
    """Patchify-downsample (stride s, mirroring the decoder's strides) + one ConvNeXt block per stage."""

    def __init__(self, config: HNeRVConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for s in reversed(config.strides):
            layers += [nn.Conv2d(cin, config.enc_dim, s, stride=s), LayerNorm2d(config.enc_dim, eps=1e-6),
                       ConvNeXtBlock(config.enc_dim)]
            cin = config.enc_dim
        layers.append(nn.Conv2d(cin, config.embed_dim, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, frames: Tensor) -> Tensor:
        return self.layers(frames)


@register_inr("hnerv", config=HNeRVConfig, sizing=hnerv_config, for_params=hnerv_for_params)
class HNeRV(INR):
    config: HNeRVConfig
    recipe = "hnerv"
    # within ~0.6 dB of its 60-epoch PSNR after 30 epochs on a 32-frame clip (docs/BENCHMARKS.md, bikes)
    min_epochs = 30
    quant_axes = {"embeddings": 1}  # (frames, embed_dim, h, w): one scale per embedding channel

    def __init__(self, config: HNeRVConfig, with_encoder: bool = True) -> None:
        if not isinstance(config, HNeRVConfig):
            raise ValueError(f"HNeRV needs an HNeRVConfig (arch='hnerv'), got arch={config.arch!r}")
        super().__init__(config)
        self.blocks, self.head = nerv_decoder(config)
        gh, gw = config.grid
        self.encoder = HNeRVEncoder(config) if with_encoder else None
        self.register_buffer("embeddings", torch.zeros(config.frames, config.embed_dim, gh, gw))
        self.stem_conv = nn.Conv2d(config.embed_dim, config.stem_channels, 1)
        self.stem_act = make_activation(config.activation)

    @classmethod
    def from_config(cls, config: HNeRVConfig, *, decoder_only: bool = False) -> HNeRV:
        return cls(config, with_encoder=not decoder_only)

    def pad_to_canvas(self, frames: Tensor) -> Tensor:
        """Replicate-pad source-size frames to the decoder canvas so the encoder's strides divide them."""
        dh = self.config.height - frames.shape[-2]
        dw = self.config.width - frames.shape[-1]
        return F.pad(frames, (0, dw, 0, dh), mode="replicate") if dh or dw else frames

    def embed(self, frames: Tensor) -> Tensor:
        if self.encoder is None:
            raise RuntimeError("this HNeRV was loaded without its encoder (decoder-only); it cannot embed frames")
        return self.encoder(self.pad_to_canvas(frames))

    @torch.no_grad()
    def set_embeddings(self, frames: Tensor, batch_size: int = 8) -> None:
        """Store the encoder's embedding of every frame: afterwards ``forward(idx)`` needs no frames."""
        if frames.shape[0] != self.config.frames:
            raise ValueError(f"expected {self.config.frames} frames, got {frames.shape[0]}")
        dev = self.embeddings.device
        self.embeddings.copy_(torch.cat([self.embed(frames[i:i + batch_size].to(dev))
                                         for i in range(0, frames.shape[0], batch_size)]))

    def stem(self, idx: Tensor, frames: Tensor | None = None) -> Tensor:
        emb = self.embed(frames) if frames is not None else self.embeddings[idx]
        return self.stem_act(self.stem_conv(emb))

    def stored_state_dict(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    # training hooks: HNeRV learns from the frame itself (encoder -> embedding -> decoder), then keeps only the
    # embeddings the trained encoder gives each frame
    def fit_inputs(self, frames: Tensor, idx: Tensor) -> Tensor | None:
        return frames[idx.to(frames.device)] if self.encoder is not None else None

    def after_fit(self, frames: Tensor) -> None:
        self.set_embeddings(frames)
