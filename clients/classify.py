"""``python -m clients TASK --video ID``: top-k labels of a stored video from a task's ensemble on Triton.

One command per classification and action task. ``--path`` picks the ensemble: ``nvp`` (INR prefix + adapter +
backbone tail: the product), or the baselines at equal storage, ``fulldecode`` (full INR decode + full backbone) and
``codec`` (H.264 copy decoded with PyAV + full backbone); ``all`` asks the three and prints them side by side.
"""
from __future__ import annotations

import argparse
from typing import Any

from builder.triton.wire import FRAME_INDICES, FRAME_LABELS, FRAME_SCORES, LABELS, SCORES

from .common import add_video_arguments, ask_paths, ask_task, report, task_commands

__all__ = ["COMMANDS", "add_arguments", "answer", "classify", "describe", "run"]

OUTPUTS = (LABELS, SCORES, FRAME_LABELS, FRAME_SCORES, FRAME_INDICES)
COMMANDS = task_commands("labels", "top-k labels of a video")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_video_arguments(parser)


def classify(client: Any, url: str, task: str, video_id: str, frames: str = "auto", path: str = "nvp",
             timeout: float | None = None, collection: str | None = None) -> dict[str, Any]:
    """One request to a task ensemble; the answer as plain Python (labels decoded)."""
    out = ask_task(client, url, task, video_id, frames, path, OUTPUTS, timeout, collection)
    return answer(out, path, out["model"])


def answer(out: dict[str, Any], path: str, model: str) -> dict[str, Any]:
    """:data:`OUTPUTS` (and ``seconds``) of one answer as plain Python (labels decoded)."""
    labels = [b.decode("utf-8") for b in out[LABELS]]
    return {
        "path": path, "model": model, "top1": labels[0], "score": float(out[SCORES][0]),
        "labels": labels, "scores": [round(float(s), 6) for s in out[SCORES]],
        "frames": [int(i) for i in out[FRAME_INDICES]],
        "frame_labels": [b.decode("utf-8") for b in out[FRAME_LABELS]],
        "frame_scores": [round(float(s), 6) for s in out[FRAME_SCORES]],
        "seconds": out["seconds"],
    }


def describe(a: dict[str, Any]) -> tuple[str, list[str]]:
    return ":", [f"  {i + 1}. {label:<30} {score:.3f}" for i, (label, score) in enumerate(zip(a["labels"],
                                                                                                 a["scores"]))]


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    answers = ask_paths(args, lambda c, p: classify(c, args.url, args.task, args.video, args.frames, p,
                                                    args.timeout, args.collection))
    first = next(iter(answers.values()))
    text, obj = report(args, answers, describe, top1=first["top1"], score=first["score"])
    if len(answers) > 1:
        agree = sum(a["top1"] == answers["codec"]["top1"] for a in answers.values()) - 1
        text += f"\ntop-1 of nvp/fulldecode agreeing with codec: {agree}/{len(answers) - 1}"
    return text, obj
