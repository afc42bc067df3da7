"""A D-NeRV collection's decoder prefix as a static ONNX model, and the lookup that feeds it.

A per-video INR's prefix is a Python step that loads that video's weights; a collection's decoder has fixed weights
for every member, so its prefix up to an exit block is one ONNX graph (:class:`DNeRVPrefix`, exported by
:func:`export_prefix` with ``builder.triton.pipelines.export_onnx``: dynamic batch, checked against PyTorch with
onnxruntime). What differs per video is data: :func:`clip_inputs` turns (member ID, frame indices) into the clips
that hold those frames — their normalised times ``t``, their two decoded keyframes and distances ``dist`` — and
where each requested frame sits in them, so the graph's ``[B, C, T, h, w]`` output gives the frames' features.
Requests for different members of one collection batch together: the inputs are the same shapes.

A collection adapted for a task (``adapt COLLECTION --task T``) has one adapter for every member, fixed weights too.
For a 2-D task :class:`TaskPrefix` is the decoder prefix to that adapter's exit block followed by the adapter, one
ONNX graph (:func:`export_task_prefix`) whose per-frame outputs feed the task's own tail. A video task's 3-D adapter
reads the request's frames as one clip, across D-NeRV's 8-frame clips, so it is its own ONNX model after the gather
step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..inr.base import check_frame_indices
from ..inr.dnerv import ClipBatch, DNeRV

__all__ = ["PREFIX_INPUTS", "PREFIX_OUTPUT", "DNeRVPrefix", "GatherHandler", "LookupHandler", "PrefixInputs",
           "TaskPrefix", "clip_inputs", "clip_name", "example_inputs", "export_clip_adapter", "export_prefix",
           "export_task_prefix", "gather_frames"]

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


def clip_name(name: str) -> str:
    """The name of a per-clip tensor (``[B, T, ...]``) before the gather step picks the requested frames of it."""
    return f"clip_{name}"


class TaskPrefix(nn.Module):
    """``(t, keyframes, dist) -> each adapter output [B, T, ...]``: the decoder prefix to ``exit_block``, every frame
    of the clips through the collection's per-frame ``adapters`` (an ``AdapterSet``: one output per tensor the
    task's tail takes)."""

    def __init__(self, model: DNeRV, exit_block: int, adapters: nn.Module) -> None:
        super().__init__()
        self.prefix, self.adapters = DNeRVPrefix(model, exit_block), adapters.eval()

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        f = self.prefix(*inputs)  # [B, C, T, h, w]
        b, t = f.shape[0], f.shape[2]
        frames = f.transpose(1, 2).flatten(0, 1)  # 2-D adapters: T folds into the batch
        return tuple(a.unflatten(0, (b, t)) for a in self.adapters(frames))


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


def gather_frames(features: np.ndarray, inputs: PrefixInputs, time_axis: int = 2) -> np.ndarray:
    """Per-clip tensors (``[B, C, T, h, w]``: ``time_axis`` 2; ``[B, T, ...]``: 1) -> the requested frames'
    ``(N, ...)``."""
    return np.moveaxis(features, time_axis, 1)[inputs.clip, inputs.position]


def export_prefix(model: DNeRV, exit_block: int | None, path: Path, tol: float = 1e-3) -> float:
    """Export :class:`DNeRVPrefix` to ``path`` (batch axis dynamic) and check it with onnxruntime on another batch
    size; returns the max difference relative to the output's scale (``ValueError`` above ``tol``)."""
    from .pipelines import export_onnx

    return export_onnx(DNeRVPrefix(model, exit_block), example_inputs(model, 2), PREFIX_INPUTS, [PREFIX_OUTPUT],
                       Path(path), example_inputs(model, 3), tol)


def export_task_prefix(model: DNeRV, exit_block: int, adapters: nn.Module, output_names: Sequence[str], path: Path,
                       tol: float = 1e-3) -> float:
    """Export :class:`TaskPrefix` (outputs ``output_names``, one per adapter) as :func:`export_prefix` does."""
    from .pipelines import export_onnx

    return export_onnx(TaskPrefix(model, exit_block, adapters), example_inputs(model, 2), PREFIX_INPUTS,
                       output_names, Path(path), example_inputs(model, 3), tol)


