"""OpenAI CLIP RN50: image tower for features, text tower for zero-shot labels (via open_clip).

Weights: OpenAI's ``RN50.pt`` (a TorchScript archive) in ``$NVP_WEIGHTS_DIR``, or where the
``clip`` / ``open_clip`` libraries cache it (``~/.cache/clip/RN50.pt``), or the Hugging Face cache
of ``timm/resnet50_clip.openai`` (``open_clip_model.safetensors``). The state dict is rebuilt
with ``open_clip.model.build_model_from_openai_state_dict`` (QuickGELU, fp32), which loads
strictly and infers the sizes from the file.

The loaded module is :class:`ClipImageClassifier`: ``forward(images)`` returns L2-normalised
image embeddings (B, 1024) until :meth:`ClipImageClassifier.set_classifier` installs zero-shot
text embeddings as ``classifier``; then it returns logits over those labels
(``logit_scale * cos``). :meth:`ClipImageClassifier.encode_texts` embeds free text (BLIP captions are
scored with it). Preprocessing: resize 224x224, CLIP mean/std.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import WeightsSpec, hf_cached_file
from .base import Backbone, register_backbone, with_preprocessing

__all__ = ["ClipRN50", "ClipImageClassifier", "read_openai_state_dict", "IMAGENET_TEMPLATES"]

FILENAME = "RN50.pt"
URL = ("https://openaipublic.azureedge.net/clip/models/"
       "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt")
HF_REPO = "timm/resnet50_clip.openai"
IMAGENET_TEMPLATES = ("a photo of a {}.",)


class ClipImageClassifier(nn.Module):
    """CLIP image tower + optional zero-shot ``classifier``; keeps the text tower to make classifiers."""

    def __init__(self, clip: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.visual = clip.visual
        clip.visual = nn.Identity()  # the text tower keeps everything else (no duplicate params)
        self.text = clip
        self.classifier: nn.Module = nn.Identity()
        self._tokenizer = tokenizer

    @property
    def embed_dim(self) -> int:
        return int(self.text.text_projection.shape[1])

    def forward(self, images: Tensor) -> Tensor:
        feats = self.visual(images)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return self.classifier(feats)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(N, D) L2-normalised text-tower embeddings (texts longer than 77 tokens are truncated)."""
        texts = list(texts)
        # batched: one text-tower call per 256 texts instead of one per text (1000 classes: ~20x faster)
        return torch.cat([F.normalize(self.text.encode_text(self._tokenizer(texts[i:i + 256])), dim=-1)
                          for i in range(0, len(texts), 256)])

    @torch.no_grad()
    def zero_shot_classifier(self, class_names: Sequence[str], templates: Sequence[str] = IMAGENET_TEMPLATES) -> Tensor:
        """(C, D) normalised text embeddings, averaged over ``templates`` (CLIP's prompt ensembling)."""
        embs = self.encode_texts([t.format(name) for name in class_names for t in templates])
        return F.normalize(embs.view(len(class_names), len(templates), -1).mean(1), dim=-1)

    def set_classifier(self, class_names_or_embeddings: Sequence[str] | Tensor) -> None:
        """Make ``forward`` return logits: ``classifier`` = Linear with weight ``logit_scale * text_emb``."""
        emb = class_names_or_embeddings
        if not isinstance(emb, Tensor):
            emb = self.zero_shot_classifier(emb)
        lin = nn.Linear(emb.shape[1], emb.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(self.text.logit_scale.exp() * emb)
        self.classifier = lin.eval()


def read_openai_state_dict(path: Path) -> dict[str, Tensor]:
    """State dict of OpenAI's TorchScript ``RN50.pt``, a plain torch pickle, or an open_clip safetensors file."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but OpenAI's file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive
        sd = torch.load(path, map_location="cpu", weights_only=True)
        return sd.get("state_dict", sd)


def _tokenizer():
    import open_clip

    return open_clip.get_tokenizer("RN50-quickgelu")  # OpenAI's BPE vocabulary, shipped in the package


def _cached() -> Path | None:
    from pathlib import Path as _P

    local = _P("~/.cache/clip").expanduser() / FILENAME
    if local.is_file():
        return local
    return hf_cached_file(HF_REPO, "open_clip_model.safetensors") or hf_cached_file(
        HF_REPO, "open_clip_pytorch_model.bin"
    )


@register_backbone
class ClipRN50(Backbone):
    name = "clip_rn50"
    input_kind = "image"
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    default_input_size = (224, 224)
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url=URL,
        description="OpenAI CLIP RN50 weights",
        fallbacks=(_cached,),
        fallback_hint=f"~/.cache/clip/{FILENAME} and the Hugging Face cache of {HF_REPO} are used too.",
    )
    # stem output (3 convs + avgpool), then the four stages of the modified ResNet
    curated_cuts = ("visual.avgpool", "visual.layer1", "visual.layer2", "visual.layer3", "visual.layer4")
    default_cut = "visual.layer2"

    def fx_options(self) -> dict:
        from open_clip.modified_resnet import AttentionPool2d

        # F.multi_head_attention_forward does not trace; keep the attention pool as one call
        return {"leaf_modules": (AttentionPool2d,)}

    def build(self, *, image_size: int | None = None, small: bool = False) -> nn.Module:
        import open_clip

        if small:  # tiny CLIP of the same code (tests of the loading path)
            from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

            size = image_size or 64
            clip = CLIP(embed_dim=64, vision_cfg=CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, image_size=size),
                        text_cfg=CLIPTextCfg(width=64, heads=1, layers=1), quick_gelu=True)
        else:
            size = image_size or 224
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # "No pretrained weights loaded" is expected here
            try:
                clip = open_clip.create_model("RN50-quickgelu", pretrained=None, force_image_size=size)
            finally:
                root.setLevel(level)
        return with_preprocessing(ClipImageClassifier(clip.float().eval(), _tokenizer()), input_size=(size, size))

    def load_weights(self, path: Path) -> nn.Module:
        from open_clip.model import build_model_from_openai_state_dict

        sd = read_openai_state_dict(path)
        clip = build_model_from_openai_state_dict(sd, quick_gelu=True, cast_dtype=None).float().eval()
        size = clip.visual.image_size
        return with_preprocessing(ClipImageClassifier(clip, _tokenizer()),
                                  input_size=tuple(size) if isinstance(size, (tuple, list)) else (size, size))

    def prepare_for(self, model: nn.Module, task: Any) -> nn.Module:
        """CLIP-RN50 classifies zero-shot over the task's class names (its text tower embeds them once), so its
        logits are comparable to the other classifiers'."""
        with torch.no_grad():
            model.set_classifier(task.kind.label_names())
        return model

    def zero_shot_classifier(self, class_names: Sequence[str], templates: Sequence[str] = IMAGENET_TEMPLATES,
                             model: nn.Module | None = None) -> Tensor:
        """(C, D) text embeddings of ``class_names`` from the loaded model's text tower."""
        return self._model(model).zero_shot_classifier(class_names, templates)
