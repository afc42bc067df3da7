"""Stored videos as a ``torch.utils.data`` dataset: clips decoded from their INRs (D-NeRV members, NeRV, HNeRV,
chunked videos alike, through :func:`builder.api.load_inr`), instead of decoding files.

``VideoClips(store, ["clips-0", "clips-1"], clip=32)`` yields one sample per window of ``clip`` consecutive frames
(non-overlapping unless ``stride``): a dict with ``video``, ``start`` and ``clip``, the frames ``(T, 3, H, W)`` in
[0, 1]. With ``task`` (a task name, or a loaded :class:`~builder.backbones.Backbone`) the clip is what that
task's backbone takes (``i3d_r50``: resized and Kinetics-normalised
``(3, T, h, w)``; ``slowfast_r50``: its two pathways), so a ``DataLoader`` feeds the model directly. With
``exit_block`` the sample is the INR's features after that block (``(T, C, h, w)``), for adapters. ``source="h264"``
reads the stored H.264 twin (at the INR's bytes) with PyAV instead: the same samples, the codec baseline.

Decoding is batched: a ``DataLoader`` hands the dataset a whole batch of indices (``__getitems__``), and each
video's frames in it are decoded in one call, on ``device`` (a GPU decodes there; keep ``num_workers=0`` then, so
the model stays in one process). Decoders are loaded once per video (checksum-verified) and kept for the
``cache`` most recent videos.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .api import load_inr, read_h264
from .backbones import Backbone
from .store import VideoStore

__all__ = ["VideoClips", "SOURCES"]

SOURCES = ("inr", "h264")


class VideoClips(Dataset):
    """Windows of ``clip`` consecutive frames of stored videos (see the module docstring)."""

    def __init__(self, store: VideoStore, videos: Sequence[str], *, clip: int = 32, stride: int | None = None,
                 task: str | Backbone | None = None, exit_block: int | None = None, source: str = "inr",
                 device: str | torch.device = "cpu", cache: int = 8) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if task is not None and exit_block is not None:
            raise ValueError("give task (backbone inputs) or exit_block (INR features), not both")
        if exit_block is not None and source != "inr":
            raise ValueError("exit_block reads INR features: source must be 'inr'")
        if clip < 1 or (stride is not None and stride < 1):
            raise ValueError("clip and stride must be >= 1")
        if not videos:
            raise ValueError("give at least one video ID")
        self.store, self.clip, self.source, self.exit_block = store, clip, source, exit_block
        self.device = torch.device(device)
        self.backbone = task
        if isinstance(task, str):
            from .backbones import get_backbone
            from .tasks import get_task

            self.backbone = get_backbone(get_task(task).backbone)
        self.items: list[tuple[str, int]] = []
        for vid in videos:
            n = store.video(vid).frames.count
            if n < clip:
                raise ValueError(f"video '{vid}' has {n} frames, fewer than a {clip}-frame clip; give a smaller clip")
            self.items += [(vid, s) for s in range(0, n - clip + 1, stride or clip)]
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = max(1, cache)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The samples at ``indices``; each video's frames among them decoded in one call."""
        picked = [self.items[i] for i in indices]
        frames: dict[str, Tensor] = {}
        for vid in dict.fromkeys(v for v, _ in picked):
            idx = [s + t for v, s in picked if v == vid for t in range(self.clip)]
            frames[vid] = self._decode(vid, idx)
        seen: dict[str, int] = {}
        out = []
        for vid, start in picked:
            k = seen.get(vid, 0)
            seen[vid] = k + 1
            x = frames[vid][k * self.clip:(k + 1) * self.clip]
            out.append({"video": vid, "start": start, "clip": self._transform(x)})
        return out

    @torch.no_grad()
    def _decode(self, vid: str, idx: list[int]) -> Tensor:
        if self.source == "h264":
            return read_h264(self.store, vid, idx).to(self.device)
        model = self._model(vid)
        if self.exit_block is None:
            return model(idx)
        return model.features(idx, self.exit_block)

    def _model(self, vid: str) -> Any:
        version = self.store.inr_digest(vid)  # a re-encoded video is loaded again, never decoded from the old INR
        if vid not in self._cache or self._cache[vid][0] != version:
            self._cache[vid] = (version, load_inr(self.store, vid, device=self.device).model.eval())
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(vid)
        return self._cache[vid][1]

    def _transform(self, x: Tensor) -> Any:
        if self.backbone is None:
            return x
        y = self.backbone.preprocess(x)  # a video backbone's input has a batch dimension of one
        return [p.squeeze(0) for p in y] if isinstance(y, (list, tuple)) else y.squeeze(0)

