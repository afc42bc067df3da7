"""One video of a D-NeRV collection as one decoder: the shared D-NeRV + this video's decoded keyframes.

:class:`MemberINR` makes a collection member look like a per-video :class:`~builder.inr.base.INR` to every
consumer (decode, eval, the NVP path, adapters), as :class:`~builder.inr.chunked.ChunkedINR` does for a chunked
video: ``forward``, ``features``, ``forward_intermediates`` and ``decode_all`` take the member's frame indices
``0 .. N-1`` and return per-frame tensors ``(N, C, H, W)`` (the clips holding them are decoded whole and the
frames picked out). ``config.frames`` is the member's frame count; every other attribute of ``config`` and
``block_info`` are the shared decoder's (per decoded frame).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .base import check_frame_indices
from .dnerv import DNeRV

__all__ = ["MemberConfig", "MemberINR"]


class MemberConfig:
    """The shared decoder's config seen from one member: ``frames`` is the member's frame count (a D-NeRV
    config's ``frames`` is its clip length, kept as ``clip_frames``); everything else is the decoder's."""

    def __init__(self, shared: Any, frames: int) -> None:
        self.shared = shared
        self.frames = int(frames)

    @property
    def clip_frames(self) -> int:
        return int(self.shared.frames)

    def __getattr__(self, name: str) -> Any:  # only called for what is not set above
        if name == "shared":
            raise AttributeError(name)
        return getattr(self.shared, name)

    def to_dict(self) -> dict[str, Any]:
        return self.shared.to_dict()

    def __repr__(self) -> str:
        return f"MemberConfig(frames={self.frames}, shared={self.shared!r})"


class MemberINR(nn.Module):
    """The member's ``num_frames`` frames decoded by the shared ``model`` from its decoded ``keyframes``
    ``(K, 3, H, W)`` (the frames at ``model.keyframe_positions(num_frames)``)."""

    def __init__(self, model: DNeRV, keyframes: Tensor, num_frames: int, clip_batch: int = 4) -> None:
        super().__init__()
        if not isinstance(model, DNeRV):
            raise TypeError(f"a collection member decodes with a D-NeRV, got {type(model).__name__}")
        want = len(model.keyframe_positions(num_frames))
        if keyframes.ndim != 4 or keyframes.shape[0] != want:
            raise ValueError(f"a {num_frames}-frame member has {want} keyframes, got {tuple(keyframes.shape)}")
        self.model = model
        self.register_buffer("keyframes", keyframes.float(), persistent=False)
        self.num_frames = int(num_frames)
        self.clip_batch = clip_batch
        self.config = MemberConfig(model.config, num_frames)
        self.recipe = model.recipe

    # --- the INR interface -------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.model.num_blocks

    @property
    def block_info(self):
        return self.model.config.block_info()

    @property
    def total_gflops(self) -> float:
        return math.fsum(b.gflops for b in self.block_info)

    @property
    def head(self) -> nn.Module:  # callers find the decoder's device through ``model.head.weight``
        return self.model.head

    def frame_indices(self, idx: int | Sequence[int] | Tensor) -> Tensor:
        """Validate member frame indices as a 1-D LongTensor on the CPU (the same errors as a single INR's)."""
        return check_frame_indices(torch.as_tensor(idx).cpu(), self.num_frames)

    def _run_many(self, idx, fn) -> list[Tensor | None]:
        """Run ``fn(clip_batch)`` (a list of ``[b, C, T, H, W]`` tensors or None) over every clip holding a frame of
        ``idx``, ``clip_batch`` clips at a time; each output as per-frame ``(N, C, H, W)`` in request order."""
        t = self.frame_indices(idx)
        m = self.model
        clips = sorted(set((t // m.config.frames).tolist()))
        device = m.head.weight.device
        outs: list[list[Tensor | None]] = []
        for i in range(0, len(clips), self.clip_batch):
            batch = m.video_clips(self.keyframes, self.num_frames, clips[i:i + self.clip_batch]).to(device)
            outs.append(fn(batch))
        where = {c: j for j, c in enumerate(clips)}
        T = m.config.frames
        ci = torch.tensor([where[int(f) // T] for f in t], device=device)
        fi = (t % T).to(device)
        result: list[Tensor | None] = []
        for k in range(len(outs[0])):
            if outs[0][k] is None:
                result.append(None)
                continue
            x = torch.cat([o[k] for o in outs])
            result.append(x[ci.to(x.device), :, fi.to(x.device)])
        return result

    def _run(self, idx, fn) -> Tensor:
        return self._run_many(idx, lambda b: [fn(b)])[0]

    def forward(self, idx: int | Sequence[int] | Tensor, frames: Tensor | None = None) -> Tensor:
        """Frames ``idx`` ``(N, 3, H, W)`` in [0, 1]."""
        return self._run(idx, self.model)

    def forward_intermediates(self, idx: int | Sequence[int] | Tensor, indices: int | Sequence[int] | None = None,
                              stop_early: bool = False, frames: Tensor | None = None
                              ) -> tuple[Tensor | None, list[Tensor]]:
        """Per-frame features after the blocks in ``indices`` (0 = stem), each ``(N, C, H, W)``, and the RGB
        frames (None with ``stop_early`` short of the last block)."""
        def run(batch):
            rgb, feats = self.model.forward_intermediates(batch, indices, stop_early)
            return [rgb, *feats]

        out = self._run_many(idx, run)
        return out[0], out[1:]

    def features(self, idx: int | Sequence[int] | Tensor, exit_block: int) -> Tensor:
        """``(N, C, H, W)`` after block ``exit_block`` at frames ``idx`` (later blocks and the head not run)."""
        return self._run(idx, lambda b: self.model.features(b, exit_block))

    @torch.no_grad()
    def decode_all(self, batch_size: int = 8) -> Tensor:
        """All frames ``(N, 3, H, W)`` in [0, 1]."""
        return self.model.decode_video(self.keyframes, self.num_frames, clip_batch=max(1, batch_size // 2))

    def num_params(self) -> int:
        return self.model.num_params()
