"""INR <-> bytes: prune, quantise and entropy-code a model's stored tensors; rebuild a decoder from the bytes.

``quantize_inr(model, quant)`` is "the quantized model"; ``decode_inr(encode_inr(model, quant)).model`` is
bit-exact with it (same tensors, same outputs), because both go through the same dequantisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..codec import decode_tensors, encode_tensors, prune_global, quantize_tensors
from ..config import QuantConfig
from .base import INR
from .config import INRConfig
from .registry import build_inr

__all__ = ["DecodedINR", "encode_inr", "decode_inr", "quantize_inr"]


def _prepared(model: INR, quant: QuantConfig) -> dict[str, Tensor]:
    tensors = {k: v.detach().float().cpu() for k, v in model.stored_state_dict().items()}
    if quant.prune > 0:
        names = [k for k, v in tensors.items() if k.endswith(".weight") and v.ndim >= 2]
        tensors.update(prune_global({k: tensors[k] for k in names}, quant.prune, names))
    return tensors


def encode_inr(model: INR, quant: QuantConfig = QuantConfig()) -> bytes:
    """The bytes stored for a video: header (INR config) + coded tensors."""
    return encode_tensors(_prepared(model, quant), quant=quant, meta={"inr": model.config.to_dict()},
                          axes=model.quant_axes)


def quantize_inr(model: INR, quant: QuantConfig = QuantConfig()) -> INR:
    """A decoder-only copy of ``model`` holding exactly the weights ``decode_inr`` will produce."""
    q = build_inr(model.config, decoder_only=True)
    q.load_state_dict(quantize_tensors(_prepared(model, quant), quant, axes=q.quant_axes), strict=True)
    return q.eval()


@dataclass(frozen=True)
class DecodedINR:
    model: INR
    config: INRConfig
    quant: QuantConfig
    format_version: int
    num_bytes: int


def decode_inr(blob: bytes, device: str | torch.device = "cpu") -> DecodedINR:
    """Rebuild the (decoder-only) INR from stored bytes; raises ``CorruptBitstream`` on damaged input."""
    dec = decode_tensors(blob)
    config = INRConfig.from_dict(dec.meta["inr"])
    model = build_inr(config, decoder_only=True)
    model.load_state_dict(dec.tensors, strict=True)
    return DecodedINR(model.to(device).eval(), config, dec.quant, dec.format_version, len(blob))
