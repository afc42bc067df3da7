"""The coder seen from training: quantisation-aware fine-tuning and a differentiable rate estimate.

``with quantization_aware(model, quant): fit_inr(...)`` makes every stored weight read, in forward, as its
quantised value (``builder.codec.ste_quantize``: the coder's per-channel rule, straight-through gradient); on exit
the float weights stay, and coding them gives exactly what training used.

``rate_bits(model, quant)`` estimates, with gradients, the bits the ANS coder spends on the stored weights (the
rate term of ``encode --rate-weight``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..codec import default_axis, ste_quantize, step_size
from ..config import QuantConfig
from .base import INR

__all__ = ["quantization_aware", "rate_bits"]


def _coded_parameters(model: INR) -> Iterator[tuple[nn.Module, str, nn.Parameter, int | None]]:
    """(module, name, parameter, quantisation axis) of every parameter the coder stores: not training-only parts
    such as HNeRV's encoder, nor buffers such as its embeddings, which are coded after training."""
    stored = set(model.stored_state_dict())
    for mod_name, mod in model.named_modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            full = f"{mod_name}.{name}" if mod_name else name
            if full in stored and p.is_floating_point():
                yield mod, name, p, model.quant_axes[full] if full in model.quant_axes else default_axis(full, p)


def _laplace_mass(y: Tensor, b: Tensor) -> Tensor:
    """P(round(Y) = k) at the real position ``y`` for Y ~ Laplace(0, b): the CDF's rise over ``[|y|-1/2, |y|+1/2]``."""
    a = y.abs()
    tail = 0.5 * torch.exp(-(a - 0.5).clamp_min(0) / b) * (1 - torch.exp(-1 / b))
    centre = 1 - 0.5 * (torch.exp(-(0.5 - a) / b) + torch.exp(-(0.5 + a) / b))
    return torch.where(a >= 0.5, tail, centre)


def rate_bits(model: INR, quant: QuantConfig, noise: bool = True) -> Tensor:
    """Estimated bits of ``model``'s coded weights, differentiable in them: each tensor's symbols ``w / step``
    (the coder's per-channel step, held fixed) under the discretised Laplace fitted to them, the parametric model
    the ANS coder tries (its histogram models code a tensor in at most about this). ``noise`` adds uniform noise in
    place of rounding, the usual differentiable stand-in. Biases and scales are counted the same way; the coder's
    tables and headers are not."""
    total = torch.zeros(())
    for _, _, p, axis in _coded_parameters(model):
        y = p / step_size(p, quant.bits, axis)
        if noise:
            y = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        b = y.abs().mean().clamp_min(0.05)  # the Laplace's maximum-likelihood scale around 0
        total = total.to(p.device) - torch.log2(_laplace_mass(y, b).clamp_min(2.0 ** -30)).sum()
    return total


class _Quantized(nn.Module):
    def __init__(self, bits: int, axis: int | None) -> None:
        super().__init__()
        self.bits, self.axis = bits, axis

    def forward(self, w: Tensor) -> Tensor:
        return ste_quantize(w, self.bits, self.axis)


@contextmanager
def quantization_aware(model: INR, quant: QuantConfig) -> Iterator[INR]:
    """Inside the block, ``model``'s coded parameters forward as their ``quant.bits`` values."""
    done: list[tuple[nn.Module, str]] = []
    for mod, name, _, axis in list(_coded_parameters(model)):
        parametrize.register_parametrization(mod, name, _Quantized(quant.bits, axis))
        done.append((mod, name))
    try:
        yield model
    finally:
        for mod, name in done:
            parametrize.remove_parametrizations(mod, name, leave_parametrized=False)  # keep the float weights
