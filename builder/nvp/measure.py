"""Measuring one path on a task's protocol frames: its scores against the raw frames' output (the task kind's
scorer), GFLOPs and wall-clock ms per frame. Shared by the pair search and the evaluation."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..api import H264_FILE, h264_frames
from ..backbones import Backbone
from ..inr import INR
from ..protocols import gflops_of, ms_per_frame
from ..store import MissingFile, VideoStore
from ..tasks import Scorer, cat_outputs
from .path import AdapterSet

__all__ = ["AdapterInfo", "PathResult", "measure_path", "run_units", "codec_file", "codec_measurement", "nvp_gflops"]


@dataclass(frozen=True)
class AdapterInfo:
    """What an NVP path's adapters are: where they inject, their kind and size."""

    layer: str
    adapter_kind: str
    adapter_params: float
    adapter_share: float  # of the backbone's parameters


@dataclass(frozen=True)
class PathResult:
    """One path measured on one video (or the mean over videos): the task's scores (``accuracy`` first), and the
    GFLOPs, ms per frame and one-off setup ms where measured."""

    scores: dict[str, float]
    ms_per_frame: float
    gflops: float | None = None
    setup_ms: float | None = None
    adapter: AdapterInfo | None = None
    heldout: dict[str, float] | None = None  # the same scores on every frame the adapter did not train on

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.scores)
        if self.heldout is not None:
            d.update({f"heldout_{k}": v for k, v in self.heldout.items()})
        if self.gflops is not None:
            d["gflops"] = self.gflops
        d["ms_per_frame"] = self.ms_per_frame
        if self.setup_ms is not None:
            d["setup_ms"] = self.setup_ms
        if self.adapter is not None:
            d.update(asdict(self.adapter))
        return d

    @staticmethod
    def mean(results: Sequence[PathResult]) -> PathResult:
        """Every number averaged; the adapter's layer and kind are the first result's."""
        first, n = results[0], len(results)

        def avg(get: Callable[[PathResult], float]) -> float:
            return sum(get(r) for r in results) / n

        adapter = None if first.adapter is None else replace(
            first.adapter, adapter_params=avg(lambda r: r.adapter.adapter_params),
            adapter_share=avg(lambda r: r.adapter.adapter_share))
        heldout = None
        if all(r.heldout is not None for r in results):
            heldout = {k: avg(lambda r: r.heldout[k]) for k in first.heldout}
        return PathResult(scores={k: avg(lambda r: r.scores[k]) for k in first.scores}, heldout=heldout,
                          ms_per_frame=avg(lambda r: r.ms_per_frame),
                          gflops=None if first.gflops is None else avg(lambda r: r.gflops),
                          setup_ms=None if first.setup_ms is None else avg(lambda r: r.setup_ms), adapter=adapter)


def measure_path(run: Callable[[], Any], out: Any, raw: Any, scorer: Scorer, frames: int, repeats: int,
                 **extra: Any) -> PathResult:
    """``run()``'s output ``out`` scored against ``raw``, and ``run`` timed (the scored and the timed call run
    the same closure)."""
    return PathResult(scorer(out, raw), ms_per_frame(run, frames, repeats), **extra)


def run_units(run: Callable[[list[int]], Any], units: Sequence[list[int]], batch: int = 8) -> Any:
    """``run`` over ``units`` (single frames, or clips for video tasks), ``batch`` frames at a time, outputs joined."""
    outs, chunk = [], []
    for u in units:
        chunk.append(u)
        if sum(map(len, chunk)) >= batch:
            outs.append(_run_chunk(run, chunk))
            chunk = []
    if chunk:
        outs.append(_run_chunk(run, chunk))
    return cat_outputs(outs)


def _run_chunk(run: Callable[[list[int]], Any], chunk: list[list[int]]) -> Any:
    with torch.no_grad():  # clips (action) run one at a time: the model reads one clip per call
        return run(chunk[0]) if len(chunk) == 1 and len(chunk[0]) > 1 else run([u[0] for u in chunk])


def codec_file(store: VideoStore, video_id: str) -> Path | None:
    """The stored H.264 copy of ``video_id`` (None for entries encoded before the store kept one)."""
    try:
        return store.path(video_id, H264_FILE)
    except MissingFile:
        return None


def codec_measurement(store: VideoStore, video_id: str, meta: dict[str, Any], model: nn.Module, bb: Backbone,
                      idx: Sequence[int], raw: Any, scorer: Scorer, repeats: int) -> PathResult | None:
    """Scores and ms per frame of the codec path (stored H.264 copy -> PyAV -> backbone); None without a copy."""
    h264 = codec_file(store, video_id)
    if h264 is None:
        return None
    # file and metadata resolved once: the timed run is decode + preprocess + backbone, no store lookups
    run = lambda: model(bb.preprocess(h264_frames(h264, meta, idx)))  # noqa: E731
    with torch.no_grad():
        out = run()
    return measure_path(run, out, raw, scorer, len(idx), repeats)


def nvp_gflops(inr: INR, exit_block: int, adapters: AdapterSet, tail: nn.Module, video: bool, feat: Tensor) -> float:
    """GFLOPs per frame of prefix + adapters + tail."""
    prefix = 0.0
    for b in inr.block_info:  # every stage up to the exit runs (D-NeRV: the content encoder before the stem too)
        prefix += b.gflops
        if b.exit == exit_block:
            break
    per = feat.shape[2] if video else feat.shape[0]
    rest = gflops_of(lambda f: tail(*adapters(f)), feat, per=per)
    return prefix + rest
