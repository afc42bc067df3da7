import math

import pytest
import torch

from training.metrics import MS_SSIM_BETAS, ms_ssim, ms_ssim_params, psnr, psnr_per_frame, ssim


def _frames(t: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Smooth-ish content (upsampled noise) so SSIM reacts to added noise like on real video.
    low = torch.rand(t, 3, max(h // 4, 1), max(w // 4, 1), generator=gen)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def test_psnr_identical_is_inf():
    x = _frames()
    assert psnr(x, x) == math.inf
    assert torch.isinf(psnr_per_frame(x, x)).all()


def test_psnr_uniform_offset_is_40db():
    x = _frames() * 0.9  # keep x + 0.01 inside [0, 1]
    assert psnr(x + 0.01, x) == pytest.approx(40.0, abs=1e-3)


def test_psnr_is_mean_of_per_frame():
    x = _frames(t=3)
    y = x.clone()
    y[0] += 0.01
    y[1] += 0.1
    y[2] += 0.001
    per_frame = psnr_per_frame(y, x)
    assert per_frame.shape == (3,)
    assert per_frame.tolist() == pytest.approx([40.0, 20.0, 60.0], abs=1e-2)
    assert psnr(y, x) == pytest.approx(40.0, abs=1e-2)  # not 10*log10(1/mean mse) = 24.7


def test_psnr_matches_formula():
    x = _frames(t=4)
    y = _noisy(x, 0.03)
    formula = 10 * torch.log10(1 / ((x - y) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(psnr_per_frame(y, x), formula)


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


@pytest.mark.parametrize("h, w", [(32, 32), (48, 64), (144, 176), (240, 320)])
def test_ms_ssim_sizes_and_noise(h, w):
    x = _frames(h=h, w=w)
    assert ms_ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    mild, strong = ms_ssim(_noisy(x, 0.02), x), ms_ssim(_noisy(x, 0.2), x)
    assert 0.0 < strong < mild < 1.0


def test_ms_ssim_scale_rule():
    assert ms_ssim_params(240, 320)[0] == MS_SSIM_BETAS  # standard 5 scales untouched
    assert len(ms_ssim_params(144, 176)[0]) == 4
    assert len(ms_ssim_params(48, 64)[0]) == 3
    betas, kernel, _ = ms_ssim_params(32, 32)
    assert len(betas) == 2 and kernel == 11 and sum(betas) == pytest.approx(1.0)
    betas, kernel, sigma = ms_ssim_params(8, 8)
    assert betas == (1.0,) and kernel == 7 and sigma < 1.5


def test_ms_ssim_tiny_frames_shrink_kernel():
    x = _frames(h=8, w=8)
    assert ms_ssim(_noisy(x, 0.2), x) < ms_ssim(_noisy(x, 0.02), x) < 1.0


def test_ms_ssim_batches_agree(monkeypatch):
    import training.metrics as metrics

    x = _frames(t=5, h=48, w=64)
    y = _noisy(x, 0.05)
    whole = ms_ssim(y, x)
    monkeypatch.setattr(metrics, "_PIXEL_BUDGET", 48 * 64 * 2)  # 2 frames per batch
    assert ms_ssim(y, x) == pytest.approx(whole, abs=1e-6)


def test_ssim_is_differentiable():
    x = _frames(h=40, w=24)
    y = _noisy(x, 0.1).requires_grad_(True)
    loss = 1 - ssim(y, x)
    loss.backward()
    assert loss.ndim == 0 and 0 < loss.item() < 1
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_ssim_small_frames():
    x = _frames(h=6, w=9)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="too small"):
        ssim(torch.zeros(1, 3, 2, 8), torch.zeros(1, 3, 2, 8))
