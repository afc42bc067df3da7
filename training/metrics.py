"""Video quality metrics: PSNR, SSIM and MS-SSIM on ``(T, C, H, W)`` frames in [0, 1].

All metrics wrap ``torchmetrics.functional`` with ``data_range=1.0``.

Small-frame rule (SSIM and MS-SSIM). MS-SSIM filters every scale with an 11x11
Gaussian (sigma 1.5) and halves the frame between scales, so the standard 5 scales need
the short side to be >= 176 px (``side // 16 > 10``; >160 is not enough because of
integer halving). For smaller frames:

1. use the largest number of scales ``k`` (5, 4, ..., 1) that fits with kernel 11, and
   weight them with the first ``k`` standard betas (0.0448, 0.2856, 0.3001, 0.2363,
   0.1333), renormalised to sum to 1 when ``k < 5`` (``k = 1`` is plain SSIM);
2. if not even one scale fits (short side < 11 px), shrink the kernel to the largest
   odd size >= 3 that fits, with sigma scaled by the same factor (1.5 * kernel / 11).

Examples: 240x320 -> 5 scales; 176x144 -> 4; 64x48 -> 3; 32x32 -> 2; 8x8 -> 1 scale,
7x7 kernel. SSIM uses the same kernel rule (it has a single scale).
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = ["MS_SSIM_BETAS", "psnr", "psnr_per_frame", "ssim", "ms_ssim", "ms_ssim_params"]

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_KERNEL = 11
_SIGMA = 1.5
# Frames per MS-SSIM batch = this many pixels // (H * W): torchmetrics keeps ~15 copies
# of a batch alive, so 2M pixels (about two 720p frames) stays around 400 MB.
_PIXEL_BUDGET = 1 << 21


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"frames must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected frames of shape (T, C, H, W), got {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"expected float frames in [0, 1], got {x.dtype} and {y.dtype}")


def psnr_per_frame(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each frame, shape ``(T,)``; ``inf`` where a frame is identical."""
    _check_pair(x, y)
    # torchmetrics gives bit-identical results to 10 * log10(1 / mse) (checked), and
    # log10(1 / 0) = inf for identical frames.
    return peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean of the per-frame PSNRs in dB (the NeRV convention).

    This is not the PSNR of the clip's mean MSE: averaging dB favours clips with a
    few very good frames. If any frame is identical the result is ``inf``.
    """
    return float(psnr_per_frame(x, y).mean())


def _scale_fits(side: int, scales: int, kernel: int) -> bool:
    # What the algorithm needs: the smallest scale still covers one full kernel window.
    fits = side // 2 ** (scales - 1) > kernel - 1
    # torchmetrics' own up-front check divides by (scales - 1) ** 2 instead of
    # 2 ** (scales - 1) (stricter for 4 scales) and wants side >= 2 ** scales.
    fits_tm = side // max(1, scales - 1) ** 2 > kernel - 1 and side >= 2**scales
    return fits and fits_tm


def _kernel_for(side: int) -> int:
    if side >= _KERNEL:
        return _KERNEL
    if side < 3:
        raise ValueError(f"frames of {side} px on their short side are too small for SSIM (need >= 3 px)")
    return side if side % 2 else side - 1


def ms_ssim_params(height: int, width: int) -> tuple[tuple[float, ...], int, float]:
    """``(betas, kernel_size, sigma)`` used for frames of this size (see module docstring)."""
    side = min(height, width)
    for scales in range(len(MS_SSIM_BETAS), 0, -1):
        if _scale_fits(side, scales, _KERNEL):
            if scales == len(MS_SSIM_BETAS):
                return MS_SSIM_BETAS, _KERNEL, _SIGMA  # as published (they sum to 0.9999)
            total = sum(MS_SSIM_BETAS[:scales])
            return tuple(b / total for b in MS_SSIM_BETAS[:scales]), _KERNEL, _SIGMA
    kernel = _kernel_for(side)
    return (1.0,), kernel, _SIGMA * kernel / _KERNEL


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over frames as a differentiable scalar tensor (e.g. loss ``1 - ssim``)."""
    _check_pair(x, y)
    kernel = _kernel_for(min(x.shape[-2:]))
    # torchmetrics sizes the Gaussian from sigma, not kernel_size, so scale both.
    sigma = _SIGMA * kernel / _KERNEL
    return structural_similarity_index_measure(x, y, kernel_size=kernel, sigma=sigma, data_range=1.0)


@torch.no_grad()
def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean MS-SSIM over frames, in [0, 1]; fewer scales for small frames (module docstring).

    Computed in batches of frames so 720p clips do not need gigabytes at once.
    """
    _check_pair(x, y)
    height, width = x.shape[-2:]
    betas, kernel, sigma = ms_ssim_params(height, width)
    batch = max(1, _PIXEL_BUDGET // (height * width))
    total = 0.0
    for i in range(0, x.shape[0], batch):
        values = multiscale_structural_similarity_index_measure(
            x[i : i + batch], y[i : i + batch],
            kernel_size=kernel, sigma=sigma, data_range=1.0, betas=betas, reduction="none",
        )
        total += float(values.double().sum())
    value = total / x.shape[0]
    if math.isnan(value):
        raise ValueError("MS-SSIM is NaN; are the frames finite and in [0, 1]?")
    return value
