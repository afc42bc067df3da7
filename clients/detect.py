"""``python -m clients TASK --video ID``: objects in a stored video's frames (boxes with labels and scores) from a
detection task's ensemble on Triton.

Boxes are (x0, y0, x1, y1) in the stored video's pixels; the server keeps those scoring above the threshold the
repository was built with (``build-repo --score-threshold``). ``--path`` as for classification: ``nvp``,
``fulldecode``, ``codec``, or ``all`` side by side.
"""
from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from builder.triton.wire import BOX_FRAMES, BOXES, FRAME_INDICES, LABELS, SCORES

from .common import add_video_arguments, ask_paths, ask_task, report, task_commands

__all__ = ["COMMANDS", "add_arguments", "answer", "describe", "detect", "run"]

OUTPUTS = (BOXES, LABELS, SCORES, BOX_FRAMES, FRAME_INDICES)
COMMANDS = task_commands("boxes", "boxes with labels in a video's frames")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--max-lines", type=int, default=20, metavar="N",
                        help="print at most N boxes (all are in --json; default 20)")
    add_video_arguments(parser)


def detect(client: Any, url: str, task: str, video_id: str, frames: str = "auto", path: str = "nvp",
           timeout: float | None = None, collection: str | None = None) -> dict[str, Any]:
    """One request; the detections as plain Python, ordered by frame then score."""
    out = ask_task(client, url, task, video_id, frames, path, OUTPUTS, timeout, collection)
    return answer(out, path, out["model"])


def answer(out: dict[str, Any], path: str, model: str) -> dict[str, Any]:
    """:data:`OUTPUTS` (and ``seconds``) of one answer as plain Python, ordered by frame then score."""
    boxes = [{"frame": int(f), "label": label.decode("utf-8"), "score": round(float(s), 6),
              "box": [round(float(v), 2) for v in b]}
             for f, label, s, b in zip(out[BOX_FRAMES], out[LABELS], out[SCORES], out[BOXES])]
    return {"path": path, "model": model, "frames": [int(i) for i in out[FRAME_INDICES]],
            "detections": boxes, "counts": dict(Counter(b["label"] for b in boxes).most_common()),
            "seconds": out["seconds"]}


def describe(a: dict[str, Any], max_lines: int = 20) -> tuple[str, list[str]]:
    counts = ", ".join(f"{n} {label}" for label, n in a["counts"].items()) or "nothing above the threshold"
    lines = [f"  frame {d['frame']:>5}  {d['label']:<20} {d['score']:.3f}  [{', '.join(f'{v:.0f}' for v in d['box'])}]"
             for d in a["detections"][:max_lines]]
    if len(a["detections"]) > max_lines:
        lines.append(f"  ... {len(a['detections']) - max_lines} more (--max-lines, --json)")
    return f": {counts}", lines


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    answers = ask_paths(args, lambda c, p: detect(c, args.url, args.task, args.video, args.frames, p, args.timeout,
                                                    args.collection))
    return report(args, answers, lambda a: describe(a, args.max_lines))
