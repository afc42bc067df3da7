"""DETR-R50 (COCO detection) from transformers, ``facebook/detr-resnet-50``.

Weights: a local directory in the ``save_pretrained`` layout (``config.json`` +
``model.safetensors``), ``$NVP_WEIGHTS_DIR/detr-resnet-50/``, or the HF cache of
``facebook/detr-resnet-50`` (offline). The ResNet-50 body is built by timm from the config with
``use_pretrained_backbone=False`` (transformers 5 forces this), so nothing is downloaded: the DETR
checkpoint holds the backbone weights too.

The loaded module is :class:`DetrDetector`: ``forward(pixel_values, pixel_mask=None)`` returns
``(logits, pred_boxes)``. Its cut points are explicit (:class:`DetrFront`/:class:`DetrTail`)
rather than torch.fx: transformers' DETR forward is decorated, kwargs-driven code with
data-dependent Python (output records, mask creation) that symbolic tracing does not follow.
Every cut carries two tensors, the features and the padding mask (the full-resolution
``pixel_mask`` before the input projection, the downsampled boolean mask after it).

Preprocessing (DetrImageProcessor's): shortest side 800 with the longest at most 1333, ImageNet
mean/std; frames of one video share a size so no padding is needed (mask of ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._hf import from_pretrained_local, hf_weights_spec
from .base import Backbone, SplitError, check_frames, register_backbone, resize_frames, with_preprocessing

__all__ = ["DetrR50", "DetrDetector", "DetrFront", "DetrTail", "detr_resize_shape"]

HF_REPO = "facebook/detr-resnet-50"
DIRNAME = "detr-resnet-50"
STAGES = ("layer1", "layer2", "layer3", "layer4")
PREFIX = "detr.model.backbone.model."


def detr_resize_shape(height: int, width: int, shortest_edge: int = 800, longest_edge: int = 1333) -> tuple[int, int]:
    """Output (h, w) of DetrImageProcessor's resize: shortest side ``shortest_edge``, longest <= ``longest_edge``."""
    size = shortest_edge
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > longest_edge:
        raw = longest_edge * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return int((raw if raw is not None else size) * height / width), size
    return size, int((raw if raw is not None else size) * width / height)


