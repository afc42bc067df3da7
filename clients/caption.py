"""``python -m clients TASK --video ID``: captions of a stored video's frames from a captioning task's ensemble
on Triton: one per frame, and the video's (the most frequent one).

``--path`` as for classification: ``nvp``, ``fulldecode``, ``codec``, or ``all`` side by side.
"""
from __future__ import annotations

import argparse
from typing import Any

from builder.triton.wire import CAPTION, CAPTIONS, FRAME_INDICES

from .common import add_video_arguments, ask_paths, ask_task, report, task_commands

__all__ = ["COMMANDS", "add_arguments", "answer", "caption", "describe", "run"]

OUTPUTS = (CAPTION, CAPTIONS, FRAME_INDICES)
COMMANDS = task_commands("captions", "captions of a video's frames")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_video_arguments(parser)


def caption(client: Any, url: str, task: str, video_id: str, frames: str = "auto", path: str = "nvp",
            timeout: float | None = None, collection: str | None = None) -> dict[str, Any]:
    """One request; the captions as text."""
    out = ask_task(client, url, task, video_id, frames, path, OUTPUTS, timeout, collection)
    return answer(out, path, out["model"])


def answer(out: dict[str, Any], path: str, model: str) -> dict[str, Any]:
    """:data:`OUTPUTS` (and ``seconds``) of one answer with the captions as text."""
    return {"path": path, "model": model, "caption": out[CAPTION][0].decode("utf-8"),
            "frames": [int(i) for i in out[FRAME_INDICES]],
            "captions": [c.decode("utf-8") for c in out[CAPTIONS]], "seconds": out["seconds"]}


def describe(a: dict[str, Any]) -> tuple[str, list[str]]:
    return f": \"{a['caption']}\"", [f"  frame {f:>5}  {c}" for f, c in zip(a["frames"], a["captions"])]


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    answers = ask_paths(args, lambda c, p: caption(c, args.url, args.task, args.video, args.frames, p,
                                                   args.timeout, args.collection))
    return report(args, answers, describe, caption=next(iter(answers.values()))["caption"])