class _Variadic(nn.Module):
    """A one-input module as ``forward(*x)``, the form export_onnx's dynamic shapes expect."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *x: Tensor) -> Any:
        return self.module(*x)


def export_clip_adapter(adapters: nn.Module, features: Tensor, output_names: Sequence[str], path: Path,
                        tol: float = 1e-3) -> float:
    """Export a video task's 3-D ``adapters`` (input ``prefix``: clips ``[B, C, T, h, w]`` like ``features``, batch
    and T dynamic), checked on another batch and clip length."""
    from .pipelines import export_onnx

    b, c, t, h, w = features.shape
    check = torch.rand(b + 1, c, max(1, t // 2), h, w, generator=torch.Generator().manual_seed(0))
    return export_onnx(_Variadic(adapters), (features,), ["prefix"], output_names, Path(path), (check,), tol,
                       [(0, 2)])


def example_inputs(model: DNeRV, b: int) -> tuple[Tensor, Tensor, Tensor]:
    """``b`` clips of random prefix inputs at the model's size."""
    c = model.config
    g = torch.Generator().manual_seed(b)
    t = torch.rand(b, c.frames, generator=g)
    d = torch.linspace(0, 1, c.frames).expand(b, -1).contiguous()
    return t, torch.rand(b, 3, 2, c.out_height, c.out_width, generator=g), d



# --- served: <collection>_{decode,<task>}_lookup -> _prefix (ONNX) -> _gather -------------------------------------

CLIP_T, CLIP_KEYS, CLIP_DIST, CLIP_ROW, CLIP_POS, CLIP_RGB = "t", "keyframes", "dist", "clip", "position", "rgb"


def _member_error(video_id: str, collection: str) -> str:
    return f"video '{video_id}' is not a member of collection '{collection}' (this ensemble serves only its members)"


class LookupHandler:
    """``<collection>_decode_lookup``: (member ID, frame indices) -> the decoder's clip inputs and each frame's place.

    Parameters: ``store_root``, ``collection``, ``decoder_sha256`` (the collection's ``inr.nvp`` the ONNX decoder
    was exported from: a collection grown or re-encoded since is refused until the repository is rebuilt),
    ``max_frames``, ``cache_size`` (members' decoded keyframes kept, by file checksum).

    With ``task`` (``<collection>_<task>_lookup``) it takes a task request instead, (member ID, frame selection),
    resolves the selection with the task's protocol, and also answers the frame indices (and the frame size where
    the task's post step needs it); ``adapter_file`` / ``adapter_sha256`` name the collection adapter baked into
    the ONNX prefix: one re-fitted since (``adapt COLLECTION``) is refused until the repository is rebuilt."""

    def __init__(self, params: Mapping[str, str]) -> None:
        from ..entry import INR_FILE
        from ..inr import build_inr
        from ..inr.config import INRConfig
        from ..store import VideoStore
        from ..tasks import get_task
        from .serving import StoreCache, _int_param
        from .wire import FRAME_INDICES, FRAME_SELECTION, VIDEO_ID

        self.collection = params["collection"]
        self.decoder_sha = params["decoder_sha256"]
        self.task = get_task(params["task"]) if params.get("task") else None
        self.adapter = (params["adapter_file"], params["adapter_sha256"]) if self.task else None
        self.inputs = (VIDEO_ID, FRAME_SELECTION if self.task else FRAME_INDICES)
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

    def _check_built(self, video_id: str) -> Any:
        """The member's entry, refused unless the collection's decoder (and adapter) are the ones built in."""
        from ..entry import INR_FILE, MEMBER
        from ..store import StoreError
        from .serving import RequestError, VideoNotFoundError, VideoUnavailableError

        try:
            entry = self.store.video(video_id)
            files = self.store.video(self.collection).files
        except StoreError as e:
            raise VideoNotFoundError(str(e).replace(str(self.store.root), "<store>")) from None
        if entry.kind != MEMBER or entry.collection != self.collection:
            raise RequestError(_member_error(video_id, self.collection))
        if files[INR_FILE].sha256 != self.decoder_sha:
            raise VideoUnavailableError(f"collection '{self.collection}' was re-encoded or grown after this "
                                        "repository was built: rebuild it (python -m builder build-repo ...)")
        if self.adapter and (self.adapter[0] not in files or files[self.adapter[0]].sha256 != self.adapter[1]):
            raise VideoUnavailableError(f"collection '{self.collection}' was adapted for {self.task.name} again "
                                        "after this repository was built: rebuild it (python -m builder build-repo "
                                        "...)")
        return entry

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from ..collection import KEYFRAMES_FILE
        from .serving import check_frame_range, parse_frame_indices, parse_video_id
        from .task_serving import FRAME_SIZE, parse_selection, select_frames
        from .wire import FRAME_INDICES, VIDEO_ID

        video_id = parse_video_id(inputs.get(VIDEO_ID))
        if self.task is None:
            indices = parse_frame_indices(inputs.get(FRAME_INDICES), max_frames=self.max_frames)
        keys = self.keys.get(video_id, KEYFRAMES_FILE, missing=_member_error(video_id, self.collection))
        entry = self._check_built(video_id)
        count = entry.frames.count
        if self.task is None:
            check_frame_range(indices, count, video_id)
        else:
            indices = select_frames(parse_selection(inputs.get(self.inputs[1])), count, self.task, video_id,
                                    max_frames=self.max_frames)
        x = clip_inputs(self.geometry, keys, count, indices.tolist())
        out = {CLIP_T: x.t, CLIP_KEYS: x.keyframes, CLIP_DIST: x.dist, CLIP_ROW: x.clip, CLIP_POS: x.position}
        if self.task is not None:
            out[FRAME_INDICES] = indices.astype(np.int64)
            if self.task.kind.frame_size:
                c = self.geometry.config
                out[FRAME_SIZE] = np.asarray((c.out_height, c.out_width), dtype=np.int64)
        return out


