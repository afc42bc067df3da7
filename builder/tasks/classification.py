"""Image classification: class logits per frame, scored by top-1 agreement with the raw frames' predictions,
served as the video's top-k labels and each frame's top-1."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..postprocess import softmax
from ..tensor_spec import TensorSpec
from ..triton.serving import RequestError, _int_param
from ..triton.task_serving import LOGITS, SELECTED, TAIL_LOGITS
from ..triton.wire import FRAME_INDICES, FRAME_LABELS, FRAME_SCORES, LABELS, SCORES
from .base import Task, TaskKind, label_array, read_labels, register_kind, register_task, request_array, \
    selected_frames

__all__ = ["Classification", "ClassificationPostHandler"]


class ClassificationPostHandler:
    """``handle({"tail_logits", "selected_frames"}) -> labels/scores`` (and the logits): the video's top-k from the
    mean logits over its frames (the protocol's video-level answer) and each frame's (action: each clip's) top-1.
    ``labels`` come with the model (a ``labels.json`` written by the builder), so this step needs numpy only."""

    inputs = (TAIL_LOGITS, SELECTED)

    def __init__(self, labels: Sequence[str], top_k: int = 5) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.labels = label_array(labels)
        self.top_k = top_k

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        logits = request_array(inputs, TAIL_LOGITS, 2, np.float32)
        if logits.shape[1] != len(self.labels):
            raise RequestError(f"'{TAIL_LOGITS}' must be (frames, {len(self.labels)}), got shape "
                               f"{list(logits.shape)}")
        video = softmax(logits.mean(0))
        top = np.argsort(-video, kind="stable")[: self.top_k]
        frames = softmax(logits)
        best = frames.argmax(1)
        return {"labels": self.labels[top], "scores": video[top],
                "frame_labels": self.labels[best], "frame_scores": frames[np.arange(len(best)), best],
                FRAME_INDICES: selected_frames(inputs), LOGITS: logits}  # action tasks: one row per clip


@register_kind
class Classification(TaskKind):
    name = "classification"
    metric = "top-1 agreement"
    model_outputs = (LOGITS,)
    answers = (TensorSpec(LABELS, "TYPE_STRING", (-1,)), TensorSpec(SCORES, "TYPE_FP32", (-1,)),
               TensorSpec(FRAME_LABELS, "TYPE_STRING", (-1,)), TensorSpec(FRAME_SCORES, "TYPE_FP32", (-1,)))
    has_logits = True
    answer = "labels"

    def logits(self, out: Any) -> Any:
        """The class logits of a model output (a tensor, a dict with ``logits``, or a tuple starting with them)."""
        return out if hasattr(out, "shape") else out[LOGITS] if isinstance(out, dict) else out[0]

    def served_outputs(self, out: Any) -> Any:
        return self.logits(out)

    def scorer(self, task: Task, model: Any, random_init: bool):
        from ..protocols import classification_scores

        return lambda out, raw: classification_scores(self.logits(out), self.logits(raw))

    def constant_output(self, train_raw: Any, n: int) -> Any:
        """Logits that answer the training frames' majority top-1 class for every one of ``n`` samples."""
        import torch

        logits = self.logits(train_raw)
        majority = int(torch.bincount(logits.argmax(-1), minlength=logits.shape[-1]).argmax())
        return torch.nn.functional.one_hot(torch.full((n,), majority), logits.shape[-1]).float()

    def raw_stability(self, raw: Any) -> dict[str, float] | None:
        from ..protocols import prediction_stability

        return prediction_stability(self.logits(raw))

    def label_names(self) -> list[str]:
        # ImageNet-1k (CLIP classifies zero-shot over the same names); they ship with torchvision
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])

    def num_classes(self, outputs: Mapping[str, Any]) -> int | None:
        return int(outputs[LOGITS].shape[-1])

    def post_parameters(self, cfg: Any, task: Task) -> dict[str, str]:
        return {"top_k": str(cfg.top_k)}

    def post_handler(self, task: Task, params: Mapping[str, str], model_dir: str | Path, *,
                     instance_kind: str = "CPU", device_id: str | int = 0) -> ClassificationPostHandler:
        return ClassificationPostHandler(read_labels(params, model_dir), _int_param(params, "top_k", 5, 1))


register_task("effnet_lite0", "classification", "conv1x1")
register_task("mobilenet_v2", "classification", "conv1x1")
register_task("resnet50", "classification", "conv1x1")
register_task("clip_rn50", "classification", "conv1x1")
register_task("vit_b16", "classification", "patch_embed")
