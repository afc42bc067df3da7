"""``python -m clients TASK --video ID``: top-k labels of a stored video from a task's ensemble on Triton.

One command per classification and action task (named after its backbone, as in ``python -m builder adapt``).
``--path`` picks the ensemble: ``nvp`` (INR prefix + adapter + backbone tail: the product), or the baselines at
equal storage, ``fulldecode`` (full INR decode + full backbone) and ``codec`` (H.264 copy decoded with PyAV + full
backbone); ``all`` asks the three and prints them side by side.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from .common import ClientError, add_common_arguments, connect, infer

__all__ = ["COMMANDS", "PATHS", "add_arguments", "classify", "run"]

PATHS = ("nvp", "fulldecode", "codec")
OUTPUTS = ("labels", "scores", "frame_labels", "frame_scores", "frame_indices")
_SELECTION_HELP = ("frames to read: auto (the task's protocol: 8 uniformly spaced frames, or 32 consecutive for "
                   "action tasks), uniform[:N], consecutive[:N][@START], or indices like 0-7,12 (default auto)")


def _commands() -> dict[str, str]:
    from builder.tasks import SERVED_KINDS, TASKS

    return {name: f"{spec.kind}: top-k labels of a video from the '{name}' ensemble"
            for name, spec in TASKS.items() if spec.kind in SERVED_KINDS}


COMMANDS = _commands()


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--video", required=True, metavar="ID", help="video ID in the server's store")
    parser.add_argument("--frames", default="auto", metavar="SELECTION", help=_SELECTION_HELP)
    parser.add_argument("--path", choices=(*PATHS, "all"), default="nvp",
                        help="nvp (default), fulldecode or codec ensemble; all: the three side by side")
    add_common_arguments(parser)


def model_name(task: str, path: str) -> str:
    return task if path == "nvp" else f"{task}_{path}"


def classify(client: Any, url: str, task: str, video_id: str, frames: str = "auto", path: str = "nvp",
             timeout: float | None = None) -> dict[str, Any]:
    """One request to a task ensemble; the answer as plain Python (labels decoded)."""
    t0 = time.perf_counter()
    out = infer(client, url, model_name(task, path),
                [("video_id", np.array([video_id.encode("utf-8")], dtype=np.object_), "BYTES"),
                 ("frame_selection", np.array([frames.encode("utf-8")], dtype=np.object_), "BYTES")],
                OUTPUTS, timeout=timeout)
    labels = [b.decode("utf-8") for b in out["labels"]]
    return {
        "path": path, "model": model_name(task, path), "top1": labels[0], "score": float(out["scores"][0]),
        "labels": labels, "scores": [round(float(s), 6) for s in out["scores"]],
        "frames": [int(i) for i in out["frame_indices"]],
        "frame_labels": [b.decode("utf-8") for b in out["frame_labels"]],
        "frame_scores": [round(float(s), 6) for s in out["frame_scores"]],
        "seconds": round(time.perf_counter() - t0, 4),
    }


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    paths = PATHS if args.path == "all" else (args.path,)
    client = connect(args.url)
    try:
        answers = {p: classify(client, args.url, args.task, args.video, args.frames, p, args.timeout) for p in paths}
    finally:
        client.close()
    lines = []
    for p, a in answers.items():
        lines.append(f"{args.task} [{a['model']}] on '{args.video}', {len(a['frames'])} frame(s), "
                     f"{1000 * a['seconds']:.0f} ms:")
        lines += [f"  {i + 1}. {label:<30} {score:.3f}" for i, (label, score) in enumerate(zip(a["labels"],
                                                                                             a["scores"]))]
    if len(answers) > 1:
        agree = sum(a["top1"] == answers["codec"]["top1"] for a in answers.values()) - 1
        lines.append(f"top-1 of nvp/fulldecode agreeing with codec: {agree}/{len(answers) - 1}")
    first = answers[paths[0]]
    obj = {"task": args.task, "video": args.video, "url": args.url, "top1": first["top1"], "score": first["score"],
           **({"paths": answers} if len(answers) > 1 else first)}
    return "\n".join(lines), obj
