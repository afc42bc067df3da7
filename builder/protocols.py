"""Evaluation protocols of seed 000 §1.1: how a task's answers are scored (which frames it sees:
:mod:`builder.selection`).

Every scorer compares a path's output with the raw frames' output (pseudo ground truth) and returns a dict whose
``accuracy`` entry is the task's metric in [0, 1] (NaN where it is undefined), so evaluate's JSON has one shape
for every task. Which scorer and frames a task uses is its kind's choice (``builder.tasks``).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["classification_scores", "detections", "detection_scores",
           "caption_scores", "CaptionScorer", "DETECTION_THRESHOLD", "gflops_of", "prediction_stability",
           "ms_per_frame"]

DETECTION_THRESHOLD = 0.5  # DetrImageProcessor.post_process_object_detection's default


def classification_scores(logits: Tensor, raw_logits: Tensor) -> dict[str, float]:
    """Agreement of a path's logits ``(N, classes)`` with the raw frames' (pseudo ground truth).

    accuracy: frame-level top-1 agreement; video_accuracy: top-1 of the mean logits; top5: mean overlap of the
    top-5 sets; kl: mean KL(raw || path) of the softmax distributions.
    """
    logits, raw_logits = logits.float(), raw_logits.float()
    acc = (logits.argmax(1) == raw_logits.argmax(1)).float().mean().item()
    vid = float(logits.mean(0).argmax() == raw_logits.mean(0).argmax())
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    top_raw = raw_logits.topk(k, dim=1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top, top_raw)]).mean().item()
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(raw_logits, 1), log_target=True,
                  reduction="batchmean").item()
    return {"accuracy": acc, "video_accuracy": vid, "top5": overlap, "kl": kl}


def detections(logits: Tensor, boxes: Tensor, threshold: float | None = None) -> list[dict[str, Tensor]]:
    """DETR outputs ``(B, queries, classes + 1)`` logits and ``(B, queries, 4)`` boxes -> one dict per image
    (``boxes`` cxcywh as given, ``scores``, ``labels``), as DETR's post-processing does: softmax, drop the last
    ("no object") class, best class per query; keep queries scoring above ``threshold`` (all when None)."""
    from .postprocess import detr_detections

    image, labels, scores, kept = (torch.from_numpy(a) for a in detr_detections(
        logits.detach().float().cpu().numpy(), boxes.detach().float().cpu().numpy(), threshold))
    return [{"boxes": kept[image == i], "scores": scores[image == i], "labels": labels[image == i]}
            for i in range(logits.shape[0])]


def detection_scores(out: tuple[Tensor, Tensor], raw: tuple[Tensor, Tensor],
                     threshold: float = DETECTION_THRESHOLD) -> dict[str, float]:
    """COCO mAP (torchmetrics ``MeanAveragePrecision``, pycocotools backend) of a path's detections against the
    raw frames' detections as pseudo ground truth. ``out``/``raw``: DETR's ``(logits, pred_boxes)``.

    Pseudo ground truth: raw-frame queries scoring above ``threshold``. Predictions: every query of the path with
    its score (no threshold, as in COCO evaluation of DETR), so the precision-recall curve is traced. Boxes stay
    in DETR's normalised cxcywh: IoU does not depend on the scale (COCO's small/medium/large split would, so it is
    not reported). accuracy = map (IoU 0.50:0.95); NaN when the raw frames have no detection above ``threshold``
    (mAP is undefined without ground truth; ``pseudo_gt`` says so).
    """
    from torchmetrics.detection import MeanAveragePrecision

    gt = [{"boxes": d["boxes"], "labels": d["labels"]} for d in detections(*raw, threshold=threshold)]
    pred = detections(*out)
    n_gt = sum(len(g["labels"]) for g in gt)
    if n_gt == 0:
        nan = math.nan
        return {"accuracy": nan, "map": nan, "map_50": nan, "map_75": nan, "mar_100": nan, "pseudo_gt": 0}
    metric = MeanAveragePrecision(box_format="cxcywh", iou_type="bbox", backend="pycocotools")
    metric.update(pred, gt)
    r = {k: float(v) for k, v in metric.compute().items() if k in ("map", "map_50", "map_75", "mar_100")}
    r = {k: (math.nan if v < 0 else v) for k, v in r.items()}  # torchmetrics writes -1 for "undefined"
    return {"accuracy": r["map"], **r, "pseudo_gt": n_gt}


def caption_scores(captions: Sequence[str], raw_captions: Sequence[str],
                   embed_text: Callable[[list[str]], Tensor]) -> dict[str, float]:
    """CLIP score between each frame's caption on a path and on the raw frames, text against text.

    ``embed_text`` maps N strings to N CLIP text embeddings. Per frame, CLIP-S = 100 * max(cos, 0) of the two
    embeddings (torchmetrics' ``clip_score`` for two texts); identical captions score exactly 100.
    accuracy = mean CLIP-S / 100 = mean max(cos, 0), in [0, 1]. CLIP text embeddings of unrelated captions are
    far from orthogonal (cos often 0.5-0.8), so compare paths with each other (NVP vs full decode), not with 0.
    exact_match: share of frames whose caption is identical to the raw one.

    Not torchmetrics' ``CLIPScore`` itself: it loads Hugging Face CLIP weights (``openai/clip-vit-*``), which this
    project does not ship or download; the same definition runs on the text tower the project already has.
    """
    if len(captions) != len(raw_captions) or not captions:
        raise ValueError(f"need one caption per raw caption, got {len(captions)} and {len(raw_captions)}")
    n = len(captions)
    with torch.no_grad():
        e = F.normalize(embed_text(list(captions) + list(raw_captions)).float(), dim=-1)
    cos = (e[:n] * e[n:]).sum(-1).clamp(0, 1)
    same = torch.tensor([a == b for a, b in zip(captions, raw_captions)])
    cos = torch.where(same, torch.ones_like(cos), cos)  # not 0.9999999 for the same string
    return {"accuracy": cos.mean().item(), "clip_score": 100 * cos.mean().item(),
            "exact_match": same.float().mean().item()}


class CaptionScorer:
    """Scores captioning paths: ``caption(image_embeds) -> list[str]`` (e.g. BLIP's decoder) on both outputs,
    then :func:`caption_scores`. The raw output's captions are reused while the same ``raw`` tensor is passed
    (evaluate compares several paths with one raw output)."""

    def __init__(self, caption: Callable[[Tensor], list[str]], embed_text: Callable[[list[str]], Tensor]) -> None:
        self.caption, self.embed_text = caption, embed_text
        self._raw: tuple[Tensor, list[str]] | None = None

    def raw_captions(self, raw: Tensor) -> list[str]:
        if self._raw is None or self._raw[0] is not raw:
            self._raw = (raw, self.caption(raw))
        return self._raw[1]

    def __call__(self, out: Tensor, raw: Tensor) -> dict[str, float]:
        ref = self.raw_captions(raw)
        texts = ref if out is raw else self.caption(out)
        return caption_scores(texts, ref, self.embed_text)


def prediction_stability(logits: Tensor) -> dict[str, float]:
    """How steady one video's predictions are over its sampled frames ``(N, classes)``: the share of frames whose
    top-1 is the video-level top-1 (mean logits), and the mean top-1 probability. Agreement with pseudo ground
    truth means little on a clip whose own raw-frame answer flips from frame to frame."""
    logits = logits.float()
    video_top1 = logits.mean(0).argmax()
    return {"frames_agreeing_with_video_top1": (logits.argmax(1) == video_top1).float().mean().item(),
            "mean_top1_prob": logits.softmax(1).max(1).values.mean().item()}


def gflops_of(fn: Callable[..., object], *args: object, per: int = 1) -> float:
    """Conv/matmul GFLOPs of one call of ``fn`` (torch's flop counter), divided by ``per`` (e.g. frames)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops() / 1e9 / per


def ms_per_frame(fn: Callable[[], object], frames: int, repeats: int = 3) -> float:
    """Wall-clock milliseconds per frame of ``fn()`` (which processes ``frames`` frames): one warm-up call, then the
    median of ``repeats`` timed calls, under ``torch.no_grad``."""
    if repeats < 1 or frames < 1:
        raise ValueError(f"repeats and frames must be >= 1, got {repeats} and {frames}")
    times = []
    with torch.no_grad():
        fn()  # warm-up: lazy init, allocator, caches
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / frames
