"""The one copy of the INR building blocks: positional encoding, NeRV upsampling block, ConvNeXt encoder block."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PositionalEncoding", "NeRVBlock", "ConvNeXtBlock", "LayerNorm2d", "make_activation", "nerv_decoder"]


def make_activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}[name]()


class PositionalEncoding(nn.Module):
    """NeRV's frame-index encoding: t in [0, 1] -> [sin(b^l pi t), cos(b^l pi t)] for l < levels."""

    def __init__(self, base: float, levels: int) -> None:
        super().__init__()
        self.register_buffer("freqs", (base ** torch.arange(levels, dtype=torch.float64) * math.pi).float(),
                             persistent=False)

    @property
    def dim(self) -> int:
        return 2 * self.freqs.numel()

    def forward(self, t: Tensor) -> Tensor:
        x = t[:, None].float() * self.freqs[None]
        return torch.cat([torch.sin(x), torch.cos(x)], dim=1)


class NeRVBlock(nn.Module):
    """conv (k x k, C_in -> C_out * s^2) -> PixelShuffle(s) -> norm -> activation (seed §1.3)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str, activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * stride * stride, kernel, padding=kernel // 2)
        self.shuffle = nn.PixelShuffle(stride)
        self.norm = nn.InstanceNorm2d(cout, affine=True) if norm == "instance" else nn.Identity()
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.shuffle(self.conv(x))))


def nerv_decoder(config) -> tuple[nn.ModuleList, nn.Conv2d]:
    """The NeRV block chain and RGB head of a config's geometry (the decoder NeRV and HNeRV share)."""
    cin, blocks = config.stem_channels, []
    for s, c, k in zip(config.strides, config.channels, config.kernels):
        blocks.append(NeRVBlock(cin, c, k, s, config.norm, config.activation))
        cin = c
    return nn.ModuleList(blocks), nn.Conv2d(cin, 3, config.head_kernel, padding=config.head_kernel // 2)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor (ConvNeXt's channels_first norm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LN -> 1x1 (4x) -> GELU -> 1x1 with layer scale and a residual (ConvNeXt)."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pw1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gamma * self.pw2(self.act(self.pw1(self.norm(self.dwconv(x)))))
