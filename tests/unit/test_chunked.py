"""Whole videos in chunks: the global -> (chunk, local) index mapping, a chunked encode of a real clip (3 chunks),
its entry, decode / eval across chunk boundaries, warm start on / off, re-encoding one chunk, the CLI and serving."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from builder.api import encode_video, eval_video, load_inr, reencode_chunk
from builder.cli import main as cli_main
from builder.config import QuantConfig
from builder.entry import INR_FILE, ChunkInfo, EntryError, adapter_file, chunk_file, pairing_file, parse_file
from builder.inr import ChunkedINR, build_inr, chunk_plan, decode_inr, nerv_config
from builder.nvp.path import inr_features
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.decode import DecodeHandler, DecodeSettings
from builder.triton.serving import RequestError
from training.config import TrainConfig

CLIP = sample_path("carphone")
TINY = {"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}


def _chunks(sizes=(3, 3, 2)) -> ChunkedINR:
    torch.manual_seed(0)
    return ChunkedINR([build_inr(nerv_config(n, 24, 32, **TINY), decoder_only=True).eval() for n in sizes])


def test_chunk_plan_balanced():
    assert chunk_plan(209, 32) == [(k * 30, 30) for k in range(6)] + [(180, 29)]
    assert chunk_plan(10, 4) == [(0, 4), (4, 3), (7, 3)]
    assert chunk_plan(5, 8) == [(0, 5)]
    with pytest.raises(ValueError):
        chunk_plan(5, 0)


@torch.no_grad()
def test_index_mapping_crosses_boundaries_in_request_order():
    m = _chunks()
    assert m.config.frames == 8 and m.num_blocks == m.chunks[0].num_blocks
    idx = [7, 0, 3, 5, 2, 4, 3]  # every chunk, out of order, a repeat
    chunk, local = m.locate(idx)
    assert chunk.tolist() == [2, 0, 1, 1, 0, 1, 1] and local.tolist() == [1, 0, 0, 2, 2, 1, 0]
    out = m(idx)
    for i, g in enumerate(idx):
        k = m.chunk_of(g)
        ref = m.chunks[k](torch.tensor([g - m.starts[k]]))
        torch.testing.assert_close(out[i:i + 1], ref, rtol=0, atol=1e-5)
    feats = m.features(idx, 2)
    torch.testing.assert_close(feats[3:4], m.chunks[1].features([2], 2), rtol=0, atol=1e-5)
    rgb, inter = m.forward_intermediates(idx, [0, 1], stop_early=True)
    assert rgb is None and [f.shape[0] for f in inter] == [7, 7]
    assert inr_features(m, idx, 1, video=False).shape[0] == len(idx)  # the NVP path's prefix
    torch.testing.assert_close(m.decode_all(), torch.cat([c.decode_all() for c in m.chunks]))
    assert m.num_params() == sum(c.num_params() for c in m.chunks)


def test_index_errors():
    m = _chunks()
    with pytest.raises(IndexError, match="frame index 8 out of range: this video has 8 frames"):
        m([1, 8])
    with pytest.raises(IndexError, match="out of range"):
        m([-1])
    with pytest.raises(TypeError):
        m(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="architecture differs"):
        ChunkedINR([build_inr(nerv_config(3, 24, 32, **TINY)), build_inr(nerv_config(3, 24, 32, stem_dim=16,
                                                                                      lower_width=8, mlp_dim=32))])


def test_chunk_table_must_tile():
    row = dict(bytes=1, psnr=1.0, ms_ssim=0.5, params=1)
    assert len(ChunkInfo.table([dict(start=0, frames=4, **row), dict(start=4, frames=3, **row)])) == 2
    with pytest.raises(EntryError, match="tile"):
        ChunkInfo.table([dict(start=0, frames=4, **row), dict(start=5, frames=3, **row)])
    f = parse_file(chunk_file(12))
    assert f.role.name == "chunk" and f.keys == {"chunk": 12} and chunk_file(0) == "inr-c0.nvp"


def _encode(store: VideoStore, vid: str, **kw) -> dict:
    return encode_video(CLIP, vid, store=store, arch="nerv", count=10, step=2, size=(64, 48), model=TINY,
                        train=TrainConfig(epochs=3), progress=False, chunk_frames=4, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> VideoStore:
    s = VideoStore(tmp_path_factory.mktemp("store"))
    _encode(s, "whole")
    _encode(s, "cold", warm_start=False)
    return s


def test_chunked_encode_entry_and_decode(store):
    e = store.video("whole")
    assert [(c.start, c.frames) for c in e.chunks] == [(0, 4), (4, 3), (7, 3)]
    assert sorted(e.files) == ["h264.mp4", "inr-c0.nvp", "inr-c1.nvp", "inr-c2.nvp"] and INR_FILE not in e.files
    assert [c.warm_start for c in e.chunks] == [False, True, True]
    assert e.quality.bytes == sum(c.bytes for c in e.chunks) == sum(e.files[chunk_file(k)].bytes for k in range(3))
    assert e.quality.psnr == pytest.approx(sum(c.psnr * c.frames for c in e.chunks) / 10, abs=1e-3)
    assert e.frames.count == 10 and e.inr.config["frames"] == 10 and e.h264.bytes <= e.quality.bytes
    decoded = load_inr(store, "whole")
    assert isinstance(decoded.model, ChunkedINR) and decoded.num_bytes == e.quality.bytes
    per_chunk = torch.cat([decode_inr(store.get("whole", chunk_file(k))).model.decode_all() for k in range(3)])
    torch.testing.assert_close(decoded.model.decode_all(), per_chunk, rtol=0, atol=0)
    ev = eval_video(store, "whole")
    assert ev["psnr"] == pytest.approx(e.quality.psnr, abs=1e-3) and [c["psnr"] for c in ev["chunks"]] == pytest.approx(
        [c.psnr for c in e.chunks], abs=1e-3)


def test_warm_start_off(store):
    cold, warm = store.video("cold"), store.video("whole")
    assert [c.warm_start for c in cold.chunks] == [False, False, False]
    assert cold.extra["sizing"]["warm_start"] is False and warm.extra["sizing"]["warm_start"] is True
    assert store.get("cold", chunk_file(1)) != store.get("whole", chunk_file(1))


def test_short_clip_and_chunk_frames_0_stay_one_inr(tmp_path):
    s = VideoStore(tmp_path)
    encode_video(CLIP, "one", store=s, arch="nerv", count=6, step=4, size=(64, 48), model=TINY,
                 train=TrainConfig(epochs=1), progress=False, chunk_frames=0)
    e = s.video("one")
    assert e.chunks is None and INR_FILE in e.files and "chunks" not in s.meta("one")
    assert not isinstance(load_inr(s, "one").model, ChunkedINR)


def test_a_low_rate_target_gets_longer_chunks_or_a_refusal_naming_what_fits(tmp_path):
    from builder.inr.rate import RateTooLow, smallest_bytes

    s, logs, q = VideoStore(tmp_path), [], QuantConfig()
    # 0.33 bpp of 40 frames at 128x96 holds one NeRV for the whole clip, not one per default chunk (2 x 20 frames);
    # HNeRV stores an embedding per frame: no chunk length reaches it
    target = int(0.33 * 40 * 128 * 96 / 8)
    assert target / 2 < smallest_bytes("nerv", 40, 96, 128, q) <= target < smallest_bytes("hnerv", 40, 96, 128, q)
    r = encode_video(CLIP, "low", store=s, arch="nerv", count=40, step=2, size=(128, 96), bpp=0.33,
                     train=TrainConfig(epochs=1), progress=False, log=logs.append)
    assert "chunks" not in r and r["bpp"] == pytest.approx(0.33, rel=0.15)
    assert any("chunks of 40 frames instead" in line for line in logs)
    with pytest.raises(RateTooLow, match="smallest hnerv even as one INR for all 40 frames.*--arch nerv fits"):
        encode_video(CLIP, "low2", store=s, arch="hnerv", count=40, step=2, size=(128, 96), bpp=0.33,
                     train=TrainConfig(epochs=1), progress=False)
    assert not s.exists("low2")


def test_reencode_one_chunk_changes_only_its_file(store, tmp_path):
    s = VideoStore(tmp_path)
    # an adapter and its pair search fitted to the old chunk's features: stale once the chunk changes
    fitted = {adapter_file("effnet_lite0", 2): b"adapter", pairing_file("effnet_lite0"): b"{}"}
    s.put("v", {**{n: store.get("whole", n) for n in store.video("whole").files}, **fitted}, store.meta("whole"))
    before = {n: r.sha256 for n, r in s.video("v").files.items() if n not in fitted}
    said = []
    meta = reencode_chunk(s, "v", 1, train=TrainConfig(epochs=2, seed=5), progress=False, log=said.append)
    after = s.video("v")
    assert [n for n in before if before[n] != after.files[n].sha256] == ["inr-c1.nvp"]
    assert not set(fitted) & set(after.files) and any("run adapt again" in m for m in said)
    assert after.chunks[1].epochs == 2 and after.chunks[0] == store.video("whole").chunks[0]
    assert meta["bytes"] == sum(c.bytes for c in after.chunks)
    with pytest.raises(ValueError, match="chunks 0..2"):
        reencode_chunk(s, "v", 3, progress=False)


def test_cli_info_and_rechunk(store, capsys):
    assert cli_main(["info", "whole", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "3 chunks" in out and "chunk 2: frames 7-9" in out and "bytes" in out
    assert cli_main(["info", "whole", "--json", "--store", str(store.root)]) == 0
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["start"] for c in meta["chunks"]] == [0, 4, 7] and all("psnr" in c for c in meta["chunks"])
    assert cli_main(["cost", "whole", "--json", "--store", str(store.root)]) == 0  # all chunks' storage counted
    cost = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entry = store.video("whole")
    assert cost["stored"]["chunks"] == 3 and cost["stored"]["bytes"] == entry.quality.bytes
    assert cost["stored"]["params"] == sum(c.params for c in entry.chunks) > cost["total_params"]
    assert cli_main(["encode", str(CLIP), "--store", str(store.root), "--id", "cold", "--rechunk", "2",
                     "--epochs", "1", "--no-progress", "--json"]) == 0
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert meta["chunk"] == 2 and meta["chunks"][2]["epochs"] == 1


def test_decode_handler_serves_global_indices(store):
    h = DecodeHandler(DecodeSettings(store_root=str(store.root), cache_size=2))
    idx = np.array([9, 0, 5], dtype=np.int64)
    got = h.handle({"video_id": np.array([b"whole"], dtype=object), "frame_indices": idx})["frames"]
    with torch.no_grad():
        expected = load_inr(store, "whole").model(torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    h.handle({"video_id": np.array([b"whole"], dtype=object), "frame_indices": idx})
    assert h.cache.hits == 1  # the chunks' digest keys the cache
    with pytest.raises(RequestError, match="frame 10 out of range for video 'whole': it has 10 frames"):
        h.handle({"video_id": np.array([b"whole"], dtype=object), "frame_indices": np.array([10])})


def test_replace_inr_of_a_chunked_video(store, tmp_path):
    """``adapt --joint`` stores a fine-tuned decoder through replace_inr: a ChunkedINR re-codes every chunk."""
    from builder.api import read_source, replace_inr

    s = VideoStore(tmp_path)
    s.put("v", {n: store.get("whole", n) for n in store.video("whole").files}, store.meta("whole"))
    model = load_inr(s, "v").model
    with torch.no_grad():
        model.chunks[2].head.bias.add_(0.05)
    meta = replace_inr(s, "v", model, read_source(s.video("v")).frames, meta={"joint": {"note": "test"}})
    e = s.video("v")
    assert sorted(e.files) == ["h264.mp4", "inr-c0.nvp", "inr-c1.nvp", "inr-c2.nvp"] and e.extra["joint"]
    assert store.get("whole", chunk_file(0)) == s.get("v", chunk_file(0))  # unchanged chunks code to the same bytes
    assert s.get("v", chunk_file(2)) != store.get("whole", chunk_file(2)) and meta["bytes"] == e.quality.bytes


def test_replace_inr_stores_files_bound_to_the_new_decoder_in_the_same_write(store, tmp_path):
    """``adapt --joint``'s adapter and pairing are made from the stored (quantised) decoder and its checksum before
    anything is written, and land with it: no reader sees the new decoder without them."""
    from builder.api import read_source, replace_inr_entry

    s = VideoStore(tmp_path)
    s.put("v", {n: store.get("whole", n) for n in store.video("whole").files}, store.meta("whole"))
    model = load_inr(s, "v").model
    with torch.no_grad():
        model.chunks[1].head.bias.add_(0.05)
    seen = {}

    def extra(stored, checksum, measured):
        seen.update(checksum=checksum, frame=stored(torch.tensor([5])), bytes=measured["bytes"])
        assert s.inr_digest("v") != checksum  # nothing written yet
        return {"pairing-effnet_lite0.json": checksum.encode()}

    before = s.version("v")
    e = replace_inr_entry(s, "v", model, read_source(s.video("v")).frames, extra=extra, if_inr=s.inr_digest("v"))
    assert s.version("v") != before and e.version == s.version("v")  # one write
    assert s.inr_digest("v") == seen["checksum"] and s.get("v", "pairing-effnet_lite0.json") == seen["checksum"].encode()
    torch.testing.assert_close(load_inr(s, "v").model(torch.tensor([5])), seen["frame"])
    assert seen["bytes"] == e.quality.bytes
