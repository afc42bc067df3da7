"""``python -m clients multi NAME --video ID``: every task of a multi-task ensemble in one request.

``NAME`` is an ensemble written by ``python -m builder build-repo --multi NAME=TASK1,TASK2``: the server computes
the video's INR prefix once and runs each task's adapter, tail and post step on it. The group's tasks are read from
the ensemble's outputs (``<task>.<output>``, model metadata), and each task's answer is read by its kind's own
client (``classify``, ``detect``, ``caption``), so it holds the same fields as that task's command (``top1``,
``score``, ``labels``, ...). With ``--json`` the last line is ``{"video": ID, "tasks": {TASK: {...}}, ...}``.
"""
from __future__ import annotations

import argparse
from typing import Any

from builder.triton.wire import task_output

from . import caption, classify, detect
from .common import ClientError, add_common_arguments, add_selection_arguments, ask, connect, describe_answer

__all__ = ["COMMANDS", "add_arguments", "group_outputs", "multi", "run"]

COMMANDS = {"multi": "every task of a multi-task ensemble (build-repo --multi NAME=TASK1,TASK2) answered in one "
                     "request, from one INR prefix"}
_READERS = {"labels": classify, "boxes": detect, "captions": caption}  # TaskKind.answer -> the client that reads it


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("group", metavar="NAME", help="the multi-task ensemble (build-repo --multi NAME=...)")
    add_selection_arguments(parser)
    add_common_arguments(parser)


def group_outputs(metadata_outputs: list[str], group: str) -> dict[str, list[str]]:
    """The ensemble's output names (``<task>.<output>``) as task -> its outputs, in the ensemble's order."""
    tasks: dict[str, list[str]] = {}
    for name in metadata_outputs:
        task, sep, output = name.partition(".")
        if not sep:
            raise ClientError(f"model '{group}' is not a multi-task ensemble (output '{name}' names no task); "
                              "build one with 'python -m builder build-repo --multi NAME=TASK1,TASK2'")
        tasks.setdefault(task, []).append(output)
    return tasks


def _outputs(client: Any, url: str, group: str, timeout: float | None) -> dict[str, list[str]]:
    from tritonclient.utils import InferenceServerException

    try:
        meta = client.get_model_metadata(group, as_json=True, client_timeout=timeout)
    except InferenceServerException as e:
        raise ClientError(f"Triton at {url} has no ready model '{group}' ({' '.join(str(e.message()).split())}); "
                          "multi-task ensembles are built with 'python -m builder build-repo --multi "
                          f"{group}=TASK1,TASK2'") from None
    return group_outputs([o["name"] for o in meta.get("outputs", [])], group)


def multi(client: Any, url: str, group: str, video_id: str, frames: str = "auto",
          timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """One request to the group's ensemble; each task's answer as its own client gives it."""
    from builder.tasks import get_task  # the task table only: torch-free

    readers = {t: _READERS[get_task(t).kind.answer] for t in _outputs(client, url, group, timeout)}
    # each task's own client's outputs only (the raw logits, boxes or embeddings stay on the server)
    out = ask(client, url, group, video_id, frames, [task_output(t, o) for t, r in readers.items() for o in r.OUTPUTS],
              timeout)
    return {t: r.answer({**{o: out[task_output(t, o)] for o in r.OUTPUTS}, "seconds": out["seconds"]}, "nvp", group)
            for t, r in readers.items()}


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from builder.tasks import get_task

    client = connect(args.url)
    try:
        answers = multi(client, args.url, args.group, args.video, args.frames, args.timeout)
    finally:
        client.close()
    lines = [line for task, a in answers.items()
             for line in describe_answer(task, args.video, a, _READERS[get_task(task).kind.answer].describe)]
    seconds = next(iter(answers.values()))["seconds"]
    lines.append(f"{len(answers)} tasks in one request to '{args.group}': {1000 * seconds:.0f} ms")
    return "\n".join(lines), {"video": args.video, "tasks": answers, "group": args.group, "url": args.url,
                              "seconds": seconds}
