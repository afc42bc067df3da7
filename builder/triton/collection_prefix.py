"""A D-NeRV collection's decoder prefix as a static ONNX model, and the lookup that feeds it.

A per-video INR's prefix is a Python step that loads that video's weights; a collection's decoder has fixed weights
for every member, so its prefix up to an exit block is one ONNX graph (:class:`DNeRVPrefix`, exported by
:func:`export_prefix` with ``builder.triton.pipelines.export_onnx``: dynamic batch, checked against PyTorch with
onnxruntime). What differs per video is data: :func:`clip_inputs` turns (member ID, frame indices) into the clips
that hold those frames — their normalised times ``t``, their two decoded keyframes and distances ``dist`` — and
where each requested frame sits in them, so the graph's ``[B, C, T, h, w]`` output gives the frames' features.
Requests for different members of one collection batch together: the inputs are the same shapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..inr.base import check_frame_indices
from ..inr.dnerv import ClipBatch, DNeRV

__all__ = ["PREFIX_INPUTS", "PREFIX_OUTPUT", "DNeRVPrefix", "PrefixInputs", "clip_inputs", "export_prefix",
           "gather_frames"]

PREFIX_INPUTS = ("t", "keyframes", "dist")
PREFIX_OUTPUT = "features"


class DNeRVPrefix(nn.Module):
    """``(t [B, T], keyframes [B, 3, 2, H, W], dist [B, T]) -> features [B, C, T, h, w]`` after ``exit_block``."""

    def __init__(self, model: DNeRV, exit_block: int) -> None:
        super().__init__()
        if not 0 <= exit_block <= model.num_blocks:
            raise IndexError(f"exit block {exit_block} out of range: this D-NeRV has blocks 1..{model.num_blocks} "
                             "(0 = stem)")
        self.model, self.exit_block = model.eval(), exit_block

    def forward(self, *inputs: Tensor) -> Tensor:  # variadic, as export_onnx's dynamic shapes expect
        t, keyframes, dist = inputs
        mask = torch.ones_like(t, dtype=torch.bool)  # padding only matters to the training loss
        return self.model.features(ClipBatch(t, keyframes, dist, mask), self.exit_block)


class PrefixInputs(NamedTuple):
    """The prefix's inputs for the clips holding a request's frames, and each frame's ``(clip, position)``."""

    t: np.ndarray  # (B, T) float32
    keyframes: np.ndarray  # (B, 3, 2, H, W) float32
    dist: np.ndarray  # (B, T) float32
    clip: np.ndarray  # (N,) int64: the row of the frame's clip
    position: np.ndarray  # (N,) int64: the frame's place in its clip


def clip_inputs(model: DNeRV, keyframes: Tensor, num_frames: int, frames: Sequence[int]) -> PrefixInputs:
    """The lookup step: the clips of a ``num_frames``-frame member (decoded ``keyframes`` ``(K, 3, H, W)``) that
    hold ``frames``, each clip once, in order of first use."""
    t = check_frame_indices(torch.as_tensor(list(frames)), num_frames)
    T = model.config.frames
    clips = list(dict.fromkeys((t // T).tolist()))
    batch = model.video_clips(keyframes, num_frames, clips)
    row = {c: i for i, c in enumerate(clips)}
    return PrefixInputs(batch.t.float().numpy(), batch.keyframes.float().numpy(), batch.dist.float().numpy(),
                        np.array([row[int(f) // T] for f in t], dtype=np.int64), (t % T).numpy().astype(np.int64))


def gather_frames(features: np.ndarray, inputs: PrefixInputs) -> np.ndarray:
    """``[B, C, T, h, w]`` clip features -> the requested frames' ``(N, C, h, w)``."""
    return features[inputs.clip, :, inputs.position]


def export_prefix(model: DNeRV, exit_block: int, path: Path, tol: float = 1e-3) -> float:
    """Export :class:`DNeRVPrefix` to ``path`` (batch axis dynamic) and check it with onnxruntime on another batch
    size; returns the max difference relative to the output's scale (``ValueError`` above ``tol``)."""
    from .pipelines import export_onnx

    prefix = DNeRVPrefix(model, exit_block)
    c = model.config

    def example(b: int) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(b)
        t = torch.rand(b, c.frames, generator=g)
        d = torch.linspace(0, 1, c.frames).expand(b, -1).contiguous()
        return t, torch.rand(b, 3, 2, c.out_height, c.out_width, generator=g), d

    return export_onnx(prefix, example(2), PREFIX_INPUTS, [PREFIX_OUTPUT], Path(path), example(3), tol)

