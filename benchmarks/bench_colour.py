"""The codec path's colour conversion: an H.264 round trip of real frames, read back two ways.

  PYTHONPATH=. python benchmarks/bench_colour.py            # every packaged clip, 16 frames each, crf 0 and 20

For each clip the first 16 frames are read (``builder.video.read_frames``), written with libx264 (yuv420p) at
``--crf``, and read back through swscale's fast 4:2:0 -> RGB path (``to_ndarray(format="rgb24")``, what the
project used before) and through :func:`builder.video.rgb_array` (full chroma interpolation, accurate rounding).
Reported per clip and crf: the mean shift per channel in levels of 255 and the PSNR against the frames written,
and ms per frame of each conversion (median over the frames).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from builder.samples import sample_path
from builder.video import read_frames, rgb_array, to_uint8, write_video

CLIPS = ("bikes", "carphone", "bigbuckbunny", "gradio_a", "gradio_b", "world")


def _read_back(path: Path, convert) -> tuple[np.ndarray, float]:
    out, ms = [], []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = time.perf_counter()
            out.append(convert(frame))
            ms.append((time.perf_counter() - t) * 1000)
    return np.stack(out), statistics.median(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--crf", type=int, nargs="+", default=[0, 20])
    args = ap.parse_args()
    print("| clip | size | crf | conversion | shift R/G/B (levels) | PSNR dB | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    ways = {"fast (before)": lambda f: f.to_ndarray(format="rgb24"), "rgb_array (now)": rgb_array}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CLIPS:
            frames = read_frames(sample_path(name), list(range(args.frames)))
            ref = to_uint8(frames).astype(np.float64)
            for crf in args.crf:
                path = write_video(Path(tmp) / "rt.mp4", frames, 10, crf=crf)
                for way, convert in ways.items():
                    back, ms = _read_back(path, convert)
                    d = back.astype(np.float64) - ref
                    shift = "/".join(f"{v:+.2f}" for v in d.mean((0, 1, 2)))
                    psnr = 10 * np.log10(255.0 ** 2 / (d ** 2).mean())
                    print(f"| {name} | {frames.shape[3]}x{frames.shape[2]} | {crf} | {way} | {shift} | {psnr:.2f} | "
                          f"{ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
