"""builder.store: ID validation, round trips, corruption detection, and atomicity under SIGKILL."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import store as store_module
from builder.store import (
    CorruptEntry,
    EntryExists,
    InvalidVideoId,
    MissingFile,
    StoreError,
    VideoNotFound,
    VideoStore,
    default_store_root,
    validate_video_id,
)

VALID_IDS = ["a", "Z", "0", "A1", "video_01-x", "big-buck-bunny", "a" * 64, "9_-"]
INVALID_IDS = [
    "", "../x", "a/b", "/abs", ".hidden", "..", "a" * 65, "a b", "-a", "_a", "a.b", "a\x00b", "a\n",
    "vidéo", "\uff41bc",  # fullwidth 'a': a unicode look-alike
    "\u0430bc",  # Cyrillic 'a'
    5, None, b"abc",
]


@pytest.mark.parametrize("video_id", VALID_IDS)
def test_valid_ids(video_id):
    assert validate_video_id(video_id) == video_id


@pytest.mark.parametrize("video_id", INVALID_IDS)
def test_invalid_ids(video_id, tmp_path):
    with pytest.raises(InvalidVideoId, match="invalid video ID"):
        validate_video_id(video_id)
    # Every public method validates first, so a bad ID never touches the filesystem.
    root = tmp_path / "store"
    s = VideoStore(root)
    for call in (
        lambda: s.put(video_id, {"f": b"x"}, {}),
        lambda: s.get(video_id, "f"),
        lambda: s.exists(video_id),
        lambda: s.meta(video_id),
        lambda: s.remove(video_id),
        lambda: s.add_file(video_id, "f", b""),
        lambda: s.update_meta(video_id, a=1),
        lambda: s.path(video_id, "f"),
    ):
        with pytest.raises(InvalidVideoId):
            call()
    assert not root.exists()


def test_invalid_id_message():
    with pytest.raises(ValueError) as e:
        validate_video_id("../x")
    assert str(e.value) == (
        "invalid video ID '../x': IDs are 1-64 characters of letters, digits, '_' and '-', "
        "starting with a letter or digit"
    )
    assert isinstance(e.value, StoreError)


def test_default_store_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NVP_STORE", str(tmp_path / "s"))
    assert default_store_root() == tmp_path / "s"
    monkeypatch.delenv("NVP_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_root() == tmp_path / "xdg" / "nvp" / "store"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_store_root() == Path("~/.local/share/nvp/store").expanduser()


def test_round_trip(tmp_path):
    s = VideoStore(tmp_path / "store")
    assert s.list() == [] and not (tmp_path / "store").exists()  # created lazily on write
    d = s.put("clip-b", {"video.nvpb": b"\x00" * 100, "info.json": b"{}"}, {"psnr": 31.5, "frames": 8})
    s.put("clip-a", {"video.nvpb": b"abc"}, {"psnr": 29.0})
    assert d == tmp_path / "store" / "clip-b"
    assert s.exists("clip-b") and not s.exists("clip-c")
    assert s.get("clip-b", "video.nvpb") == b"\x00" * 100
    assert s.path("clip-a", "video.nvpb").read_bytes() == b"abc"
    assert s.meta("clip-b") == {"psnr": 31.5, "frames": 8}
    entry = s.entry("clip-a")
    assert entry["id"] == "clip-a" and entry["format"] == 1 and entry["files"]["video.nvpb"]["bytes"] == 3
    assert [e["id"] for e in s.list()] == ["clip-a", "clip-b"]
    assert s.list()[1] == {"id": "clip-b", "psnr": 31.5, "frames": 8}

    with pytest.raises(MissingFile, match="has no file 'nope'"):
        s.get("clip-a", "nope")
    with pytest.raises(ValueError, match="invalid file name"):
        s.get("clip-a", "../clip-b/video.nvpb")

    s.remove("clip-a")
    assert not s.exists("clip-a") and [e["id"] for e in s.list()] == ["clip-b"]
    with pytest.raises(VideoNotFound) as e:
        s.get("clip-a", "video.nvpb")
    assert str(e.value) == f"no video 'clip-a' in store {tmp_path / 'store'} (see 'python -m builder list')"
    assert isinstance(e.value, KeyError)
    with pytest.raises(VideoNotFound):
        s.remove("clip-a")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [".lock", "clip-b"]


def test_overwrite(tmp_path):
    s = VideoStore(tmp_path)
    s.put("v", {"a.bin": b"1"}, {"n": 1})
    created = s.entry("v")["created"]
    with pytest.raises(EntryExists, match="overwrite=True"):
        s.put("v", {"a.bin": b"2"}, {"n": 2})
    assert s.get("v", "a.bin") == b"1"
    s.put("v", {"b.bin": b"2"}, {"n": 2}, overwrite=True)
    assert s.get("v", "b.bin") == b"2" and s.meta("v") == {"n": 2}
    assert list(s.entry("v")["files"]) == ["b.bin"]  # an overwrite replaces the whole entry
    assert s.entry("v")["created"] == created
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "v"]


def test_overwrite_without_atomic_swap(tmp_path, monkeypatch):
    # Filesystems/OSes without renameat2(RENAME_EXCHANGE) take the two-rename fallback.
    monkeypatch.setattr(store_module, "_renameat2", None)
    s = VideoStore(tmp_path)
    s.put("v", {"a.bin": b"1"}, {"n": 1})
    s.put("v", {"a.bin": b"2"}, {"n": 2}, overwrite=True)
    s.add_file("v", "b.bin", b"3")
    assert (s.get("v", "a.bin"), s.get("v", "b.bin"), s.meta("v")) == (b"2", b"3", {"n": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "v"]


def test_add_file_and_update_meta(tmp_path):
    s = VideoStore(tmp_path)
    with pytest.raises(VideoNotFound):
        s.add_file("v", "x.bin", b"")
    s.put("v", {"a.bin": b"aaa"}, {"n": 1})
    assert s.add_file("v", "b.bin", b"bbb") == tmp_path / "v" / "b.bin"
    s.add_file("v", "a.bin", b"AAAA")  # replace
    assert s.get("v", "a.bin") == b"AAAA" and s.get("v", "b.bin") == b"bbb"
    assert s.entry("v")["files"]["a.bin"]["bytes"] == 4
    for bad in ("entry.json", ".x", "../a", "a/b", ""):
        with pytest.raises(ValueError, match="invalid file name"):
            s.add_file("v", bad, b"")
    assert s.update_meta("v", psnr=33.0) == {"n": 1, "psnr": 33.0}
    assert s.meta("v") == {"n": 1, "psnr": 33.0}
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["a.bin", "b.bin", "entry.json"]


def test_corrupt_file_detected(tmp_path):
    s = VideoStore(tmp_path)
    s.put("v", {"data.bin": bytes(range(256)) * 10}, {})
    f = tmp_path / "v" / "data.bin"
    raw = bytearray(f.read_bytes())
    raw[100] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(CorruptEntry) as e:
        s.get("v", "data.bin")
    msg = str(e.value)
    assert "'v'" in msg and "data.bin" in msg and "re-encode" in msg and "delete" in msg
    f.unlink()
    with pytest.raises(CorruptEntry, match="missing"):
        s.get("v", "data.bin")
    with pytest.raises(CorruptEntry, match="missing"):
        s.path("v", "data.bin")


def test_truncated_entry_json(tmp_path):
    s = VideoStore(tmp_path)
    s.put("good", {"a": b"1"}, {"k": 1})
    s.put("bad", {"a": b"1"}, {"k": 2})
    ej = tmp_path / "bad" / "entry.json"
    ej.write_bytes(ej.read_bytes()[:20])
    listing = s.list()
    assert listing[1] == {"id": "good", "k": 1}
    assert listing[0]["id"] == "bad" and "entry.json" in listing[0]["error"]
    with pytest.raises(CorruptEntry, match="entry.json"):
        s.get("bad", "a")
    with pytest.raises(CorruptEntry):
        s.meta("bad")
    with pytest.raises(EntryExists):
        s.put("bad", {"a": b"2"}, {})
    s.put("bad", {"a": b"2"}, {"k": 3}, overwrite=True)  # the documented repair
    assert s.get("bad", "a") == b"2"


def test_hidden_and_partial_dirs_are_invisible(tmp_path):
    s = VideoStore(tmp_path)
    s.put("real", {"a": b"1"}, {})
    entry = (tmp_path / "real" / "entry.json").read_bytes()
    for name in (".tmp-ghost-0000", ".trash-ghost-0001"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "entry.json").write_bytes(entry)
    (tmp_path / "partial").mkdir()  # named like an ID but without entry.json
    (tmp_path / "partial" / "a").write_bytes(b"half")
    assert [e["id"] for e in s.list()] == ["real"]
    assert not s.exists("partial")
    with pytest.raises(VideoNotFound):
        s.get("partial", "a")
    # Leftovers are removed by the next write once stale, and only then.
    s.put("other", {}, {})
    assert (tmp_path / ".tmp-ghost-0000").exists()
    old = time.time() - 2 * VideoStore.STALE_AFTER
    os.utime(tmp_path / ".tmp-ghost-0000", (old, old))
    os.utime(tmp_path / ".trash-ghost-0001", (old, old))
    s.put("partial", {"a": b"whole"}, {})  # replaces the half-made dir
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "other", "partial", "real"]
    assert s.get("partial", "a") == b"whole"


def test_meta_must_be_json(tmp_path):
    s = VideoStore(tmp_path / "s")
    with pytest.raises(ValueError, match="JSON"):
        s.put("v", {}, {"x": object()})
    assert not s.exists("v")


_WRITER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from builder.store import VideoStore
s = VideoStore(sys.argv[2])
big = os.urandom(50_000_000)
print("ready", flush=True)
i = 0
while True:
    vid = "v%d" % (i % 3)
    payload = i.to_bytes(8, "little") + big[8:]
    if i % 7 == 6 and s.exists(vid):
        s.remove(vid)
    elif i % 5 == 4 and s.exists(vid):
        s.add_file(vid, "extra.bin", payload[:1_000_000])
    else:
        s.put(vid, {"data.bin": payload, "i.txt": str(i).encode()}, {"i": i}, overwrite=True)
    i += 1
"""


