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
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..inr.base import check_frame_indices
from ..inr.dnerv import ClipBatch, DNeRV

__all__ = ["PREFIX_INPUTS", "PREFIX_OUTPUT", "DNeRVPrefix", "LookupHandler", "PrefixInputs", "clip_inputs",
           "export_prefix", "gather_frames", "gather_handle"]

PREFIX_INPUTS = ("t", "keyframes", "dist")
PREFIX_OUTPUT = "features"


class DNeRVPrefix(nn.Module):
    """``(t [B, T], keyframes [B, 3, 2, H, W], dist [B, T]) -> features [B, C, T, h, w]`` after ``exit_block``
    (``None``: the whole decoder, RGB clips ``[B, 3, T, H, W]``)."""

    def __init__(self, model: DNeRV, exit_block: int | None) -> None:
        super().__init__()
        if exit_block is not None and not 0 <= exit_block <= model.num_blocks:
            raise IndexError(f"exit block {exit_block} out of range: this D-NeRV has blocks 1..{model.num_blocks} "
                             "(0 = stem)")
        self.model, self.exit_block = model.eval(), exit_block

    def forward(self, *inputs: Tensor) -> Tensor:  # variadic, as export_onnx's dynamic shapes expect
        t, keyframes, dist = inputs
        clips = ClipBatch(t, keyframes, dist, torch.ones_like(t, dtype=torch.bool))  # the mask: training only
        if self.exit_block is None:
            return self.model(clips)
        return self.model.features(clips, self.exit_block)


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


def export_prefix(model: DNeRV, exit_block: int | None, path: Path, tol: float = 1e-3) -> float:
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



# --- served: <collection>_lookup -> <collection>_decoder (ONNX) -> <collection>_gather ---------------------------

CLIP_T, CLIP_KEYS, CLIP_DIST, CLIP_ROW, CLIP_POS, CLIP_RGB = "t", "keyframes", "dist", "clip", "position", "rgb"


def _member_error(video_id: str, collection: str) -> str:
    return f"video '{video_id}' is not a member of collection '{collection}' (this ensemble serves only its members)"


class LookupHandler:
    """``<collection>_lookup``: (member ID, frame indices) -> the decoder's clip inputs and each frame's place.

    Parameters: ``store_root``, ``collection``, ``decoder_sha256`` (the collection's ``inr.nvp`` the ONNX decoder
    was exported from: a collection grown or re-encoded since is refused until the repository is rebuilt),
    ``max_frames``, ``cache_size`` (members' decoded keyframes kept, by file checksum)."""

    def __init__(self, params: Mapping[str, str]) -> None:
        from ..entry import INR_FILE
        from ..inr import build_inr
        from ..inr.config import INRConfig
        from ..store import VideoStore
        from .serving import StoreCache, _int_param

        self.collection = params["collection"]
        self.decoder_sha = params["decoder_sha256"]
        self.max_frames = _int_param(params, "max_frames", 64, 1)
        self.store = VideoStore(params["store_root"])
        entry = self.store.video(self.collection)
        if entry.files[INR_FILE].sha256 != self.decoder_sha:
            raise ValueError(f"collection '{self.collection}' changed since this repository was built: rebuild it")
        self.geometry = build_inr(INRConfig.from_dict(entry.inr.config))  # clip layout only: no weights are used
        self.keys = StoreCache(params["store_root"], _int_param(params, "cache_size", 32, 1), load=self._keys)

    @staticmethod
    def _keys(store: Any, video_id: str, name: str) -> Tensor:
        from ..codec.keyframes import decode_keyframes

        return decode_keyframes(store.get(video_id, name))

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from ..collection import KEYFRAMES_FILE
        from ..entry import INR_FILE, MEMBER
        from ..store import StoreError
        from .serving import (RequestError, VideoNotFoundError, VideoUnavailableError, check_frame_range,
                              parse_frame_indices, parse_video_id)
        from .wire import FRAME_INDICES, VIDEO_ID

        video_id = parse_video_id(inputs.get(VIDEO_ID))
        indices = parse_frame_indices(inputs.get(FRAME_INDICES), max_frames=self.max_frames)
        keys = self.keys.get(video_id, KEYFRAMES_FILE, missing=_member_error(video_id, self.collection))
        try:
            entry = self.store.video(video_id)
            decoder = self.store.video(self.collection).files[INR_FILE].sha256
        except StoreError as e:
            raise VideoNotFoundError(str(e).replace(str(self.store.root), "<store>")) from None
        if entry.kind != MEMBER or entry.collection != self.collection:
            raise RequestError(_member_error(video_id, self.collection))
        if decoder != self.decoder_sha:
            raise VideoUnavailableError(f"collection '{self.collection}' was re-encoded or grown after this "
                                        "repository was built: rebuild it (python -m builder build-repo ...)")
        check_frame_range(indices, entry.frames.count, video_id)
        x = clip_inputs(self.geometry, keys, entry.frames.count, indices.tolist())
        return {CLIP_T: x.t, CLIP_KEYS: x.keyframes, CLIP_DIST: x.dist, CLIP_ROW: x.clip, CLIP_POS: x.position}


def gather_handle(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``<collection>_gather``: the decoder's RGB clips -> the requested frames, in request order."""
    from .serving import RequestError
    from .wire import FRAMES

    rgb, row, pos = (inputs.get(k) for k in (CLIP_RGB, CLIP_ROW, CLIP_POS))
    if rgb is None or row is None or pos is None or rgb.ndim != 5 or row.shape != pos.shape or row.ndim != 1:
        raise RequestError("gather takes rgb [B, 3, T, H, W] and clip, position [N]")
    if row.size and (row.min() < 0 or row.max() >= rgb.shape[0] or pos.min() < 0 or pos.max() >= rgb.shape[2]):
        raise RequestError("clip or position out of range")
    return {FRAMES: np.ascontiguousarray(gather_frames(rgb, PrefixInputs(None, None, None, row, pos)),
                                         dtype=np.float32)}
