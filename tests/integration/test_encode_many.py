"""``encode-many`` on a local Ray cluster: real clips and one broken file in a manifest; the broken one is reported
and the rest stored; a rerun skips what is done; a changed row or a deleted video is encoded again."""
import json
import subprocess
import sys

import pytest

from builder.corpus import read_manifest
from builder.samples import sample_path
from builder.store import VideoStore

pytestmark = pytest.mark.integration
TINY = "4,48x32,2"  # frames, size, epochs: seconds per video


def run(manifest, store, *extra):
    p = subprocess.run([sys.executable, "-m", "builder", "encode-many", str(manifest), "--store", str(store),
                        "--json", "--no-progress", "--retries", "1", *extra],
                       capture_output=True, text=True, timeout=600)
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def statuses(result):
    return {v["id"]: v["status"] for v in result["videos"]}


def test_a_manifest_encodes_on_ray_reports_the_broken_file_and_resumes(tmp_path):
    (tmp_path / "broken.mp4").write_text("not a video")
    clips = {"car": "carphone", "bikes": "bikes", "gb": "gradio_b", "world": "world"}
    rows = [f"{sample_path(name)},{vid},{TINY}" for vid, name in clips.items()] + [f"broken.mp4,broken,{TINY}"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,id,frames,size,epochs\n" + "\n".join(rows) + "\n")
    store = tmp_path / "store"

    rc, r, err = run(manifest, store)
    assert rc == 1, err  # one video failed: the exit status says so, the others are stored
    assert "5 video(s) to encode on Ray (1 CPU(s) each" in err  # 5 videos share this cluster's CPUs
    assert statuses(r) == {"car": "stored", "bikes": "stored", "gb": "stored", "world": "stored", "broken": "failed"}
    broken = next(v for v in r["videos"] if v["id"] == "broken")
    assert "cannot decode video" in broken["error"] and "broken.mp4" in broken["error"]
    s = VideoStore(store)
    assert sorted(e["id"] for e in s.list()) == ["bikes", "car", "gb", "world"]
    assert s.video("car").frames.count == 4 and (s.video("car").width, s.video("car").height) == (48, 32)

    manifest.write_text(manifest.read_text().replace(f"bikes,{TINY}", "bikes,4,48x32,3"))  # bikes' options change
    s.remove("gb")
    rc, r, err = run(manifest, store)
    assert statuses(r) == {"car": "skipped", "bikes": "stored", "gb": "stored", "world": "skipped",
                           "broken": "failed"}, err
    assert s.video("bikes").quality.epochs == 3


def test_manifest_errors_name_what_to_fix(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("file,id\na.mp4,a\n")
    with pytest.raises(ValueError, match="header must name the columns path and id"):
        read_manifest(m)
    m.write_text("path,id,frams\na.mp4,a,4\n")
    with pytest.raises(ValueError, match=r"unknown column\(s\) frams; .*frames"):
        read_manifest(m)
    m.write_text("path,id\na.mp4,a\nb.mp4,a\n")
    with pytest.raises(ValueError, match="ID 'a' is already on line 2"):
        read_manifest(m)
    with pytest.raises(ValueError, match="cannot read the manifest"):
        read_manifest(tmp_path / "missing.csv")
    m.write_text("path,id,frames,compile\na.mp4,a,4,true\n")
    (row,) = read_manifest(m)
    assert row.path == str(tmp_path / "a.mp4") and row.argv(frozenset({"compile"})) == [
        "encode", str(tmp_path / "a.mp4"), "--id", "a", "--frames", "4", "--compile"]


def test_ray_workers_share_one_store_without_corrupting_it(tmp_path):
    """Four Ray worker processes write at once: two to one ID, two to IDs of their own. The per-ID encode lock and
    the store's lock are fcntl locks, real across processes: the shared ID ends as one complete entry (the other
    writer was told another process is encoding it, or replaced it whole after), and every file verifies."""
    import ray

    from builder.api import EncodeInProgress, encode_video
    from training.config import TrainConfig

    store_root = tmp_path / "store"

    def encode(name: str, video_id: str) -> str:
        try:
            encode_video(sample_path(name), video_id, store=VideoStore(store_root), count=4, size=(48, 32),
                         train=TrainConfig(recipe="hnerv", epochs=2), overwrite=True, progress=False)
        except EncodeInProgress as e:
            return f"busy: {e}"
        return "stored"

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1)(encode)
        jobs = [("carphone", "same"), ("bikes", "same"), ("carphone", "own-a"), ("bikes", "own-b")]
        out = ray.get([task.remote(n, v) for n, v in jobs])
    finally:
        ray.shutdown()
    assert out[2:] == ["stored", "stored"], out
    assert "stored" in out[:2] and all(o == "stored" or o.startswith("busy:") for o in out[:2]), out
    s = VideoStore(store_root)
    assert sorted(e["id"] for e in s.list()) == ["own-a", "own-b", "same"]
    for vid in ("same", "own-a", "own-b"):
        for name in s.video(vid).files:
            s.get(vid, name)  # checksum-verified: no torn or mixed file
    assert s.video("same").source.path.endswith(("carphone_pristine.mp4", "bikes.mp4"))


def test_each_video_gets_its_share_of_the_cpus():
    from builder.corpus import cpus_per_video

    assert cpus_per_video(16, 3) == 5 and cpus_per_video(2, 5) == 1 and cpus_per_video(16, 1) == 16
    assert cpus_per_video(16, 3, asked=2) == 2
    with pytest.raises(ValueError, match="--cpus-per-video must be >= 1"):
        cpus_per_video(16, 3, asked=0)