def _check_consistent(root: Path) -> int:
    s = VideoStore(root)
    listing = s.list()
    for e in listing:
        assert "error" not in e, e
        for name in s.entry(e["id"])["files"]:
            s.get(e["id"], name)  # checksum-verified
        assert int(s.get(e["id"], "i.txt")) == e["i"]  # files and meta were committed together
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            assert (d / "entry.json").is_file(), f"visible partial entry {d}"
    return len(listing)


@pytest.mark.slow
def test_sigkill_never_leaves_partial_entry(tmp_path):
    root = tmp_path / "store"
    rng = random.Random(1234)
    deadline = time.monotonic() + 8.0
    kills = 0
    while time.monotonic() < deadline and kills < 8:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(Path(store_module.__file__).parents[1]), str(root)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.02, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        kills += 1
        _check_consistent(root)
    assert kills >= 3
    # The next write (treating every leftover as stale) leaves no hidden debris behind.
    cleaner = VideoStore(root)
    cleaner.STALE_AFTER = -1.0
    cleaner.put("final", {"i.txt": b"-1"}, {"i": -1})
    assert not [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    assert _check_consistent(root) >= 1


# --- preconditions and the adapter binding -------------------------------------------------------------------

def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_inr_digest_is_the_decoder_files_checksum(tmp_path):
    from builder.entry import INR_FILE, chunk_file

    s = VideoStore(tmp_path)
    s.put("v", {INR_FILE: b"decoder", "h264.mp4": b"copy"}, {})
    assert s.inr_digest("v") == _digest(b"decoder")  # one INR: exactly its file's SHA-256
    s.add_file("v", "h264.mp4", b"other copy")
    assert s.inr_digest("v") == _digest(b"decoder")  # only decoder files count
    s.put("c", {chunk_file(0): b"c0", chunk_file(1): b"c1"}, {})
    first = s.inr_digest("c")
    s.add_file("c", chunk_file(1), b"c1 again")
    assert s.inr_digest("c") != first  # any chunk changing changes it
    s.put("none", {"h264.mp4": b"x"}, {})
    with pytest.raises(MissingFile, match="has no file 'inr.nvp'"):
        s.inr_digest("none")


def test_check_binding_refuses_another_or_an_unknown_inr():
    from builder.entry import StaleAdapter, check_binding

    check_binding("a" * 64, "a" * 64, "car", "effnet_lite0")
    with pytest.raises(StaleAdapter, match=r"trained on another INR \(bbbbbbbbbbbb, the stored one is aaaaaaaaaaaa.*"
                                           r"run 'python -m builder adapt car --task effnet_lite0' again"):
        check_binding("b" * 64, "a" * 64, "car", "effnet_lite0")
    with pytest.raises(StaleAdapter, match="stored before adapters recorded their INR; run 'python -m builder adapt"):
        check_binding(None, "a" * 64, "car", "effnet_lite0")


def test_writes_with_a_stale_precondition_write_nothing(tmp_path):
    from builder.entry import INR_FILE
    from builder.store import EntryChanged

    s = VideoStore(tmp_path)
    s.put("v", {INR_FILE: b"old"}, {})
    read, bound = s.version("v"), s.inr_digest("v")
    s.add_file("v", "pairing-t.json", b"{}", if_inr=bound, if_version=read)  # nothing changed: written
    assert s.get("v", "pairing-t.json") == b"{}" and s.version("v") != read
    # an adapt-style write after the INR was replaced (encode --force landed meanwhile)
    s.put("v", {INR_FILE: b"new"}, {}, overwrite=True)
    before = (tmp_path / "v" / "entry.json").read_bytes()
    with pytest.raises(EntryChanged, match="'v''s INR was replaced while this command ran.*nothing was written"):
        s.add_file("v", "adapter-t-e1.nvp", b"fitted to old", if_inr=bound)
    # a replace-style write computed from an older read of the entry
    with pytest.raises(EntryChanged, match="changed by another command since this one read it"):
        s.put("v", {INR_FILE: b"tuned old"}, {}, overwrite=True, if_version=read)
    assert (tmp_path / "v" / "entry.json").read_bytes() == before and s.get("v", INR_FILE) == b"new"
    s.remove("v")
    with pytest.raises(EntryChanged, match="was deleted"):  # replace_inr after a delete: not re-created
        s.put("v", {INR_FILE: b"tuned old"}, {}, overwrite=True, if_inr=bound)
    assert not s.exists("v")


def test_adapters_are_stored_bound_and_refused_on_another_inr(tmp_path):
    from builder.adapters import build_adapter
    from builder.entry import INR_BINDING, INR_FILE, StaleAdapter
    from builder.nvp.path import AdapterSet
    from builder.nvp.storage import load_adapter, save_adapter
    from builder.store import EntryChanged

    s = VideoStore(tmp_path)
    s.put("v", {INR_FILE: b"decoder"}, {})
    bound = s.inr_digest("v")
    adapters = AdapterSet([build_adapter("conv1x1", (4, 6, 8), (5, 3, 4))])
    save_adapter(s, "v", "effnet_lite0", 2, "blocks.5", adapters, {"accuracy": 1.0}, inr_sha256=bound)
    _, meta = load_adapter(s, "v", "effnet_lite0", 2, inr_sha256=bound)
    assert meta[INR_BINDING] == bound
    with pytest.raises(StaleAdapter, match="trained on another INR"):
        load_adapter(s, "v", "effnet_lite0", 2, inr_sha256=_digest(b"another decoder"))
    # the INR replaced while adapt trained: its write is refused and the entry keeps no adapter for the new INR
    s.put("v", {INR_FILE: b"re-encoded"}, {}, overwrite=True)
    with pytest.raises(EntryChanged, match="INR was replaced"):
        save_adapter(s, "v", "effnet_lite0", 3, "blocks.5", adapters, {"accuracy": 1.0}, inr_sha256=bound)
    assert set(s.entry("v")["files"]) == {INR_FILE}
