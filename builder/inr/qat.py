"""Quantisation-aware fine-tuning: train through the coder's quantiser so the stored weights are the ones the
loss saw.

``with quantization_aware(model, quant): fit_inr(...)`` makes every stored weight read, in forward, as its
quantised value (``builder.codec.ste_quantize``: the coder's per-channel rule, straight-through gradient); on exit
the float weights stay, and coding them gives exactly what training used.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..codec import default_axis, ste_quantize
from ..config import QuantConfig
from .base import INR

__all__ = ["quantization_aware"]


class _Quantized(nn.Module):
    def __init__(self, bits: int, axis: int | None) -> None:
        super().__init__()
        self.bits, self.axis = bits, axis

    def forward(self, w: Tensor) -> Tensor:
        return ste_quantize(w, self.bits, self.axis)


@contextmanager
def quantization_aware(model: INR, quant: QuantConfig) -> Iterator[INR]:
    """Inside the block, ``model``'s stored parameters (not training-only parts such as HNeRV's encoder, nor
    buffers such as its embeddings, which are coded after training) forward as their ``quant.bits`` values."""
    stored = set(model.stored_state_dict())
    done: list[tuple[nn.Module, str]] = []
    for mod_name, mod in model.named_modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            full = f"{mod_name}.{name}" if mod_name else name
            if full in stored and p.is_floating_point():
                axis = model.quant_axes[full] if full in model.quant_axes else default_axis(full, p)
                parametrize.register_parametrization(mod, name, _Quantized(quant.bits, axis))
                done.append((mod, name))
    try:
        yield model
    finally:
        for mod, name in done:
            parametrize.remove_parametrizations(mod, name, leave_parametrized=False)  # keep the float weights
