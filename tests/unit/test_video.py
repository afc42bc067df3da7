import argparse

import pytest
import torch

from training.metrics import psnr
from builder.samples import SAMPLES, list_samples, sample_path
from builder.video import (
    Clip,
    VideoDecodeError,
    parse_size,
    probe,
    read_frames,
    read_video,
    to_uint8,
    write_pngs,
    write_video,
)


@pytest.fixture(scope="module")
def carphone8() -> Clip:
    return read_video(sample_path("carphone"), count=8)


# --- samples ---------------------------------------------------------------------------


def test_samples_exist():
    paths = list_samples()
    assert set(paths) == set(SAMPLES)
    assert all(p.is_file() for p in paths.values())


@pytest.mark.parametrize("name, size, frames", [("gradio_b", (480, 270), 150), ("world", (480, 270), 901)])
def test_gradio_samples_are_real_clips(name, size, frames):
    info = probe(sample_path(name))
    assert ((info.width, info.height), info.frames, info.codec) == (size, frames, "h264")


def test_unknown_sample_lists_names():
    with pytest.raises(ValueError, match="bikes"):
        sample_path("nope")


# --- probe / read ----------------------------------------------------------------------


def test_probe_bikes():
    info = probe(sample_path("bikes"))
    assert (info.width, info.height, info.frames, info.codec) == (640, 272, 250, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(10.0, abs=0.1)


def test_read_bikes_window_resized():
    clip = read_video(sample_path("bikes"), start=5, count=4, step=3, size=(160, 68))
    assert clip.frames.shape == (4, 3, 68, 160)
    assert clip.frames.dtype == torch.float32
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0 and clip.frames.std() > 0.05
    assert (clip.num_frames, clip.size, clip.start, clip.step) == (4, (160, 68), 5, 3)
    assert clip.fps == pytest.approx(25.0)


def test_read_carphone(carphone8):
    assert carphone8.frames.shape == (8, 3, 144, 176)
    assert carphone8.fps == pytest.approx(30000 / 1001)
    assert carphone8.info.frames == 120


def test_step_takes_every_nth_frame(carphone8):
    every2 = read_video(sample_path("carphone"), count=4, step=2)
    torch.testing.assert_close(every2.frames, carphone8.frames[::2], rtol=0, atol=0)
    later = read_video(sample_path("carphone"), start=3, count=2)
    torch.testing.assert_close(later.frames, carphone8.frames[3:5], rtol=0, atol=0)


def test_read_frames_picks_indices_in_the_given_order(carphone8):
    got = read_frames(sample_path("carphone"), [6, 1, 6])
    torch.testing.assert_close(got, carphone8.frames[[6, 1, 6]], rtol=0, atol=0)
    with pytest.raises(VideoDecodeError, match="120 frames"):
        read_frames(sample_path("carphone"), [0, 500])
    with pytest.raises(ValueError, match="empty"):
        read_frames(sample_path("carphone"), [])


def test_max_frames_caps_without_error():
    clip = read_video(sample_path("carphone"), start=115, max_frames=50)
    assert clip.num_frames == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start": -1}, "start"),
        ({"step": 0}, "step"),
        ({"count": 0}, "count"),
        ({"size": (0, 10)}, "size"),
        ({"max_frames": 0}, "max_frames"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_video(sample_path("carphone"), **kwargs)


def test_start_beyond_end_states_frame_count():
    with pytest.raises(VideoDecodeError, match="clip has 120 frames"):
        read_video(sample_path("carphone"), start=500, count=1)
    with pytest.raises(VideoDecodeError, match="clip has 120 frames"):
        read_video(sample_path("carphone"), start=100, count=30)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(VideoDecodeError, match="missing.mp4.*not found"):
        read_video(path)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        probe(path)


def test_random_bytes_is_decode_error(tmp_path):
    path = tmp_path / "x.mp4"
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
    path.write_bytes(bytes(noise.tolist()))
    with pytest.raises(VideoDecodeError, match=r"cannot decode video '.*x\.mp4'"):
        read_video(path)


def test_truncated_mp4_is_decode_error(tmp_path):
    data = sample_path("carphone").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        read_video(path, count=2)


def test_parse_size():
    assert parse_size("320x180") == (320, 180)
    assert parse_size("64X48") == (64, 48)
    for bad in ["320", "0x10", "axb", "-3x4"]:
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=parse_size)
    assert parser.parse_args(["--size", "32x16"]).size == (32, 16)


# --- write -----------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path, carphone8):
    path = write_video(tmp_path / "out.mp4", carphone8.frames, carphone8.fps, crf=18)
    back = read_video(path)
    assert back.frames.shape == carphone8.frames.shape
    assert back.fps == pytest.approx(carphone8.fps)
    assert probe(path).codec == "h264"
    assert psnr(back.frames, carphone8.frames) > 30


def test_write_odd_size_pads(tmp_path, carphone8):
    odd = carphone8.frames[:, :, :143, :175]
    back = read_video(write_video(tmp_path / "odd.mp4", odd, 25.0))
    # libx264 + yuv420p needs even sizes: last row/column are repeated.
    assert back.size == (176, 144)
    assert psnr(back.frames[:, :, :143, :175], odd) > 30


def test_write_mpeg4_avi(tmp_path, carphone8):
    path = write_video(tmp_path / "out.avi", carphone8.frames, carphone8.fps, codec="mpeg4")
    info = probe(path)
    assert info.codec == "mpeg4" and (info.width, info.height) == (176, 144)
    back = read_video(path, count=4, size=(88, 72))
    assert back.frames.shape == (4, 3, 72, 88)
    assert psnr(back.frames, read_video(sample_path("carphone"), count=4, size=(88, 72)).frames) > 28


def test_bitrate_mode_tracks_target(tmp_path):
    clip = read_video(sample_path("carphone"), count=60)
    seconds = clip.num_frames / clip.fps
    sizes = {}
    for bitrate in (100_000, 400_000):
        path = write_video(tmp_path / f"b{bitrate}.mp4", clip.frames, clip.fps, bitrate=bitrate)
        sizes[bitrate] = path.stat().st_size
        assert sizes[bitrate] * 8 / seconds == pytest.approx(bitrate, rel=0.35)
    assert sizes[400_000] > 2 * sizes[100_000]


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        write_video(tmp_path / "x.mp4", torch.zeros(3, 8, 8), 25.0)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", torch.zeros(1, 3, 8, 8), 0)


def test_failed_write_leaves_no_file(tmp_path, carphone8):
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "out.xyz", carphone8.frames, 25.0)
    with pytest.raises(ValueError, match="pix_fmt"):
        write_video(tmp_path / "out.avi", carphone8.frames, 25.0, codec="mpeg4", pix_fmt="yuv444p")
    assert list(tmp_path.iterdir()) == []


def test_write_pngs(tmp_path, carphone8):
    paths = write_pngs(tmp_path / "pngs", carphone8.frames[:3])
    assert [p.name for p in paths] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert all(p.is_file() for p in paths)


def test_to_uint8_clamps_and_rounds():
    frames = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8(frames)
    assert out.shape == (1, 1, 5, 3) and out.dtype.name == "uint8"
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_an_h264_round_trip_keeps_the_colours(tmp_path):
    """Reading back what libx264 stored (crf 0) shifts no channel: swscale's fast 4:2:0 -> RGB path shifted each
    by -1.0 to -1.6 levels of 255 on these clips, a bias against the codec path's twin."""
    for name in ("carphone", "bikes"):
        frames = read_frames(sample_path(name), list(range(4)))
        back = read_frames(write_video(tmp_path / f"{name}.mp4", frames, 10, crf=0), list(range(4)))
        shift = (back - frames).mean((0, 2, 3)) * 255
        assert shift.abs().max() < 0.3, (name, shift)
        assert psnr(back, frames) > 44.0
