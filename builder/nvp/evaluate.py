"""``evaluate``: accuracy, GFLOPs and ms per frame of the raw, codec, fulldecode and NVP paths on the task's
protocol frames, per exit block with a stored adapter; and the accuracy-vs-exit plot."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..api import H264_FILE, h264_frames, load_bound_inr, read_source
from ..backbones import Backbone, get_backbone
from ..protocols import gflops_of
from ..store import VideoStore
from ..tasks import get_task
from .measure import (AdapterInfo, PathResult, codec_file, codec_measurement, measure_path, nvp_gflops,
                      run_units)
from .path import NVPPath, inr_features
from .storage import load_adapter, load_pairing

__all__ = ["TIMING", "VideoResult", "evaluate_task", "plot_exits"]

PATHS = ("raw", "codec", "fulldecode", "nvp")
TIMING = {
    "raw": "preprocess + full backbone on frames already decoded in memory (no decoding counted)",
    "codec": "PyAV decode of the stored H.264 copy up to the last protocol frame (RGB conversion of the protocol "
             "frames only) + resize + full backbone",
    "fulldecode": "INR decode of the protocol frames (all blocks + RGB head) + resize + full backbone",
    "nvp": "INR prefix up to the exit block + adapter + backbone tail",
}


@dataclass
class VideoResult:
    """One video's paths (``nvp``: the chosen exit block's), every adapted exit's NVP path, and the raw frames' own
    stability where the task kind measures it."""

    id: str
    exit_block: int
    paths: dict[str, PathResult]
    per_exit: dict[int, PathResult]
    inr_bytes: int | None
    h264: Any
    raw_stability: dict[str, float] | None = None
    frames: list[int] = field(default_factory=list)
    train_frames: list[int] | None = None  # what adapt trained on (None: a pairing from before it said)
    heldout_frames: int = 0  # frames scored out of sample (every frame not in train_frames)
    constant: dict[str, float] | None = None  # the training frames' constant answer, scored on those frames

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "exit_block": self.exit_block, "paths": {p: r.to_dict() for p, r in self.paths.items()},
             "inr_bytes": self.inr_bytes, "h264": self.h264,
             "train_frames": None if self.train_frames is None else len(self.train_frames),
             "heldout_frames": self.heldout_frames, "constant_baseline": self.constant}
        if self.raw_stability is not None:
            d["raw_stability"] = self.raw_stability
        return d


def _evaluate_video(store: VideoStore, vid: str, task: Any, bb: Backbone, model: Any, scorer: Any,
                    backbone_params: int, exit_block: int | None, seed: int, repeats: int) -> VideoResult:
    meta = store.meta(vid)
    t_setup = time.perf_counter()
    decoded, bound = load_bound_inr(store, vid)  # adapters are refused unless trained on exactly this INR
    inr = decoded.model
    setup_ms = 1000 * (time.perf_counter() - t_setup)
    if codec_file(store, vid) is not None:  # checksum-verified once here: PyAV opens it by path below
        store.get(vid, H264_FILE)
    frames = read_source(meta).frames
    idx = task.protocol_frames(frames.shape[0], seed)
    try:
        pairing = load_pairing(store, vid, task.name)
    except KeyError:  # MissingFile: never adapted for this task
        raise ValueError(f"video '{vid}' has no {task.name} adapters yet; run 'python -m builder adapt {vid} "
                         f"--task {task.name}' first") from None
    chosen = exit_block or pairing["exit_block"]
    # out of sample: every frame (clip) the adapters did not train on, for every path, and the constant answer
    train = pairing.get("train_frames")
    units = task.units(sorted(set(range(frames.shape[0])) - set(train))) if train is not None else []
    if units:
        held_idx = [i for u in units for i in u]
        raw_h = run_units(lambda i: model(bb.preprocess(frames[i])), units)
        # a collection member the shared adapter never trained on has no training frames: no constant of its own
        # (adapt COLLECTION reports the training videos' constant on it)
        train_units = task.samples(train, None) if train else []
        constant = None if not train_units else scorer(task.kind.constant_output(
            run_units(lambda i: model(bb.preprocess(frames[i])), train_units), len(units)), raw_h)
        h264 = codec_file(store, vid)
        codec_frames = None if h264 is None else dict(zip(held_idx, h264_frames(h264, meta, held_idx)))

    def heldout(run: Any) -> dict[str, float] | None:
        return scorer(run_units(run, units), raw_h) if units else None

    # each path as a closure over its whole work, so the scored and the timed call run the same code; fresh
    # inputs per call: pytorchvideo's SlowFast overwrites its input list in place
    run_raw = lambda: model(bb.preprocess(frames[idx]))  # noqa: E731
    run_full = lambda: model(bb.preprocess(inr(torch.tensor(idx))))  # noqa: E731
    with torch.no_grad():
        raw, full = run_raw(), run_full()
    g_backbone = gflops_of(model, bb.preprocess(frames[idx]), per=len(idx))
    paths = {"raw": measure_path(run_raw, raw, raw, scorer, len(idx), repeats, gflops=g_backbone,
                                 heldout=heldout(lambda i: model(bb.preprocess(frames[i]))))}
    codec = codec_measurement(store, vid, meta, model, bb, idx, raw, scorer, repeats)
    if codec is not None:  # GFLOPs: the backbone's; H.264 decoding is not conv/matmul work
        paths["codec"] = replace(codec, gflops=g_backbone, heldout=heldout(
            lambda i: model(bb.preprocess(torch.stack([codec_frames[j] for j in i])))))
    paths["fulldecode"] = measure_path(run_full, full, raw, scorer, len(idx), repeats,
                                       gflops=inr.total_gflops + g_backbone, setup_ms=setup_ms,
                                       heldout=heldout(lambda i: model(bb.preprocess(inr(torch.tensor(i))))))
    per_exit = {}
    # exits adapted by the last `adapt` (older pairings do not say: every exit with a stored adapter)
    for k in pairing.get("stored_exits", range(1, inr.num_blocks + 1)):
        try:
            adapters, ameta = load_adapter(store, vid, task.name, k, inr_sha256=bound)
        except KeyError:  # no adapter stored for this exit block
            continue
        sm = bb.split(ameta["layer"], model=model)
        path = NVPPath(inr, k, adapters, sm.tail, task.video)
        feat = inr_features(inr, idx[:1] if not task.video else idx, k, task.video)
        with torch.no_grad():
            out = path(idx)
        per_exit[k] = measure_path(
            lambda: path(idx), out, raw, scorer, len(idx), repeats,
            gflops=nvp_gflops(inr, k, adapters, sm.tail, task.video, feat), setup_ms=setup_ms,
            adapter=AdapterInfo(ameta["layer"], adapters[0].kind, adapters.num_params(),
                                adapters.num_params() / backbone_params), heldout=heldout(path))
    if chosen not in per_exit:
        raise ValueError(f"video '{vid}' has no {task.name} adapter for exit block {chosen}; run "
                         f"'python -m builder adapt {vid} --task {task.name}' first")
    paths["nvp"] = per_exit[chosen]
    return VideoResult(vid, chosen, paths, per_exit, meta.get("bytes"), meta.get("h264"),
                       task.kind.raw_stability(raw), idx, train, len(units) and len(held_idx),
                       constant if units else None)


def evaluate_task(
    store: VideoStore,
    video_ids: Sequence[str],
    task_name: str,
    *,
    exit_block: int | None = None,
    weights: str | None = "default",
    random_init: bool = False,
    backbone: Backbone | None = None,
    backbone_config: dict[str, Any] | None = None,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, Any]:
    """Accuracy, GFLOPs and wall-clock ms per frame of the raw, codec, fulldecode and NVP paths, averaged over
    ``video_ids``; plus the same for every exit block that has a stored adapter (for the accuracy-vs-exit plot).

    Out of sample: every path is also scored on every frame (action: every non-overlapping clip) that ``adapt`` did
    not train on (``heldout_accuracy``, ``heldout_video_accuracy``, ...), next to ``constant_baseline``: what the
    training frames' majority answer, given for every one of those frames, scores. The protocol-frame numbers may
    include training frames (in-sample); the held-out ones never do.

    Accuracy is agreement with the raw frames' answers (pseudo ground truth) on the task's protocol frames.
    ``ms_per_frame`` is measured here, in this process: the protocol sample (8 frames, or one 32-frame clip) as one
    batch, one warm-up call, median of ``repeats`` calls, divided by its frames; :data:`TIMING` says what each
    path's time covers. ``setup_ms`` is the one-off per-video cost of turning the stored INR bits into a decoder
    (entropy decoding + dequantisation), paid once per video, not per frame. The codec path is skipped for store
    entries without an H.264 copy.
    """
    task = get_task(task_name)
    bb = backbone or get_backbone(task.backbone)
    model = bb.load_for(task, weights, random_init=random_init, config=backbone_config)
    scorer = task.kind.scorer(task, model, random_init)
    backbone_params = bb.num_params(model)
    videos = [_evaluate_video(store, vid, task, bb, model, scorer, backbone_params, exit_block, seed, repeats)
              for vid in video_ids]
    names = [p for p in PATHS if any(p in v.paths for v in videos)]
    exits = sorted({k for v in videos for k in v.per_exit})
    result = {
        "task": task.name,
        "exit_block": videos[0].exit_block,
        "weights": "random" if random_init else str(weights),
        "paths": {p: PathResult.mean([v.paths[p] for v in videos if p in v.paths]).to_dict() for p in names},
        "per_exit": {str(k): PathResult.mean([v.per_exit[k] for v in videos if k in v.per_exit]).to_dict()
                     for k in exits},
        "timing": {"repeats": repeats, "frames_per_batch": len(videos[-1].frames),
                   "threads": torch.get_num_threads(), **{p: TIMING[p] for p in names}},
        "videos": [v.to_dict() for v in videos],
    }
    if "codec" in names:
        result["paths"]["codec"]["videos"] = sum("codec" in v.paths for v in videos)
    scored = [v for v in videos if v.constant is not None]
    # what answering the training frames' majority (constant) answer scores on the frames nobody trained on
    result["constant_baseline"] = (sum(v.constant["accuracy"] for v in scored) / len(scored)) if scored else None
    if scored and all("video_accuracy" in v.constant for v in scored):
        result["constant_baseline_video"] = sum(v.constant["video_accuracy"] for v in scored) / len(scored)
    result["heldout_frames"] = sum(v.heldout_frames for v in videos)
    return result


def plot_exits(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy and GFLOPs per frame against the exit block, with the raw and full-decode paths as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = get_task(result["task"]).kind.metric
    ks = [int(k) for k in result["per_exit"]]
    rows = [result["per_exit"][str(k)] for k in ks]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["accuracy"] for r in rows], "o-", color="C0", label=f"NVP {metric}")
    ax.axhline(result["paths"]["fulldecode"]["accuracy"], color="C0", ls="--", lw=1, label="full decode")
    ax.set_xlabel("INR exit block")
    ax.set_ylabel(f"{metric} (raw frames = 1)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(ks)
    ax2 = ax.twinx()
    ax2.plot(ks, [r["gflops"] for r in rows], "s-", color="C3", label="NVP GFLOPs/frame")
    ax2.axhline(result["paths"]["fulldecode"]["gflops"], color="C3", ls="--", lw=1, label="full decode GFLOPs")
    ax2.axhline(result["paths"]["raw"]["gflops"], color="C3", ls=":", lw=1, label="raw backbone GFLOPs")
    ax2.set_ylabel("GFLOPs per frame")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center left")
    ax.set_title(f"{result['task']}: accuracy and cost vs exit block")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
