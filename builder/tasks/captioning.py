"""Captioning (BLIP): image embeddings per frame, captioned by the text decoder; scored by the CLIP text score of
the captions against the raw frames' captions, served as a caption per frame and the video's most frequent one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..tensor_spec import TensorSpec
from ..triton.serving import RequestError, model_device
from ..triton.task_serving import EMBEDDINGS, SELECTED, tail_name
from ..triton.wire import FRAME_INDICES, CAPTION, CAPTIONS
from .base import Task, TaskKind, register_kind, register_task, request_array, selected_frames

__all__ = ["Captioning", "CaptionPostHandler"]


class CaptionPostHandler:
    """``handle({"tail_embeddings", "selected_frames"}) -> captions`` (one per frame) and the video's ``caption``
    (the most frequent one; the earliest frame's on ties). ``caption(embeds)`` is the captioning model's text
    decoder; this step runs it, so it needs torch (and the model's weights)."""

    inputs = (tail_name(EMBEDDINGS), SELECTED)

    def __init__(self, caption: Callable[[Any], list[str]], device: str = "cpu") -> None:
        self.caption, self.device = caption, device

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        embeds = request_array(inputs, tail_name(EMBEDDINGS), 3, np.float32)
        idx = selected_frames(inputs, len(embeds))
        if not np.isfinite(embeds).all():
            raise RequestError(f"'{tail_name(EMBEDDINGS)}' holds non-finite values")
        with torch.inference_mode():
            texts = self.caption(torch.from_numpy(embeds).to(self.device))
        counts = {t: texts.count(t) for t in texts}
        video = max(texts, key=lambda t: (counts[t], -texts.index(t)))
        return {"caption": np.array([video.encode()], dtype=object),
                "captions": np.array([t.encode() for t in texts], dtype=object),
                FRAME_INDICES: idx, EMBEDDINGS: embeds}


@register_kind
class Captioning(TaskKind):
    name = "captioning"
    metric = "caption CLIP score / 100"
    model_outputs = (EMBEDDINGS,)
    answers = (TensorSpec(CAPTION, "TYPE_STRING", (1,)), TensorSpec(CAPTIONS, "TYPE_STRING", (-1,)))
    answer = "captions"
    post_on_device = True  # the text decoder's generate loop runs in the post step (no ONNX form worth serving)

    def scorer(self, task: Task, model: Any, random_init: bool):
        """BLIP captions each path's image embeddings; CLIP-RN50's text tower (its real weights, or a small random
        CLIP with ``random_init``) scores them against the raw frames' captions."""
        from ..backbones import WeightsNotFound, get_backbone
        from ..protocols import CaptionScorer

        clip_bb = get_backbone("clip_rn50")
        try:
            clip = clip_bb.load(None, random_init=True, small=True) if random_init else clip_bb.load()
        except WeightsNotFound as e:
            raise WeightsNotFound(f"{task.name} captions are scored with CLIP-RN50's text tower, whose weights are "
                                  f"missing: {e}") from None

        def caption(embeds: Any) -> list[str]:
            # random weights come without a tokenizer: caption token ids as text (plumbing only)
            return model.captions(embeds, ids_without_tokenizer=random_init)

        return CaptionScorer(caption, clip.encode_texts)

    def post_parameters(self, cfg: Any, task: Task) -> dict[str, str]:
        """The text decoder runs in the post step, from the same weights as the exported backbone."""
        weights = cfg.weights.get(task.name, "default")
        return {"weights": weights if weights in ("default", "random") or cfg.target == "ngc"
                else str(Path(weights).expanduser().resolve()),
                "backbone_config": json.dumps(dict(cfg.backbone_config.get(task.name, {})))}

    def post_handler(self, task: Task, params: Mapping[str, str], model_dir: str | Path, *,
                     instance_kind: str = "CPU", device_id: str | int = 0) -> CaptionPostHandler:
        from ..backbones import get_backbone

        weights = params.get("weights", "default") or "default"
        random_init = weights == "random"
        device = model_device(params, instance_kind, device_id)
        model = get_backbone(task.backbone).load_for(
            task, None if random_init else weights, random_init=random_init,
            config=json.loads(params.get("backbone_config", "{}") or "{}")).drop_vision().to(device)
        # random weights come without a tokenizer: their captions are token ids (plumbing and tests only)
        return CaptionPostHandler(lambda e: model.captions(e, ids_without_tokenizer=random_init), device)


register_task("blip", "captioning", "patch_embed")
