"""The one INR interface every family implements.

An INR maps frame indices to RGB frames through ``stem -> block 1 .. block n -> head``. Every block is an exit:
``features(idx, exit_block=k)`` returns the activation after block ``k`` (``k = 0`` is the stem's initial feature
map), which is what downstream adapters read instead of decoding full frames.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import INRConfig
from .layers import NeRVBlock

__all__ = ["BlockInfo", "INR", "block_info", "conv_flops"]


@dataclass(frozen=True)
class BlockInfo:
    """Static description of one stage; known from the config alone, without running the model.

    ``gflops`` counts conv/matmul multiply-adds x 2 per frame (as ``torch.utils.flop_counter`` does);
    ``params`` are the stored parameters of the stage.
    """

    name: str
    out_channels: int
    out_height: int
    out_width: int
    kernel: int
    stride: int
    params: int
    gflops: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.out_channels, self.out_height, self.out_width

    def to_dict(self) -> dict:
        return asdict(self)


def conv_flops(cin: int, cout: int, k: int, h: int, w: int) -> float:
    """FLOPs of a stride-1, same-padded k x k conv on an h x w map (2 x MACs, bias excluded)."""
    return 2.0 * cin * cout * k * k * h * w


def _conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def block_info(cfg: INRConfig) -> list[BlockInfo]:
    """Stem, each decoder block and the head of ``cfg``'s decoder (plus HNeRV's stored embeddings)."""
    gh, gw = cfg.grid
    rows: list[BlockInfo] = []
    if cfg.arch == "nerv":
        pe = 2 * cfg.pe_levels
        out = cfg.stem_channels * gh * gw
        params = pe * cfg.mlp_dim + cfg.mlp_dim + cfg.mlp_dim * out + out
        flops = 2.0 * (pe * cfg.mlp_dim + cfg.mlp_dim * out)
        rows.append(BlockInfo("stem", cfg.stem_channels, gh, gw, 0, 1, params, flops / 1e9))
    else:
        rows.append(BlockInfo("embeddings", cfg.embed_dim, gh, gw, 0, 1, cfg.frames * cfg.embed_dim * gh * gw, 0.0))
        rows.append(BlockInfo("stem", cfg.stem_channels, gh, gw, 1, 1,
                              _conv_params(cfg.embed_dim, cfg.stem_channels, 1),
                              conv_flops(cfg.embed_dim, cfg.stem_channels, 1, gh, gw) / 1e9))
    cin, h, w = cfg.stem_channels, gh, gw
    for i, (s, c, k) in enumerate(zip(cfg.strides, cfg.channels, cfg.kernels), start=1):
        params = _conv_params(cin, c * s * s, k) + (2 * c if cfg.norm == "instance" else 0)
        flops = conv_flops(cin, c * s * s, k, h, w)
        h, w, cin = h * s, w * s, c
        rows.append(BlockInfo(f"block{i}", c, h, w, k, s, params, flops / 1e9))
    rows.append(BlockInfo("head", 3, cfg.out_height, cfg.out_width, cfg.head_kernel, 1,
                          _conv_params(cin, 3, cfg.head_kernel),
                          conv_flops(cin, 3, cfg.head_kernel, h, w) / 1e9))
    return rows


class INR(nn.Module):
    """Base class: subclasses build ``self.stem_forward`` inputs; the decoder blocks and head live here."""

    config: INRConfig

    def __init__(self, config: INRConfig) -> None:
        super().__init__()
        self.config = config
        cin = config.stem_channels
        blocks = []
        for s, c, k in zip(config.strides, config.channels, config.kernels):
            blocks.append(NeRVBlock(cin, c, k, s, config.norm, config.activation))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, 3, config.head_kernel, padding=config.head_kernel // 2)

    # --- to implement per family -------------------------------------------------------------------------------
    def stem(self, idx: Tensor, frames: Tensor | None = None) -> Tensor:
        """Initial feature map ``(B, stem_channels, *grid)`` for frame indices ``idx``."""
        raise NotImplementedError

    def stored_state_dict(self) -> dict[str, Tensor]:
        """The tensors that make up the stored representation (what the bitstream holds)."""
        return dict(self.state_dict())

    # --- shared ---------------------------------------------------------------------------------------------
    @property
    def block_info(self) -> list[BlockInfo]:
        return block_info(self.config)

    @property
    def num_blocks(self) -> int:
        return self.config.num_blocks

    def frame_indices(self, idx: int | Sequence[int] | Tensor) -> Tensor:
        """Validate frame indices and return them as a 1-D LongTensor on the model's device."""
        t = torch.as_tensor(idx, device=self.head.weight.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"frame indices must be integers, got dtype {t.dtype}")
        t = t.long().reshape(-1)
        n = self.config.frames
        if t.numel() == 0:
            raise ValueError("no frame indices given")
        bad = t[(t < 0) | (t >= n)]
        if bad.numel():
            raise IndexError(f"frame index {int(bad[0])} out of range: this video has {n} frames (0..{n - 1})")
        return t

    def forward_intermediates(
        self,
        idx: int | Sequence[int] | Tensor,
        indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
        frames: Tensor | None = None,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Run the decoder and collect the features after the blocks in ``indices`` (0 = stem, 1..n = blocks).

        ``indices=None`` collects all; ``stop_early`` skips the blocks after the last requested one and the head
        (then the RGB output is ``None``). timm's ``forward_intermediates`` contract.
        """
        n = self.num_blocks
        if indices is None:
            wanted = list(range(n + 1))
        elif isinstance(indices, int):
            wanted = [indices]
        else:
            wanted = list(indices)
        for k in wanted:
            if not 0 <= k <= n:
                raise IndexError(f"exit block {k} out of range: this INR has blocks 1..{n} (0 = stem)")
        last = max(wanted) if stop_early else n
        x = self.stem(self.frame_indices(idx), frames)
        feats = [x] if 0 in wanted else []
        for k, block in enumerate(self.blocks[:last], start=1):
            x = block(x)
            if k in wanted:
                feats.append(x)
        if stop_early and last < n:
            return None, feats
        return self.to_rgb(x), feats

    def features(self, idx: int | Sequence[int] | Tensor, exit_block: int) -> Tensor:
        """The activation after decoder block ``exit_block`` (later blocks and the head are not computed)."""
        return self.forward_intermediates(idx, [exit_block], stop_early=True)[1][0]

    def to_rgb(self, x: Tensor) -> Tensor:
        """Head + output activation + crop from the canvas to the source size: last block's features -> frames."""
        y = self.head(x)
        y = (torch.tanh(y) + 1) * 0.5 if self.config.out_act == "tanh" else torch.sigmoid(y)
        return y[..., : self.config.out_height, : self.config.out_width]

    def forward(self, idx: int | Sequence[int] | Tensor, frames: Tensor | None = None) -> Tensor:
        x = self.stem(self.frame_indices(idx), frames)
        for block in self.blocks:
            x = block(x)
        return self.to_rgb(x)

    @torch.no_grad()
    def decode_all(self, batch_size: int = 8) -> Tensor:
        """All frames ``(T, 3, H, W)`` in [0, 1], decoded in batches."""
        out = [self(torch.arange(i, min(i + batch_size, self.config.frames)))
               for i in range(0, self.config.frames, batch_size)]
        return torch.cat(out).float().cpu()

    def num_params(self) -> int:
        return sum(t.numel() for t in self.stored_state_dict().values())

    @property
    def total_gflops(self) -> float:
        return math.fsum(b.gflops for b in self.block_info)
