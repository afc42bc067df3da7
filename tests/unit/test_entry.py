"""builder.entry: the file-role table, the typed entry (version 1 entries still load), collections and members."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from builder.api import load_inr, replace_inr
from builder.cli import main
from builder.entry import (
    ADAPTER,
    ENTRY_VERSION,
    H264,
    H264_FILE,
    INR,
    INR_FILE,
    KEYFRAMES,
    PAIRING,
    ROLES,
    EntryError,
    FileRole,
    FrameRange,
    INRInfo,
    Quality,
    Source,
    VideoEntry,
    adapter_file,
    pairing_file,
    parse_file,
    register_role,
)
from builder.store import CorruptEntry, VideoNotFound, VideoStore

V1_STORE = Path(__file__).parents[1] / "data" / "store_v1"  # written by `encode` before this module existed
V1_META = json.loads((V1_STORE / "car-v1" / "entry.json").read_text())["meta"]


@pytest.fixture()
def v1_store(tmp_path) -> VideoStore:
    shutil.copytree(V1_STORE, tmp_path / "store")
    return VideoStore(tmp_path / "store")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]) if "--json" in argv else out, err


# --- file roles --------------------------------------------------------------------------------------------------

def test_roles_build_and_parse_their_names():
    assert (INR_FILE, H264_FILE) == ("inr.nvp", "h264.mp4")
    assert adapter_file("effnet_lite0", 3) == ADAPTER.file(task="effnet_lite0", exit_block=3) == \
        "adapter-effnet_lite0-e3.nvp"
    assert pairing_file("clip_rn50") == "pairing-clip_rn50.json"
    assert adapter_file("resnet50", np.int64(12)) == "adapter-resnet50-e12.nvp"  # numpy exits name the same file
    for name, role, keys in [("inr.nvp", INR, {}), ("h264.mp4", H264, {}), ("keyframes.nvp", KEYFRAMES, {}),
                             ("adapter-i3d_r50-e10.nvp", ADAPTER, {"task": "i3d_r50", "exit_block": 10}),
                             ("pairing-blip.json", PAIRING, {"task": "blip"})]:
        f = parse_file(name)
        assert (f.name, f.role, f.keys) == (name, role, keys)
        assert role.file(**keys) == name
    for other in ("entry.json", "adapter-x-e01.nvp", "adapter-x.nvp", "pairing-.json", "inr.nvp.bak", "a.bin"):
        assert parse_file(other) is None


def test_role_keys_are_checked():
    with pytest.raises(TypeError, match="takes keys"):
        ADAPTER.file(task="x")
    for task, k in [("a-b", 1), ("", 1), ("x/y", 1), ("x", -1), ("x", True), ("x", "3")]:
        with pytest.raises(ValueError, match="invalid"):
            adapter_file(task, k)
    with pytest.raises(ValueError, match="already registered"):
        register_role(FileRole("inr", "other.nvp", frozenset({"video"}), ""))
    with pytest.raises(ValueError, match="unknown keys"):
        register_role(FileRole("odd", "odd-{frame}.nvp", frozenset({"video"}), ""))
    assert set(ROLES) == {"inr", "chunk", "h264", "adapter", "pairing", "keyframes"}


def test_adapters_and_tasks_are_enumerated_from_the_files():
    names = ["inr.nvp", "h264.mp4", "adapter-effnet_lite0-e10.nvp", "adapter-effnet_lite0-e2.nvp",
             "pairing-effnet_lite0.json", "adapter-clip_rn50-e1.nvp", "pairing-blip.json", "notes.txt"]
    e = VideoEntry.from_meta("v", V1_META, files={n: None for n in names})
    assert e.adapters("effnet_lite0") == {2: "adapter-effnet_lite0-e2.nvp", 10: "adapter-effnet_lite0-e10.nvp"}
    assert list(e.adapters("effnet_lite0")) == [2, 10]
    assert e.adapters("clip_rn50") == {1: "adapter-clip_rn50-e1.nvp"} and e.adapters("resnet50") == {}
    assert e.tasks() == ["blip", "clip_rn50", "effnet_lite0"]
    assert [f.name for f in e.stored(PAIRING)] == ["pairing-blip.json", "pairing-effnet_lite0.json"]


# --- version 1 entries ---------------------------------------------------------------------------------------------

def test_a_version_1_entry_loads_typed(v1_store):
    e = v1_store.video("car-v1")
    assert (e.id, e.kind, e.arch, e.collection, e.index) == ("car-v1", "video", "nerv", None, None)
    assert e.source == Source("/data/clips/carphone_pristine.mp4", "h264", 176, 144)
    assert e.frames == FrameRange(start=0, step=4, count=4, fps=pytest.approx(7.4925, abs=1e-4))
    assert (e.width, e.height) == (32, 24)
    assert e.inr.family == "nerv" and e.inr.config["strides"] == [2, 2, 2] and e.inr.format_version == 1
    assert e.inr.quant == {"bits": 8, "prune": 0.0, "coder": "ans"} and e.inr.train["epochs"] == 3
    assert e.quality == Quality(params=10011, psnr=10.4695, ms_ssim=0.074741, bpp=36.195312, bytes=13899,
                                encode_seconds=5.293, train_seconds=4.76, epochs=3, stopped_by="epochs",
                                train_psnr=10.4688)
    assert e.h264.crf == 0 and e.h264.bytes == 4003
    assert e.encoded_at == e.created == "2026-11-30T11:56:30+00:00" and e.extra == {}
    assert {n: r.bytes for n, r in e.files.items()} == {"inr.nvp": 13899, "h264.mp4": 4003}
    assert e.files["inr.nvp"].sha256 == v1_store.entry("car-v1")["files"]["inr.nvp"]["sha256"]
    # written back, it is the same meta plus the version and kind: every version 1 key keeps its value
    assert e.to_meta() == {"entry_version": ENTRY_VERSION, "kind": "video", **V1_META}
    assert list(e.to_meta())[2:] == list(V1_META)
    # and its stored files are the ones the roles name, checksum-verified
    assert load_inr(v1_store, "car-v1").model.decode_all().shape == (4, 3, 24, 32)
    assert v1_store.decoder("car-v1").id == v1_store.holder("car-v1", INR_FILE) == "car-v1"


def test_cli_reads_a_version_1_entry(v1_store, capsys, tmp_path):
    store = v1_store.root
    code, info, _ = run(capsys, "info", "car-v1", "--store", store, "--json")
    assert code == 0 and set(info) == {"id", "files", "entry_version", "kind", *V1_META}
    assert {k: info[k] for k in V1_META} == V1_META and info["files"] == v1_store.entry("car-v1")["files"]
    code, text, _ = run(capsys, "info", "car-v1", "--store", store)
    assert "car-v1: nerv from /data/clips/carphone_pristine.mp4" in text and "4 frames 32x24" in text
    code, lst, _ = run(capsys, "list", "--store", store, "--json")
    assert code == 0 and lst == {"videos": [{k: v for k, v in info.items() if k != "files"}]}
    code, cost, _ = run(capsys, "cost", "car-v1", "--store", store, "--json")
    assert code == 0 and sum(b["params"] for b in cost["blocks"]) == V1_META["params"] and cost["arch"] == "nerv"
    code, out, _ = run(capsys, "decode", "car-v1", "--store", store, "--out", tmp_path / "png", "--json")
    assert code == 0 and len(list((tmp_path / "png").glob("*.png"))) == 4


def test_replace_inr_rewrites_a_version_1_entry_as_version_2(v1_store):
    model = load_inr(v1_store, "car-v1").model
    v1_store.add_file("car-v1", adapter_file("effnet_lite0", 2), b"adapter")
    v1_store.add_file("car-v1", pairing_file("effnet_lite0"), b"{}")
    frames = torch.rand(4, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    new = replace_inr(v1_store, "car-v1", model, frames, drop=[adapter_file("effnet_lite0", 2)],
                      meta={"joint": {"task": "effnet_lite0"}})
    e = v1_store.video("car-v1")
    assert new == e.to_meta() and new["entry_version"] == 2 and new["joint"] == {"task": "effnet_lite0"}
    assert e.extra == {"joint": {"task": "effnet_lite0"}}
    assert sorted(e.files) == ["h264.mp4", "inr.nvp", "pairing-effnet_lite0.json"] and e.tasks() == ["effnet_lite0"]
    assert e.adapters("effnet_lite0") == {}
    # measured again on the new bytes and frames; how the INR was trained stays
    assert e.quality.bytes == e.files["inr.nvp"].bytes and e.quality.psnr != V1_META["psnr"]
    assert (e.quality.epochs, e.quality.stopped_by, e.quality.train_seconds) == (3, "epochs", 4.76)
    assert e.h264.bytes == e.files["h264.mp4"].bytes <= e.quality.bytes
    assert e.created == "2026-11-30T11:56:30+00:00" and e.inr == v1_store.video("car-v1").inr


# --- the schema ------------------------------------------------------------------------------------------------

def _video(video_id: str = "v", **changes) -> VideoEntry:
    return VideoEntry.from_meta(video_id, {**V1_META, **changes})


def test_new_entries_round_trip_and_bad_ones_are_refused(tmp_path):
    e = _video(note="kept")
    assert e.extra == {"note": "kept"} and e.to_meta()["note"] == "kept"
    assert VideoEntry.from_meta("v", e.to_meta()) == e
    with pytest.raises(EntryError, match="differs from the INR's"):
        _video(arch="hnerv")  # arch is derived from the INR config: a disagreeing copy is an error
    with pytest.raises(EntryError, match="newer NVP"):
        _video(entry_version=ENTRY_VERSION + 1)
    with pytest.raises(EntryError, match="unknown entry kind"):
        _video(kind="album")
    with pytest.raises(EntryError, match="lacks 'quant'"):
        VideoEntry.from_meta("v", {k: v for k, v in V1_META.items() if k != "quant"})
    with pytest.raises(EntryError, match="needs its quality"):
        VideoEntry.from_meta("v", {k: v for k, v in V1_META.items() if k != "psnr"})
    with pytest.raises(EntryError, match="needs its source"):
        VideoEntry.from_meta("v", {k: v for k, v in V1_META.items() if k != "frames"})
    with pytest.raises(EntryError, match="malformed"):
        _video(h264={"crf": 3})
    with pytest.raises(EntryError, match="are entry fields"):
        VideoEntry("v", source=e.source, frames=e.frames, width=1, height=1, inr=e.inr, quality=e.quality,
                   extra={"psnr": 1})
    # the store reports such an entry as corrupt, never half-reads it
    s = VideoStore(tmp_path)
    s.put("new", {}, {**V1_META, "entry_version": 99})
    with pytest.raises(CorruptEntry, match="store entry 'new' is corrupt: .* a newer NVP"):
        s.video("new")
    assert isinstance(s.videos()["new"], CorruptEntry)


# --- collections ---------------------------------------------------------------------------------------------------

INR_INFO = INRInfo(V1_META["inr"], V1_META["quant"], V1_META["train"], 1)


def _member(video_id: str, collection: str, index: int) -> VideoEntry:
    e = _video(video_id)
    return VideoEntry(video_id, kind="member", collection=collection, index=index, source=e.source, frames=e.frames,
                      width=e.width, height=e.height, quality=e.quality)


@pytest.fixture()
def collection(tmp_path) -> VideoStore:
    s = VideoStore(tmp_path / "store")
    s.put_video(VideoEntry("coll", kind="collection", inr=INR_INFO), {INR_FILE: b"shared decoder"})
    s.put_video(_member("m1", "coll", 1), {KEYFRAMES.file(): b"k1", adapter_file("effnet_lite0", 2): b"a"})
    s.put_video(_member("m0", "coll", 0), {KEYFRAMES.file(): b"k0", H264_FILE: b"h"})
    s.put_video(_video("solo"), {INR_FILE: b"own decoder"})
    return s


def test_members_resolve_their_decoder_through_the_collection(collection):
    s = collection
    m = s.video("m1")
    assert (m.kind, m.collection, m.index, m.inr, m.arch) == ("member", "coll", 1, None, None)
    assert m.to_meta()["collection"] == "coll" and "inr" not in m.to_meta() and "arch" not in m.to_meta()
    assert VideoEntry.from_meta("m1", m.to_meta()) == dataclasses.replace(m, files={}, created=None, updated=None)
    assert s.decoder("m1").id == "coll" and s.decoder("m1").arch == "nerv"
    assert s.holder("m1", INR_FILE) == "coll"  # the decoder lives once, in the collection
    for own in (KEYFRAMES.file(), H264_FILE, adapter_file("effnet_lite0", 2), pairing_file("x"), "notes.txt"):
        assert s.holder("m1", own) == "m1"
    assert s.get(s.holder("m1", INR_FILE), INR_FILE) == b"shared decoder"
    assert s.decoder("solo").id == s.holder("solo", INR_FILE) == "solo"
    assert s.decoder("coll").id == "coll"
    assert [e.id for e in s.members("coll")] == ["m0", "m1"] and s.members("solo") == []
    assert m.adapters("effnet_lite0") == {2: "adapter-effnet_lite0-e2.nvp"}
    with pytest.raises(ValueError, match="member of collection 'coll'"):
        load_inr(s, "m1")
    with pytest.raises(VideoNotFound):
        s.members("nope")


def test_collection_rules_are_enforced(collection):
    s = collection
    with pytest.raises(ValueError, match="a member entry does not hold inr files .*lives in its collection"):
        s.put_video(_member("m2", "coll", 2), {INR_FILE: b"x"})
    with pytest.raises(ValueError, match="a collection entry does not hold h264 files"):
        s.put_video(VideoEntry("c2", kind="collection", inr=INR_INFO), {H264_FILE: b""})
    # a collection holds adapters: adapt COLLECTION's, answering every member without its own
    s.put_video(VideoEntry("c3", kind="collection", inr=INR_INFO), {adapter_file("t", 1): b""})
    with pytest.raises(ValueError, match="a video entry does not hold keyframes files"):
        s.put_video(_video("v2"), {KEYFRAMES.file(): b""})
    with pytest.raises(ValueError, match="already has member 1: 'm1'"):
        s.put_video(_member("m2", "coll", 1), {})
    with pytest.raises(ValueError, match="'nope', which is not in store"):
        s.put_video(_member("m2", "nope", 0), {})
    with pytest.raises(ValueError, match="'solo', which is a video, not a collection"):
        s.put_video(_member("m2", "solo", 0), {})
    s.put_video(_member("m1", "coll", 1), {}, overwrite=True)  # re-storing a member at its own index is fine
    assert not any(s.exists(v) for v in ("m2", "c2", "v2"))
    for bad in (dict(kind="member"), dict(kind="member", collection="coll", index=-1),
                dict(kind="video", collection="coll", index=0)):
        with pytest.raises(EntryError, match="collection"):
            VideoEntry("x", inr=None if bad["kind"] == "member" else INR_INFO, **bad)
    with pytest.raises(EntryError, match="decoder is its collection's"):
        dataclasses.replace(_member("x", "c", 0), inr=INR_INFO)
    with pytest.raises(EntryError, match="no frames of its own"):
        VideoEntry("x", kind="collection", inr=INR_INFO, source=Source("a"), frames=FrameRange(0, 1, 1, 1.0))
    # a member whose collection went missing is reported as broken, not resolved to nothing
    s.remove("coll")
    with pytest.raises(CorruptEntry, match="member of collection 'coll', which is not in store"):
        s.decoder("m0")


def test_cli_shows_collections_and_protects_their_members(collection, capsys):
    root = collection.root
    code, text, _ = run(capsys, "info", "coll", "--store", root)
    assert code == 0 and "collection: nerv decoder shared by 2 member(s)" in text
    code, text, _ = run(capsys, "info", "m0", "--store", root)
    assert "member 0 of collection 'coll'" in text and "keyframes.nvp" in text
    code, lst, _ = run(capsys, "list", "--store", root, "--json")
    assert [(v["id"], v["kind"]) for v in lst["videos"]] == [
        ("coll", "collection"), ("m0", "member"), ("m1", "member"), ("solo", "video")]
    code, cost, _ = run(capsys, "cost", "m0", "--store", root, "--json")
    assert code == 0 and cost["arch"] == "nerv"  # the collection's decoder
    code, err, _ = run(capsys, "delete", "coll", "--store", root, "--json")
    assert code == 1 and "holds the decoder of m0, m1" in err["error"] and collection.exists("coll")
    for vid in ("m0", "m1"):  # the collection's decoder goes with its last member
        assert run(capsys, "delete", vid, "--store", root)[0] == 0
    assert list(collection.videos()) == ["solo"]
