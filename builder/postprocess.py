"""Turning a backbone's raw outputs into answers, in numpy only: shared by the evaluation protocols
(:mod:`builder.protocols`) and the served post-processing steps (:mod:`builder.triton.task_serving`), which run in
Triton stubs without torch."""
from __future__ import annotations

import numpy as np

__all__ = ["softmax", "detr_detections", "cxcywh_to_xyxy"]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def detr_detections(logits: np.ndarray, boxes: np.ndarray,
                    threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DETR's post-processing (``DetrImageProcessor.post_process_object_detection``): softmax over ``(B, queries,
    classes + 1)`` logits, drop the last ("no object") class, best class per query, keep queries scoring above
    ``threshold`` (all when None). Returns ``(image, label, score, box)`` per kept query, in image then query
    order; boxes as given (normalised cxcywh)."""
    logits, boxes = np.asarray(logits), np.asarray(boxes, dtype=np.float32)
    if logits.ndim != 3 or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(f"DETR outputs must be logits (B, Q, C+1) and boxes (B, Q, 4), got {list(logits.shape)} "
                         f"and {list(boxes.shape)}")
    probs = softmax(logits)[..., :-1]
    scores, labels = probs.max(-1), probs.argmax(-1)
    keep = scores > threshold if threshold is not None else np.ones(scores.shape, dtype=bool)
    image, query = np.nonzero(keep)
    return image.astype(np.int64), labels[image, query].astype(np.int64), scores[image, query], boxes[image, query]


def cxcywh_to_xyxy(boxes: np.ndarray, height: float = 1.0, width: float = 1.0) -> np.ndarray:
    """Normalised (cx, cy, w, h) -> (x0, y0, x1, y1) in an image of ``height`` x ``width`` pixels."""
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, dtype=np.float32), -1, 0)
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    return (xyxy * np.array([width, height, width, height], dtype=np.float32)).astype(np.float32)
