"""Rate sizing (builder.inr.rate): a byte target becomes the largest model that codes into it, a time budget is
planned for before training, an overshoot is pruned back, and a poor result says what to change."""
import math

import pytest
import torch

from builder.api import _sizing_line
from builder.config import QuantConfig
from builder.inr import build_inr, encode_inr, get_inr_family, inr_config
from builder.inr.rate import (DEFAULT_BPP_RANGE, QUALITY_FLOOR_DB, RateTarget, RateTooLow, coded_bytes_estimate,
                              default_target, fit_rate, plan_size, quality_warnings, size_for_bytes, smallest_bytes)
from training.config import TrainConfig

Q8 = QuantConfig()


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
@pytest.mark.parametrize("bpp", [0.3, 1.0])
def test_size_for_bytes_lands_just_under_the_target(arch, bpp):
    t, h, w = 24, 136, 240
    target = round(bpp * t * h * w / 8)
    config, est = size_for_bytes(arch, t, h, w, target, Q8)
    assert 0.85 * target <= est <= target
    assert est == coded_bytes_estimate(config, Q8)  # deterministic (trained bytes: tests/integration/test_cli.py)
    bigger, _ = size_for_bytes(arch, t, h, w, 2 * target, Q8)
    assert bigger.stored_params > config.stored_params


def test_fewer_bits_buy_a_larger_model_at_the_same_bytes():
    c8, _ = size_for_bytes("hnerv", 24, 136, 240, 60_000, Q8)
    c6, _ = size_for_bytes("hnerv", 24, 136, 240, 60_000, QuantConfig(bits=6))
    assert c6.stored_params > 1.2 * c8.stored_params


def test_hnerv_embeddings_get_at_most_a_quarter_of_the_budget():
    config, _ = size_for_bytes("hnerv", 300, 136, 240, 200_000, Q8)
    emb = next(r.params for r in config.block_info() if r.name == "embeddings")
    assert emb <= 0.3 * config.stored_params and config.embed_dim < 16


def test_a_target_below_the_smallest_model_is_refused_with_what_would_do():
    need = smallest_bytes("hnerv", 32, 136, 320, Q8)
    with pytest.raises(RateTooLow, match=r"smallest hnerv .* about [\d,]+ bytes") as e:
        size_for_bytes("hnerv", 32, 136, 320, need // 2, Q8)
    assert "--bpp" in str(e.value)
    size_for_bytes("hnerv", 32, 136, 320, need, Q8)  # the smallest itself fits


def test_default_target_is_the_source_files_bytes_within_range(tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"\0" * 50_000)  # 100 frames -> 500 bytes each
    t, h, w = 20, 100, 100
    got = default_target(src, 100, t, h, w)
    assert got.bytes == 10_000 and not got.explicit and "source file" in got.origin
    low = default_target(src, 100_000, t, h, w)  # 1 byte per frame: raised to the floor
    assert low.bytes == round(DEFAULT_BPP_RANGE[0] * t * h * w / 8) and "kept within" in low.origin
    high = default_target(src, 1, t, h, w)  # a raw-sized source: capped
    assert high.bytes == round(DEFAULT_BPP_RANGE[1] * t * h * w / 8)
    unknown = default_target(src, None, t, h, w)
    assert DEFAULT_BPP_RANGE[0] < unknown.bpp(t, h, w) < DEFAULT_BPP_RANGE[1] and "unknown" in unknown.origin


def test_fit_rate_prunes_an_overshoot_back_under_the_target():
    model = build_inr(inr_config("nerv", 4, 32, 32, stem_dim=16, lower_width=16, mlp_dim=64), decoder_only=True)
    full = len(encode_inr(model, Q8))
    quant, blob = fit_rate(model, Q8, full * 2)
    assert quant.prune == 0 and len(blob) == full
    quant, blob = fit_rate(model, Q8, round(full * 0.7))
    assert 0 < quant.prune < 0.95 and 0.85 * 0.7 * full <= len(blob) <= 0.7 * full


def _frames(t=6, h=48, w=64):
    return torch.rand(t, 3, h, w)


def test_plan_size_warns_before_training_when_the_budget_is_too_short():
    frames = _frames()
    target = RateTarget(30_000, "--bytes 30000", True)
    config, sizing = plan_size("hnerv", frames, Q8, TrainConfig(recipe="hnerv", time_budget=1e-3), target, {})
    assert sizing.planned_epochs == 0 and sizing.epoch_seconds > 0
    assert sizing.target_bytes == 30_000 and sizing.shrunk_from_bytes is None  # an explicit target is kept
    (msg,) = sizing.warnings
    need = math.ceil(get_inr_family("hnerv").model.min_epochs * sizing.epoch_seconds)
    assert f"--time-budget {need}" in msg and "--bpp" in msg


def test_plan_size_shrinks_a_default_target_to_fit_the_budget():
    frames = _frames(t=8, h=96, w=128)
    target = RateTarget(120_000, "default", False)
    train = TrainConfig(recipe="hnerv", time_budget=20)
    full, _ = size_for_bytes("hnerv", 8, 96, 128, target.bytes, Q8)
    config, sizing = plan_size("hnerv", frames, Q8, train, target, {})
    if sizing.shrunk_from_bytes is None:  # this machine is fast enough for the full size
        assert sizing.planned_epochs >= 0.8 * get_inr_family("hnerv").model.min_epochs and config == full
    else:
        assert sizing.target_bytes < target.bytes and config.stored_params < full.stored_params


def test_plan_size_without_a_budget_sizes_and_times_the_epochs():
    # no budget: the size is the target's alone, and the epoch is still timed so encode can say how long it takes
    config, sizing = plan_size("nerv", _frames(), Q8, TrainConfig(epochs=7), RateTarget(20_000, "x", True), {})
    assert sizing.params == config.stored_params and not sizing.warnings and sizing.shrunk_from_bytes is None
    assert sizing.epoch_seconds > 0 and sizing.planned_epochs == 7
    line = _sizing_line("nerv", sizing, TrainConfig(epochs=7), chunks=3)
    assert "7 epochs take about" in line and "for the 3 chunks" in line and "--time-budget" in line


def test_quality_warnings_say_what_to_change():
    assert quality_warnings(QUALITY_FLOOR_DB + 1, "time_budget", 5, 60) == []
    (msg,) = quality_warnings(18.0, "time_budget", 5, 60)
    assert "--time-budget" in msg and "120" in msg and "18.0 dB" in msg and "--device cuda" in msg
    (msg,) = quality_warnings(18.0, "time_budget", 5, 60, on_gpu=True)  # already on one: not a suggestion
    assert "--time-budget" in msg and "--device cuda" not in msg
    (msg,) = quality_warnings(18.0, "epochs", 300, None)
    assert "--bpp" in msg


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
def test_before_fit_starts_the_output_at_the_clips_mean_colour(arch):
    # a mostly black clip: the untouched head starts near 0.5 grey, the fitted one near the clip's mean
    frames = torch.zeros(4, 3, 48, 64)
    frames[:, :, 20:28, 28:36] = 0.8
    model = build_inr(inr_config(arch, 4, 48, 64, stem_dim=16))
    mu = frames.mean((0, 2, 3))
    with torch.no_grad():
        before = model(torch.arange(4), frames).mean((0, 2, 3))
        model.before_fit(frames)
        after = model(torch.arange(4), frames).mean((0, 2, 3))
    assert (before - mu).abs().max() > 0.2
    assert (after - mu).abs().max() < 0.1