class GatherHandler:
    """``<collection>_decode_gather`` (and ``<collection>_<task>_gather``): per-clip tensors -> the requested frames, in
    request order. ``names``: per-clip input -> output name; ``time_axis``: where T sits in the inputs (2 for the
    decoder's RGB ``[B, 3, T, H, W]`` and a video task's prefix features, 1 for a 2-D task prefix's ``[B, T, ...]``);
    ``as_clip``: answer the frames as one clip ``[1, C, N, h, w]`` (what a video task's 3-D adapter reads) instead
    of ``[N, ...]``."""

    def __init__(self, names: Mapping[str, str], time_axis: int, as_clip: bool = False) -> None:
        self.names, self.time_axis, self.as_clip = dict(names), int(time_axis), bool(as_clip)
        self.inputs = (*self.names, CLIP_ROW, CLIP_POS)

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> GatherHandler:
        import json

        return cls(json.loads(params["gather"]), int(params["time_axis"]), params.get("as_clip") == "1")

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from .serving import RequestError

        row, pos = inputs.get(CLIP_ROW), inputs.get(CLIP_POS)
        clips = {k: inputs.get(k) for k in self.names}
        if row is None or pos is None or row.shape != pos.shape or row.ndim != 1 or any(
                v is None or v.ndim <= self.time_axis for v in clips.values()):
            raise RequestError(f"gather takes {', '.join(self.names)} (time on axis {self.time_axis}) and clip, "
                               "position [N]")
        for v in clips.values():
            if row.size and (row.min() < 0 or row.max() >= v.shape[0] or pos.min() < 0
                             or pos.max() >= v.shape[self.time_axis]):
                raise RequestError("clip or position out of range")
        where = PrefixInputs(None, None, None, row, pos)
        frames = {self.names[k]: gather_frames(v, where, self.time_axis) for k, v in clips.items()}
        if self.as_clip:  # [N, C, h, w] -> [1, C, N, h, w]
            frames = {k: np.moveaxis(v, 0, 1)[None] for k, v in frames.items()}
        return {k: np.ascontiguousarray(v) for k, v in frames.items()}
