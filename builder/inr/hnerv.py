"""HNeRV (Chen et al., CVPR 2023): a ConvNeXt encoder gives each frame a small embedding; a NeRV-style decoder
with growing kernels and per-block channel reduction turns it back into the frame. Only the decoder and the
embeddings are stored; the encoder exists while training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import INRConfig
from .base import INR
from .layers import ConvNeXtBlock, LayerNorm2d, make_activation

__all__ = ["HNeRV", "HNeRVEncoder"]


class HNeRVEncoder(nn.Module):
    """Patchify-downsample (stride s, mirroring the decoder's strides) + one ConvNeXt block per stage."""

    def __init__(self, config: INRConfig) -> None:
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


class HNeRV(INR):
    def __init__(self, config: INRConfig, with_encoder: bool = True) -> None:
        if config.arch != "hnerv":
            raise ValueError(f"HNeRV needs an arch='hnerv' config, got {config.arch!r}")
        super().__init__(config)
        gh, gw = config.grid
        self.encoder = HNeRVEncoder(config) if with_encoder else None
        self.register_buffer("embeddings", torch.zeros(config.frames, config.embed_dim, gh, gw))
        self.stem_conv = nn.Conv2d(config.embed_dim, config.stem_channels, 1)
        self.stem_act = make_activation(config.activation)

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
