"""D-NeRV (builder/inr/dnerv.py) and collection training (training/collection.py): tiny models, seconds each."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from builder.codec.keyframes import encode_keyframes
from builder.inr import build_inr, decode_inr, encode_inr, get_inr_family, inr_config
from builder.inr.dnerv import ClipBatch, DNeRV, clip_plan, keyframe_positions
from builder.samples import sample_path
from builder.video import read_video
from training.collection import (WATCH_FRACTION, add_videos, collection_data, eval_collection, fit_collection,
                                 watched_clips)
from training.config import TrainConfig

H, W = 32, 48
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(**flags):
    return inr_config("dnerv", 32, H, W, stem_dim=16, enc_dim=8, lower_width=8, mlp_dim=32, num_blocks=3,
                      pe_levels=16, **flags)


@pytest.fixture(scope="module")
def clips():
    """Two real short clips (16 frames each of 48x32; carphone and bikes)."""
    return [read_video(sample_path(n), count=16, size=(W, H)).frames for n in ("carphone", "bikes")]


def coded_keys(model, videos):
    return [encode_keyframes(v[model.keyframe_positions(v.shape[0])], "webp", 80).frames for v in videos]


def test_registered_and_sized():
    fam = get_inr_family("dnerv")
    assert fam.model is DNeRV
    cfg = inr_config("dnerv", 100, 120, 160)
    assert cfg.frames == 8 and (cfg.stem_channels, cfg.enc_dim) == (64, 32)  # size S by total frames
    assert inr_config("dnerv", 100, 120, 160, size="L").stem_channels == 144
    with pytest.raises(ValueError):
        inr_config("dnerv", 100, 120, 160, size="XL")


def test_keyframes_shared_and_last_clip_padded():
    assert keyframe_positions(20) == [0, 8, 16, 19]
    assert keyframe_positions(17) == [0, 8, 16]
    assert keyframe_positions(16) == [0, 8, 15]
    frames, t, dist, s, e = clip_plan(20, 2)
    assert frames == [16, 17, 18, 19, 19, 19, 19, 19] and (s, e) == (2, 3)
    assert torch.allclose(dist[:4], torch.tensor([0, 1 / 3, 2 / 3, 1.0]))
    assert float(t[0]) == pytest.approx(16 / 19)
    model = build_inr(tiny()).eval()
    keys = torch.rand(4, 3, H, W)
    b = model.video_clips(keys, 20)
    assert b.t.shape == (3, 8) and b.keyframes.shape == (3, 3, 2, H, W)
    for c in range(2):  # a clip's end keyframe is the next clip's start keyframe
        assert torch.equal(b.keyframes[c, :, 1], b.keyframes[c + 1, :, 0])
    assert b.mask.sum(1).tolist() == [8, 8, 4]
    assert model.decode_video(keys, 20).shape == (20, 3, H, W)
    with pytest.raises(ValueError):
        model.video_clips(torch.rand(3, 3, H, W), 20)  # a 20-frame video has 4 keyframes


@pytest.mark.parametrize("flags", [{}, {"saf": False}, {"saf": False, "gtmlp": False}, {"gtmlp": False},
                                   {"flow": False}])
def test_blocks_exits_and_components(flags):
    cfg = tiny(**flags)
    model = build_inr(cfg).eval()
    assert model.num_params() == cfg.stored_params == sum(r.params for r in model.block_info)
    assert model.total_gflops > 0
    rows = {r.exit: r for r in model.block_info if r.exit is not None}
    assert sorted(rows) == list(range(model.num_blocks + 1))
    assert any(r.name == "content_encoder" for r in model.block_info) == cfg.saf
    keys = torch.rand(3, 3, H, W)
    b = model.video_clips(keys, 12)
    with torch.no_grad():
        y, feats = model.forward_intermediates(b)
        assert y.shape == (2, 3, 8, H, W) and 0 <= float(y.min()) and float(y.max()) <= 1
        for k, f in enumerate(feats):
            r = rows[k]
            assert f.shape == (2, r.out_channels, 8, r.out_height, r.out_width)
            assert torch.allclose(model.features(b, k), f, atol=1e-6)
        assert model.video_features(keys, 12, [1, 10], 2).shape == (2, rows[2].out_channels, rows[2].out_height,
                                                                   rows[2].out_width)
        dec = decode_inr(encode_inr(model)).model
        assert (dec(b) - y).abs().max() < 0.05  # 8-bit weights
    if not cfg.saf:  # the NeRV row: the keyframes do not matter
        b2 = ClipBatch(b.t, torch.rand_like(b.keyframes), b.dist, b.mask)
        with torch.no_grad():
            assert torch.equal(model(b2), y)


def test_fits_two_real_clips(clips):
    torch.manual_seed(0)
    model = build_inr(tiny())
    keys = coded_keys(model, clips)
    before = eval_collection(model, clips, keys)
    r = fit_collection(model, clips, TrainConfig(recipe="dnerv", epochs=15, batch_size=2), keyframes=keys,
                       progress=False)
    assert r.epochs == 15 and len(r.video_psnr) == 2
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert min(r.video_psnr) > 27.0, r.video_psnr
    assert sum(r.video_psnr) > sum(before)
    # the stored (8-bit) decoder decodes a member from its keyframes at about the reported PSNR
    dec = decode_inr(encode_inr(model)).model
    after = eval_collection(dec, clips, keys)
    assert all(abs(a - b) < 1.0 for a, b in zip(after, r.video_psnr))


def test_checkpoint_resume_matches_uninterrupted(clips, tmp_path, monkeypatch):
    import training.collection as tc

    cfg4 = TrainConfig(recipe="dnerv", epochs=4, batch_size=2)
    torch.manual_seed(0)
    ref = build_inr(tiny())
    state0 = {k: v.clone() for k, v in ref.state_dict().items()}
    fit_collection(ref, clips, cfg4, progress=False)
    ck = tmp_path / "ck.pt"
    m = build_inr(tiny())
    m.load_state_dict(state0)
    saves = []
    real_save = tc._save_checkpoint

    def killed_after_two(path, state):  # the run is killed right after its 2nd epoch's checkpoint
        real_save(path, state)
        saves.append(state["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tc, "_save_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        fit_collection(m, clips, cfg4, checkpoint=ck, progress=False)
    monkeypatch.setattr(tc, "_save_checkpoint", real_save)
    assert ck.exists() and saves == [1, 2]
    m2 = build_inr(tiny())
    r = fit_collection(m2, clips, cfg4, checkpoint=ck, resume=True, progress=False)
    assert r.epochs == 4
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k], atol=1e-6), k
    with pytest.raises(ValueError):  # another collection
        fit_collection(build_inr(tiny()), clips[:1], cfg4, checkpoint=ck, resume=True, progress=False)


def test_add_reports_old_psnr(clips):
    torch.manual_seed(0)
    model = build_inr(tiny())
    fit_collection(model, clips[:1], TrainConfig(recipe="dnerv", epochs=6, batch_size=2), progress=False)
    res = add_videos(model, clips[:1], clips[1:], TrainConfig(recipe="dnerv", epochs=4, batch_size=2, lr=5e-4),
                     progress=False)
    assert len(res.old_psnr_before) == len(res.old_psnr_after) == len(res.new_psnr) == 1
    assert res.old_psnr_before[0] == pytest.approx(eval_collection(build_inr(tiny()).eval(), clips[:1]) [0],
                                                   abs=100) and res.old_psnr_before[0] > 20
    assert res.fit.epochs == 4 and res.old_psnr_after[0] > 20


_DDP_WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
    sys.path.insert(0, {root!r})
    from builder.inr import build_inr, inr_config
    from training.collection import fit_collection
    from training.config import TrainConfig

    def work(rank, out):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="file://" + out + "/rdv", rank=rank, world_size=2)
        torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's
        cfg = inr_config("dnerv", 32, 32, 48, stem_dim=16, enc_dim=8, lower_width=8, mlp_dim=32, num_blocks=3,
                         pe_levels=16)
        model = build_inr(cfg)
        g = torch.Generator().manual_seed(0)
        base = torch.rand(2, 1, 3, 32, 48, generator=g)
        # moving content (each frame shifted by 2 px): blending the keyframes alone does not explain it
        videos = [torch.cat([torch.roll(base[i], 2 * f, dims=-1) for f in range(16)]) for i in range(2)]
        r = fit_collection(model, videos, TrainConfig(recipe="dnerv", epochs=3, batch_size=1), progress=False)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save({{"flat": flat, "loss": [h["loss"] for h in r.history], "psnr": r.psnr}},
                   out + "/rank%d.pt" % rank)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(work, args=(sys.argv[1],), nprocs=2)
''')


def test_ddp_two_gloo_processes(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(_DDP_WORKER.format(root=str(ROOT)))
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=240, cwd=ROOT)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    assert torch.equal(r0["flat"], r1["flat"])  # identical weights on both ranks
    assert r0["psnr"] == r1["psnr"]  # the sharded evaluation is summed over the ranks
    assert r0["loss"][-1] < r0["loss"][0]


def test_the_per_epoch_psnr_pass_watches_an_eighth_of_every_video_past_64_clips():
    model = build_inr(tiny())
    videos = [torch.rand(n, 3, H, W) for n in (8, 600, 41)]  # 1, 75 and 6 clips
    data = collection_data(model, videos)
    watch = watched_clips(data)
    per_video = torch.bincount(data.video[watch], minlength=3).tolist()
    assert per_video == [1, 10, 1]  # ceil(75 / 8); at least one each
    assert len(set(watch.tolist())) == len(watch) and WATCH_FRACTION == 1 / 8
    spread = watch[1:11] - watch[1]
    assert spread[-1] == 74  # from the video's first clip to its last
    small = collection_data(model, videos[:1] + videos[2:])
    assert watched_clips(small).tolist() == list(range(7))  # 7 clips: all watched
