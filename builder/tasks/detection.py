"""Object detection (DETR): class logits and boxes per query, scored by mAP with the raw frames' detections as
ground truth, served as every box above a threshold in the video's pixels with its COCO label."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..postprocess import cxcywh_to_xyxy, detr_detections
from ..tensor_spec import TensorSpec
from ..triton.serving import RequestError
from ..triton.task_serving import BOXES, FRAME_SIZE, LOGITS, SELECTED, TAIL_LOGITS, tail_name
from ..triton.wire import BOXES as ANSWER_BOXES, FRAME_INDICES, BOX_FRAMES, LABELS, SCORES
from .base import Task, TaskKind, label_array, read_labels, register_kind, register_task, request_array, \
    selected_frames

__all__ = ["Detection", "DetectionPostHandler"]


class DetectionPostHandler:
    """``handle({"tail_logits", "tail_pred_boxes", "selected_frames", "frame_size"})`` -> every box scoring above
    ``threshold`` as ``boxes`` (x0, y0, x1, y1 in the video's pixels), ``labels``, ``scores`` and ``box_frames``
    (the video frame it is in), ordered by frame then score; plus DETR's raw outputs. numpy only."""

    inputs = (TAIL_LOGITS, tail_name(BOXES), SELECTED, FRAME_SIZE)

    def __init__(self, labels: Sequence[str], threshold: float = 0.5) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.labels = label_array(labels)
        self.threshold = threshold

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        logits = request_array(inputs, TAIL_LOGITS, 3, np.float32)
        boxes = request_array(inputs, tail_name(BOXES), 3, np.float32)
        if logits.shape[2] != len(self.labels) + 1 or boxes.shape != (*logits.shape[:2], 4):
            raise RequestError(f"DETR outputs must be logits (frames, queries, {len(self.labels) + 1}) and boxes "
                               f"(frames, queries, 4), got {list(logits.shape)} and {list(boxes.shape)}")
        idx = selected_frames(inputs, len(logits))
        size = request_array(inputs, FRAME_SIZE, 1, np.int64)
        if size.shape != (2,) or (size < 1).any():
            raise RequestError(f"'{FRAME_SIZE}' must be (height, width), got {size.tolist()}")
        image, label, score, box = detr_detections(logits, boxes, self.threshold)
        order = np.lexsort((-score, image))  # by frame, best first
        return {"boxes": cxcywh_to_xyxy(box[order], *size.tolist()).reshape(-1, 4),
                "labels": self.labels[label[order]], "scores": score[order], "box_frames": idx[image[order]],
                FRAME_INDICES: idx, LOGITS: logits, BOXES: boxes}


@register_kind
class Detection(TaskKind):
    name = "detection"
    metric = "mAP vs raw detections"
    model_outputs = (LOGITS, BOXES)
    answers = (TensorSpec(ANSWER_BOXES, "TYPE_FP32", (-1, 4)), TensorSpec(LABELS, "TYPE_STRING", (-1,)),
               TensorSpec(SCORES, "TYPE_FP32", (-1,)), TensorSpec(BOX_FRAMES, "TYPE_INT64", (-1,)))
    frame_size = True  # boxes are answered in the video's pixels
    answer = "boxes"

    def scorer(self, task: Task, model: Any, random_init: bool):
        from ..protocols import detection_scores

        return detection_scores

    def label_names(self) -> list[str]:
        # index = COCO category id, as DETR's id2label (0 and gaps are "N/A"); the names ship with torchvision
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        return ["N/A" if n == "__background__" else n
                for n in FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]]

    def num_classes(self, outputs: Mapping[str, Any]) -> int | None:
        return int(outputs[LOGITS].shape[-1]) - 1  # DETR's last class is "no object"

    def post_parameters(self, cfg: Any, task: Task) -> dict[str, str]:
        return {"threshold": str(cfg.score_threshold)}

    def post_handler(self, task: Task, params: Mapping[str, str], model_dir: str | Path, *,
                     instance_kind: str = "CPU", device_id: str | int = 0) -> DetectionPostHandler:
        return DetectionPostHandler(read_labels(params, model_dir), float(params.get("threshold", "0.5")))


register_task("detr_r50", "detection", "patch_embed")
