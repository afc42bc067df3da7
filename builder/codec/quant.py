"""Symmetric uniform quantisation and global magnitude pruning of weight tensors.

All arithmetic runs in numpy float32 so the encoder (``fake_quantize``) and the decoder (``dequantize``) execute the
very same operations and produce bit-identical weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "QuantizedTensor",
    "default_axis",
    "dequantize",
    "fake_quantize",
    "prune_global",
    "qmax",
    "quantize",
    "ste_quantize",
    "step_size",
]


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer symbols plus the float32 scale(s) that map them back to weights.

    ``scale`` has one entry per slice along ``axis`` (per-channel) or a single entry when ``axis`` is ``None``.
    """

    q: np.ndarray  # int32, same shape as the original tensor
    scale: np.ndarray  # float32, shape (shape[axis],) or (1,)
    axis: int | None
    shape: tuple[int, ...]
    bits: int


def qmax(bits: int) -> int:
    """Largest symbol magnitude for ``bits``-bit symmetric quantisation (one code is left unused so 0 is exact)."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    return 2 ** (bits - 1) - 1


def default_axis(name: str, t: torch.Tensor) -> int | None:
    """Per-output-channel scales for conv/linear weights (dim 0), one scale for biases and other small tensors."""
    del name  # the rule only depends on the shape today; the name lets callers special-case later
    return 0 if t.ndim >= 2 else None


def _normalise_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None or ndim <= 1:
        return None
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D tensor")
    return axis % ndim


def _broadcast_shape(axis: int | None, ndim: int, n: int) -> tuple[int, ...]:
    if axis is None:
        return (1,) * ndim
    return tuple(n if d == axis else 1 for d in range(ndim))


def quantize(t: torch.Tensor, bits: int, axis: int | None) -> QuantizedTensor:
    """Quantise ``t`` to signed ``bits``-bit symbols with scale ``max|w| / qmax`` per slice along ``axis``."""
    if not t.is_floating_point():
        raise TypeError(f"can only quantise floating-point tensors, got {t.dtype}; store integer tensors raw")
    top = qmax(bits)
    w = t.detach().cpu().to(torch.float32).numpy()
    if not np.isfinite(w).all():
        raise ValueError("tensor contains NaN or Inf; cannot quantise it (check the training run)")
    axis = _normalise_axis(axis, w.ndim)
    if axis is None:
        peak = np.abs(w).max(initial=0.0).reshape(1)
    else:
        others = tuple(d for d in range(w.ndim) if d != axis)
        peak = np.abs(w).max(axis=others, initial=0.0)
    peak = peak.astype(np.float32)
    scale = peak / np.float32(top)
    scale[peak == 0] = 1.0  # all-zero slice: any scale works, 1.0 avoids 0/0
    scale = scale.astype(np.float32)
    s = scale.reshape(_broadcast_shape(axis, w.ndim, scale.size))
    q = np.clip(np.rint(w / s), -top, top).astype(np.int32)
    return QuantizedTensor(q=q, scale=scale, axis=axis, shape=tuple(w.shape), bits=bits)


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """Float32 weights ``q * scale``; identical bits wherever it runs, given the same ``QuantizedTensor``."""
    ndim = len(qt.shape)
    s = np.asarray(qt.scale, dtype=np.float32).reshape(_broadcast_shape(qt.axis, ndim, np.size(qt.scale)))
    w = np.asarray(qt.q, dtype=np.int32).reshape(qt.shape).astype(np.float32) * s
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def fake_quantize(t: torch.Tensor, bits: int, axis: int | None) -> torch.Tensor:
    """The weights a decoder will see: ``dequantize(quantize(t, bits, axis))``."""
    return dequantize(quantize(t, bits, axis))


def step_size(t: torch.Tensor, bits: int, axis: int | None) -> torch.Tensor:
    """:func:`quantize`'s scale in torch, broadcastable to ``t`` and detached: ``max|w| / qmax`` per slice along
    ``axis`` (1 for an all-zero slice). What the training-time views of the coder (QAT, the rate term) divide by."""
    axis = _normalise_axis(axis, t.ndim)
    w = t.detach()
    if axis is None:
        peak = w.abs().amax().reshape((1,) * t.ndim)
    else:
        peak = w.abs().amax(dim=tuple(d for d in range(t.ndim) if d != axis), keepdim=True)
    return torch.where(peak > 0, peak / qmax(bits), torch.ones_like(peak))


def ste_quantize(t: torch.Tensor, bits: int, axis: int | None) -> torch.Tensor:
    """What training sees in quantisation-aware fine-tuning: the forward value is :func:`fake_quantize`'s (same
    per-slice scale, same rounding, in torch instead of numpy), the gradient passes straight through to the float
    weight (the straight-through estimator)."""
    top = qmax(bits)
    scale = step_size(t, bits, axis)
    q = torch.clamp(torch.round(t / scale), -top, top) * scale
    return t + (q - t).detach()


def prune_global(tensors: dict[str, torch.Tensor], amount: float, names: list[str]) -> dict[str, torch.Tensor]:
    """Zero the ``amount`` fraction of smallest-magnitude entries over all ``names`` taken together.

    Same semantics as ``torch.nn.utils.prune.global_unstructured`` with L1 importance: exactly
    ``round(amount * total)`` entries are zeroed (ties broken by ``topk``). Returns a new dict; tensors not in
    ``names`` are passed through, pruned ones are fresh copies, the inputs are never mutated.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune amount must be in [0, 1), got {amount}")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise KeyError(f"cannot prune unknown tensors {missing}; available: {sorted(tensors)}")
    out = dict(tensors)
    if not names:
        return out
    flat = [tensors[n].detach().reshape(-1) for n in names]
    total = sum(f.numel() for f in flat)
    k = round(amount * total)
    if k == 0:
        for n in names:
            out[n] = tensors[n].detach().clone()
        return out
    mags = torch.cat([f.abs().to(torch.float32) for f in flat])
    keep = torch.ones(total, dtype=torch.bool)
    keep[torch.topk(mags, k, largest=False).indices] = False
    start = 0
    for n, f in zip(names, flat, strict=True):
        mask = keep[start:start + f.numel()].reshape(tensors[n].shape)
        out[n] = tensors[n].detach().clone().masked_fill_(~mask, 0)
        start += f.numel()
    return out
