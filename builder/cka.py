"""Linear CKA between two sets of per-sample features (Kornblith et al., 2019), plain and debiased.

Plain linear CKA is inflated when samples are few compared with feature dimensions (with 32 frames, random
features already score ~0.98); the debiased estimator (unbiased HSIC, Song et al. 2012) removes that bias, so
use it for ranking and treat both only as a pre-filter.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_cka", "gram"]


def gram(x: Tensor) -> Tensor:
    """Linear kernel of ``x`` ``(n, ...)`` flattened per sample, in float64."""
    x = x.reshape(x.shape[0], -1).double()
    return x @ x.T


def _center(k: Tensor) -> Tensor:
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
    return h @ k @ h


def _hsic_unbiased(k: Tensor, l: Tensor) -> Tensor:
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    term = (k * l).sum() + (ones.T @ k @ ones) * (ones.T @ l @ ones) / ((n - 1) * (n - 2)) \
        - 2.0 / (n - 2) * (ones.T @ k @ l @ ones)
    return term.squeeze() / (n * (n - 3))


def linear_cka(x: Tensor, y: Tensor, *, debiased: bool = False) -> float:
    """CKA in [0, 1] (the debiased value can dip below 0) between features ``x`` and ``y`` of the same samples."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples on both sides, got {x.shape[0]} and {y.shape[0]}")
    n = x.shape[0]
    if n < (5 if debiased else 2):
        raise ValueError(f"too few samples for {'debiased ' if debiased else ''}CKA: {n}")
    # centring the features = centring the Gram matrices
    k, l = gram(x), gram(y)
    if debiased:
        k, l = _center(k), _center(l)
        hsic = _hsic_unbiased
    else:
        k, l = _center(k), _center(l)
        hsic = lambda a, b: (a * b).sum()  # noqa: E731
    num = hsic(k, l)
    den = torch.sqrt(hsic(k, k) * hsic(l, l))
    return float(num / den) if den > 0 else 0.0
