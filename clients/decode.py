"""``python -m clients decode``: frames of a stored video, decoded by the ``decode`` model on Triton.

The model returns float32 RGB frames ``(N, 3, H, W)`` in [0, 1]; ``--out`` writes them as an mp4/avi/mkv/mov
(``builder.video.write_video``) or as PNGs in a directory (``builder.video.write_pngs``): only ``--out`` loads
torch and PyAV.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from builder.triton.wire import DECODE_MODEL, FRAME_INDICES, FRAMES, VIDEO_ID

from .common import ClientError, add_common_arguments, connect, infer, parse_frames

__all__ = ["COMMANDS", "HELP", "MODEL", "add_arguments", "decode_frames", "run"]

HELP = "decode frames of a stored video on the server (the 'decode' model)"
COMMANDS = {"decode": HELP}
MODEL = DECODE_MODEL
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


def add_arguments(parser: argparse.ArgumentParser, name: str = "decode") -> None:
    parser.add_argument("--video", required=True, metavar="ID", help="video ID in the server's store")
    parser.add_argument("--frames", required=True, type=parse_frames, metavar="LIST",
                        help="frame indices: 0,1,2 or an inclusive range 0-7 (or a mix: 0-3,8)")
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="write OUT.mp4 (.avi/.mkv/.mov) or, for any other path, a directory of PNGs")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of a written video (default 25)")
    add_common_arguments(parser)


def decode_frames(url: str, video_id: str, frames: list[int], *, timeout: float | None = None) -> np.ndarray:
    """``(N, 3, H, W)`` float32 frames of ``video_id`` from the Triton server at ``url``."""
    client = connect(url)
    try:
        out = infer(client, url, MODEL,
                    [(VIDEO_ID, np.array([video_id.encode("utf-8")], dtype=np.object_), "BYTES"),
                     (FRAME_INDICES, np.asarray(frames, dtype=np.int64), "INT64")],
                    [FRAMES], timeout=timeout)
    finally:
        client.close()
    return out[FRAMES]


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.fps <= 0:
        raise ClientError(f"--fps must be > 0, got {args.fps}")
    t0 = time.perf_counter()
    frames = decode_frames(args.url, args.video, args.frames, timeout=args.timeout)
    seconds = time.perf_counter() - t0
    if frames.ndim != 4 or frames.shape[0] != len(args.frames):
        raise ClientError(f"server returned frames of shape {list(frames.shape)} for {len(args.frames)} indices")
    n, c, h, w = frames.shape
    lines = [f"decoded {n} frame(s) of '{args.video}' from {args.url} in {seconds * 1000:.0f} ms: "
             f"{c}x{h}x{w} float32, mean {float(frames.mean()):.4f}"]
    written = None
    if args.out is not None:
        import torch

        from builder.video import write_pngs, write_video

        tensor = torch.from_numpy(np.array(frames, dtype=np.float32))  # a writable copy
        if args.out.suffix.lower() in VIDEO_EXTS:
            written = write_video(args.out, tensor, args.fps)
            lines.append(f"wrote {written}")
        else:
            paths = write_pngs(args.out, tensor)
            written = args.out
            lines.append(f"wrote {len(paths)} PNG(s) to {written}")
    obj = {
        "video": args.video,
        "frames": list(args.frames),
        "shape": [n, c, h, w],
        "dtype": "float32",
        "mean": round(float(frames.mean()), 6),
        "seconds": round(seconds, 4),
        "url": args.url,
        "out": None if written is None else str(written),
    }
    return "\n".join(lines), obj
