"""BLIP captioning (ViT-B/16 image encoder + BERT text decoder), ``Salesforce/blip-image-captioning-base``.

Weights: a local directory in the ``save_pretrained`` layout (``config.json`` +
``model.safetensors``, plus the tokenizer files to turn ids into text),
``$NVP_WEIGHTS_DIR/blip-image-captioning-base/``, or the HF cache of the repo (offline).

The loaded module is :class:`BlipCaptioner`: ``forward(pixel_values)`` returns the image
embeddings (B, 197, 768) that the text decoder cross-attends to; :meth:`BlipCaptioner.generate`
turns them into caption token ids and :meth:`BlipCaptioner.captions` into text. The split is in
the vision encoder: the seed injects at the embeddings output (class token + position
embeddings, (B, 197, 768)); deeper encoder layers are offered too. The cuts are explicit modules
(transformers' decorated, kwargs-driven forward does not trace with torch.fx).

Preprocessing: resize 224x224 (the seed's size; the position embeddings of the 384x384
checkpoint are interpolated to 14x14) and normalise with BLIP's processor mean/std, OpenAI CLIP's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._hf import from_pretrained_local, hf_weights_spec
from .base import Backbone, SplitError, register_backbone, with_preprocessing

__all__ = ["Blip", "BlipCaptioner", "BlipVisionFront", "BlipVisionTail"]

HF_REPO = "Salesforce/blip-image-captioning-base"
DIRNAME = "blip-image-captioning-base"
EMBEDDINGS = "blip.vision_model.embeddings"
LAYER = "blip.vision_model.encoder.layers."


class BlipCaptioner(nn.Module):
    """``BlipForConditionalGeneration`` as image encoder (forward) + caption generator."""

    def __init__(self, blip: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.blip = blip
        self.tokenizer = tokenizer

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.blip.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=True).last_hidden_state

    def drop_vision(self) -> BlipCaptioner:
        """Free the image encoder (ViT-B/16, 86 M parameters) where only captions are made from given embeddings
        (the served post step: the embeddings come from the ONNX tail)."""
        self.blip.vision_model = nn.Identity()
        return self

    @torch.no_grad()
    def generate(self, image_embeds: Tensor, **generate_kwargs: Any) -> Tensor:
        """Caption token ids from image embeddings (``BlipForConditionalGeneration.generate`` after its vision pass)."""
        cfg = self.blip.config.text_config
        batch = image_embeds.shape[0]
        input_ids = torch.full((batch, 1), cfg.bos_token_id, dtype=torch.long, device=image_embeds.device)
        attn = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        generate_kwargs.setdefault("max_new_tokens", 30)
        return self.blip.text_decoder.generate(
            input_ids=input_ids, eos_token_id=cfg.sep_token_id, pad_token_id=cfg.pad_token_id,
            encoder_hidden_states=image_embeds, encoder_attention_mask=attn, **generate_kwargs,
        )

    def captions(self, image_embeds: Tensor, ids_without_tokenizer: bool = False, **generate_kwargs: Any) -> list[str]:
        """Caption text per image; without a tokenizer, ``ids_without_tokenizer`` gives the token ids as text
        (random test weights ship none) instead of an error."""
        if self.tokenizer is None and ids_without_tokenizer:
            return [" ".join(map(str, ids.tolist())) for ids in self.generate(image_embeds, **generate_kwargs)]
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: load BLIP from a directory that also has its tokenizer files "
                               "(tokenizer.json / vocab.txt from the Hugging Face repo)")
        ids = self.generate(image_embeds, **generate_kwargs)
        return [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class BlipVisionFront(nn.Module):
    """Patch + class-token + position embeddings, then encoder layers ``0..last`` (none when last is -1)."""

    def __init__(self, vision: nn.Module, last: int) -> None:
        super().__init__()
        self.embeddings = vision.embeddings
        self.layers = nn.ModuleList(vision.encoder.layers[: last + 1])

    def forward(self, pixel_values: Tensor) -> tuple[Tensor]:
        x = self.embeddings(pixel_values, interpolate_pos_encoding=True)
        for layer in self.layers:
            x = layer(x)
        return (x,)


class BlipVisionTail(nn.Module):
    """Encoder layers after the cut, then the post layer norm: the image embeddings."""

    def __init__(self, vision: nn.Module, last: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(vision.encoder.layers[last + 1:])
        self.post_layernorm = vision.post_layernorm

    def forward(self, features: Tensor) -> Tensor:
        x = features
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)


def _small_config() -> dict[str, Any]:
    return dict(
        # initializer_range: BLIP's default (1e-10) makes random patch embeddings ~0, so every image would look alike
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=10, num_attention_heads=2,
                           image_size=64, patch_size=16, initializer_range=0.02),
        text_config=dict(vocab_size=30524, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64),
    )


@register_backbone
class Blip(Backbone):
    name = "blip"
    input_kind = "image"
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    default_input_size = (224, 224)
    weights_spec = hf_weights_spec(HF_REPO, DIRNAME, "BLIP image-captioning-base weights (transformers)")
    curated_cuts = (EMBEDDINGS, LAYER + "2", LAYER + "5", LAYER + "8")
    default_cut = EMBEDDINGS

    def build(self, *, small: bool = False, image_size: int | None = None, **config: Any) -> nn.Module:
        from transformers import BlipConfig, BlipForConditionalGeneration

        kw = _small_config() if small else {}
        kw.update(config)
        return with_preprocessing(BlipCaptioner(BlipForConditionalGeneration(BlipConfig(**kw))),
                                  input_size=image_size and (image_size, image_size))

    def load_weights(self, path: Path) -> nn.Module:
        from transformers import AutoTokenizer, BlipForConditionalGeneration

        blip = from_pretrained_local(BlipForConditionalGeneration, path)
        tokenizer = None  # without its files: caption ids only, captions() says why
        if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return BlipCaptioner(blip, tokenizer)

    def node_names(self, model: nn.Module | None = None) -> list[str]:
        n = len(self._model(model).blip.vision_model.encoder.layers)
        return [EMBEDDINGS] + [f"{LAYER}{i}" for i in range(n - 1)]

    def _split_modules(self, model: nn.Module, at: str) -> tuple[nn.Module, nn.Module]:
        if at == EMBEDDINGS:
            last = -1
        elif at.startswith(LAYER) and at[len(LAYER):].isdigit():
            last = int(at[len(LAYER):])
        else:
            raise SplitError(f"blip cuts are explicit; choose one of {self.node_names(model)}")
        vision = model.blip.vision_model
        if not -1 <= last < len(vision.encoder.layers) - 1:
            raise SplitError(f"no cut {at!r}: the vision encoder has {len(vision.encoder.layers)} layers")
        return BlipVisionFront(vision, last), BlipVisionTail(vision, last)
