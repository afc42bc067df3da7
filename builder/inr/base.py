"""The one INR interface every family implements.

An INR maps frame indices to RGB frames through ``stem -> block 1 .. block n -> head``. Every block is an exit:
``features(idx, exit_block=k)`` returns the activation after block ``k`` (``k = 0`` is the stem's initial feature
map), which is what downstream adapters read instead of decoding full frames.
"""
from __future__ import annotations

import math
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from .config import BlockInfo, INRConfig

__all__ = ["INR", "check_frame_indices"]


def check_frame_indices(idx: int | Sequence[int] | Tensor, frames: int,
                        device: torch.device | str | None = None) -> Tensor:
    """``idx`` as a 1-D LongTensor on ``device`` after the checks every decoder makes (integers, at least one,
    each in ``0..frames-1``), with the errors a client sees."""
    t = torch.as_tensor(idx, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"frame indices must be integers, got dtype {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 0:
        raise ValueError("no frame indices given")
    bad = t[(t < 0) | (t >= frames)]
    if bad.numel():
        raise IndexError(f"frame index {int(bad[0])} out of range: this video has {frames} frames (0..{frames - 1})")
    return t


class INR(nn.Module):
    """Base class. A family builds its decoder (``self.blocks``, ``self.head``; ``layers.nerv_decoder`` is the
    NeRV one) and its stem, and says how it is stored and trained; running the decoder lives here.

    Training hooks (``training.fit_inr`` and ``builder.api`` call these, never the family by name): ``recipe``
    names the family's recipe in ``training.recipes``; ``fit_inputs`` is what the loop feeds ``forward`` beside
    the indices; ``before_fit`` runs once before a fresh fit (data-dependent init); ``after_fit`` runs once
    fitting is done, before the model is coded.
    """

    config: INRConfig
    blocks: nn.ModuleList
    head: nn.Module
    recipe: ClassVar[str]
    # epochs the family needs for a usable fit; time-budget sizing (builder.inr.rate) plans for at least these
    min_epochs: ClassVar[int] = 50
    # Per-channel quantisation axis of stored tensors that are not (out, in, ...) weights.
    quant_axes: ClassVar[dict[str, int]] = {}

    def __init__(self, config: INRConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config: INRConfig, *, decoder_only: bool = False) -> INR:
        """A model of ``config`` with random weights; ``decoder_only`` drops training-only parts."""
        return cls(config)

    # --- to implement per family -------------------------------------------------------------------------------
    def stem(self, idx: Tensor, frames: Tensor | None = None) -> Tensor:
        """Initial feature map ``(B, stem_channels, *grid)`` for frame indices ``idx``."""
        raise NotImplementedError

    def stored_state_dict(self) -> dict[str, Tensor]:
        """The tensors that make up the stored representation (what the bitstream holds)."""
        return dict(self.state_dict())

    def fit_inputs(self, frames: Tensor, idx: Tensor) -> Tensor | None:
        """The ``frames`` argument of ``forward`` for a training batch ``idx`` of the clip ``frames`` (on the
        CPU): ``None`` for families that only see the index."""
        return None

    @torch.no_grad()
    def before_fit(self, frames: Tensor) -> None:
        """Called once before fitting from scratch: the RGB head starts at the clip's mean colour. Without it a
        mostly dark clip (gradio's b.mp4, a globe on black) drives the squashing output into saturation in the
        first epochs and training stalls at a black frame: 20.3 dB at any size and length, 28.1 dB after 15
        epochs with it (HNeRV, 24 frames of 240x136)."""
        mu = frames.float().mean((0, 2, 3)).clamp(1e-3, 1 - 1e-3).to(self.head.bias.device)
        self.head.bias.copy_(torch.atanh(2 * mu - 1) if self.config.out_act == "tanh" else torch.logit(mu))

    def after_fit(self, frames: Tensor) -> None:
        """Called once fitting to ``frames`` is done, before coding (e.g. HNeRV stores its embeddings)."""

    # --- shared ---------------------------------------------------------------------------------------------
    @property
    def block_info(self) -> list[BlockInfo]:
        return self.config.block_info()

    @property
    def num_blocks(self) -> int:
        return self.config.num_blocks

    def frame_indices(self, idx: int | Sequence[int] | Tensor) -> Tensor:
        """Validate frame indices and return them as a 1-D LongTensor on the model's device."""
        return check_frame_indices(idx, self.config.frames, self.head.weight.device)

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
        device = next(self.parameters()).device
        out = [self(torch.arange(i, min(i + batch_size, self.config.frames), device=device))
               for i in range(0, self.config.frames, batch_size)]
        return torch.cat(out).float().cpu()

    def num_params(self) -> int:
        return sum(t.numel() for t in self.stored_state_dict().values())

    @property
    def total_gflops(self) -> float:
        return math.fsum(b.gflops for b in self.block_info)