class DetrDetector(nn.Module):
    """``DetrForObjectDetection`` with tensor outputs: ``(logits, pred_boxes)``."""

    def __init__(self, detr: nn.Module) -> None:
        super().__init__()
        self.detr = detr

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.detr(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return out.logits, out.pred_boxes


def _body_children(detr: nn.Module) -> list[tuple[str, nn.Module]]:
    body = detr.model.backbone.model
    children = list(body.named_children())
    names = [n for n, _ in children]
    if not all(s in names for s in STAGES):
        raise SplitError(f"DETR backbone {type(body).__name__} is not a timm ResNet (children {names})")
    return children


class DetrFront(nn.Module):
    """Conv body up to ``stage`` (or through the input projection when ``stage`` is None)."""

    def __init__(self, detr: nn.Module, stage: str | None) -> None:
        super().__init__()
        children = _body_children(detr)
        stop = len(children) if stage is None else [n for n, _ in children].index(stage) + 1
        self.body = nn.ModuleList(m for _, m in children[:stop])
        self.input_projection = detr.model.input_projection if stage is None else None

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if pixel_mask is None:
            b, _, h, w = pixel_values.shape
            pixel_mask = torch.ones((b, h, w), dtype=torch.long, device=pixel_values.device)
        x = pixel_values
        for m in self.body:
            x = m(x)
        if self.input_projection is None:
            return x, pixel_mask
        mask = F.interpolate(pixel_mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        return self.input_projection(x), mask


class DetrTail(nn.Module):
    """The rest: remaining conv stages, input projection, transformer encoder/decoder, box and class heads.

    Mirrors ``DetrModel.forward`` / ``DetrForObjectDetection.forward`` (transformers 5.x) from the
    feature map on; the split test checks it against the library's own forward.
    """

    def __init__(self, detr: nn.Module, stage: str | None) -> None:
        super().__init__()
        children = _body_children(detr)
        start = len(children) if stage is None else [n for n, _ in children].index(stage) + 1
        self.body = nn.ModuleList(m for _, m in children[start:])
        self.project = stage is not None
        self.input_projection = detr.model.input_projection if self.project else None
        self.position_embedding = detr.model.position_embedding
        self.query_position_embeddings = detr.model.query_position_embeddings
        self.encoder = detr.model.encoder
        self.decoder = detr.model.decoder
        self.class_labels_classifier = detr.class_labels_classifier
        self.bbox_predictor = detr.bbox_predictor

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = features
        for m in self.body:
            x = m(x)
        if self.project:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
            x = self.input_projection(x)
        batch = x.shape[0]
        pos = self.position_embedding(shape=x.shape, device=x.device, dtype=x.dtype, mask=mask)
        pos = pos.flatten(2).transpose(1, 2)
        tokens = x.flatten(2).transpose(1, 2)
        flat_mask = mask.flatten(1)
        memory = self.encoder(inputs_embeds=tokens, attention_mask=flat_mask, spatial_position_embeddings=pos)
        query_pos = self.query_position_embeddings.weight.unsqueeze(0).repeat(batch, 1, 1)
        decoded = self.decoder(
            inputs_embeds=torch.zeros_like(query_pos),
            attention_mask=None,
            spatial_position_embeddings=pos,
            object_queries_position_embeddings=query_pos,
            encoder_hidden_states=memory.last_hidden_state,
            encoder_attention_mask=flat_mask,
        )
        seq = decoded.last_hidden_state
        return self.class_labels_classifier(seq), self.bbox_predictor(seq).sigmoid()


def _small_config(num_labels: int = 91) -> dict[str, Any]:
    return dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64,
                encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_labels=num_labels)


@register_backbone
class DetrR50(Backbone):
    name = "detr_r50"
    input_kind = "image"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_input_size = (750, 1333)  # a 1280x720 frame after the 800/1333 resize
    default_shortest_edge = 800
    default_longest_edge = 1333
    preprocess_attrs = ("input_size", "shortest_edge", "longest_edge")
    dynamic_input_dims = (0, 2, 3)  # the resize keeps the video's aspect ratio
    weights_spec = hf_weights_spec(HF_REPO, DIRNAME, "DETR-R50 COCO weights (transformers)")
    curated_cuts = tuple(PREFIX + s for s in STAGES) + ("detr.model.input_projection",)
    default_cut = "detr.model.input_projection"

    def build(self, *, small: bool = False, input_size: tuple[int, int] | None = None,
              shortest_edge: int | None = None, longest_edge: int | None = None, **config: Any) -> nn.Module:
        """Random weights. ``shortest_edge``/``longest_edge`` shrink :meth:`preprocess`'s resize (fast tests)."""
        from transformers import DetrConfig, DetrForObjectDetection

        kw = dict(use_timm_backbone=True, backbone="resnet50", use_pretrained_backbone=False)
        if small:
            kw.update(_small_config())
        kw.update(config)
        return with_preprocessing(DetrDetector(DetrForObjectDetection(DetrConfig(**kw))), input_size=input_size,
                                  shortest_edge=shortest_edge, longest_edge=longest_edge)

    def load_weights(self, path: Path) -> nn.Module:
        from transformers import DetrForObjectDetection

        return DetrDetector(from_pretrained_local(DetrForObjectDetection, path))

    def node_names(self, model: nn.Module | None = None) -> list[str]:
        return self.split_points()

    def _split_modules(self, model: nn.Module, at: str) -> tuple[nn.Module, nn.Module]:
        if at not in self.curated_cuts:
            raise SplitError(f"detr_r50 cuts are explicit; choose one of {list(self.curated_cuts)}")
        stage = None if at.endswith("input_projection") else at[len(PREFIX):]
        return DetrFront(model.detr, stage), DetrTail(model.detr, stage)

    def cut_names(self, at: str, n: int) -> list[str]:
        return ["features", "mask"]

    def dynamic_dims(self, at: str, index: int, ndim: int) -> tuple[int, ...]:
        return (0, 2, 3) if index == 0 else (0, 1, 2)  # features (B,C,h,w), mask (B,H,W): sizes follow the frame

    def preprocess(
        self, frames: Tensor, *, shortest_edge: int | None = None, longest_edge: int | None = None
    ) -> Tensor:
        """(T,3,H,W) in [0,1] -> (T,3,h,w) resized (shortest side 800, longest <= 1333) and normalised."""
        frames = check_frames(frames)
        size = detr_resize_shape(frames.shape[-2], frames.shape[-1], shortest_edge or self.setting("shortest_edge"),
                                 longest_edge or self.setting("longest_edge"))
        return self.normalize(resize_frames(frames, size))
