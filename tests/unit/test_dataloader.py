"""builder/dataloader.py: stored videos (a D-NeRV collection's members) as a torch Dataset of clips, decoded from
the INR in batches, from the H.264 twin, as INR features, or as an action backbone's input. Tiny D-NeRV, seconds."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from builder.api import load_inr, read_h264
from builder.backbones import get_backbone
from builder.dataloader import VideoClips
from conftest import tiny_collection

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_collection(tmp_path_factory.mktemp("store"), frames=40)


def test_batches_of_clips_decode_as_the_inr_does(store):
    ds = VideoClips(store, ["col-0", "col-1"], clip=32, stride=8)
    assert [(v, s) for v, s in ds.items] == [("col-0", 0), ("col-0", 8), ("col-1", 0), ("col-1", 8)]
    batches = list(DataLoader(ds, batch_size=3))
    assert [b["clip"].shape for b in batches] == [(3, 32, 3, 32, 48), (1, 32, 3, 32, 48)]
    assert batches[0]["video"] == ["col-0", "col-0", "col-1"] and batches[0]["start"].tolist() == [0, 8, 0]
    with torch.no_grad():
        want = load_inr(store, "col-1").model(list(range(8, 40)))
    assert torch.allclose(batches[1]["clip"][0], want, atol=1e-6)
    assert torch.equal(ds[3]["clip"], batches[1]["clip"][0])  # one sample alone decodes the same


def test_h264_source_and_exit_features(store):
    h = VideoClips(store, ["col-1"], clip=32, source="h264")
    assert len(h) == 1 and torch.equal(h[0]["clip"], read_h264(store, "col-1", range(32)))
    f = VideoClips(store, ["col-0"], clip=16, exit_block=1)
    model = load_inr(store, "col-0").model
    with torch.no_grad():
        want = model.features(list(range(16, 32)), 1)
    got = f[1]["clip"]
    assert got.shape == want.shape and got.shape[0] == 16 and torch.allclose(got, want, atol=1e-6)


def test_feeds_an_action_model(store):
    bb = get_backbone("i3d_r50")
    model = bb.load(random_init=True, input_size=(32, 64, 64))
    ds = VideoClips(store, ["col-0", "col-1"], clip=32, task=bb)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["clip"].shape == (2, 3, 32, 64, 64)  # what i3d takes: resized, Kinetics-normalised (C, T, H, W)
    with torch.no_grad():
        logits = model(batch["clip"])
    assert logits.shape == (2, 400) and torch.isfinite(logits).all()
    with torch.no_grad():
        frames = load_inr(store, "col-1").model(list(range(32)))
    assert torch.allclose(batch["clip"][1], bb.preprocess(frames)[0], atol=1e-5)
    slowfast = next(iter(DataLoader(VideoClips(store, ["col-0"], clip=32, task="slowfast_r50"), batch_size=1)))
    assert [tuple(p.shape) for p in slowfast["clip"]] == [(1, 3, 8, 224, 224), (1, 3, 32, 224, 224)]


def test_bad_requests_are_refused(store):
    with pytest.raises(ValueError, match="fewer than a 64-frame clip"):
        VideoClips(store, ["col-0"], clip=64)
    with pytest.raises(ValueError, match="source"):
        VideoClips(store, ["col-0"], source="png")
    with pytest.raises(ValueError, match="not both"):
        VideoClips(store, ["col-0"], task="i3d_r50", exit_block=1)
    with pytest.raises(Exception, match="nope"):
        VideoClips(store, ["nope"])


def test_a_re_encoded_video_is_never_decoded_from_the_old_inr(store):
    from builder.entry import INR_FILE
    from builder.inr import decode_inr, encode_inr

    ds = VideoClips(store, ["col-0"], clip=8)
    before = ds[0]["clip"]
    old = store.get("col", INR_FILE)
    model = decode_inr(old).model
    with torch.no_grad():
        model.head.conv2.bias.add_(0.2)  # another decoder for the same collection
    store.add_file("col", INR_FILE, encode_inr(model))
    try:
        after = ds[0]["clip"]
        with torch.no_grad():
            want = load_inr(store, "col-0").model(list(range(8)))
        assert not torch.allclose(after, before) and torch.allclose(after, want, atol=1e-6)
    finally:
        store.add_file("col", INR_FILE, old)
