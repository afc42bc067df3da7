"""Multi-task requests (``build-repo --multi NAME=TASK1,TASK2``): one request, one INR prefix, every task's answer.

::

    NAME = nvp_input           video_id + frame_selection -> the INR prefix up to the video's shared exit block,
                               computed ONCE, and each task's stored adapter applied to it (the input model every
                               task's own ensemble starts with: the group asks it for all its tasks' outputs)
           -> <task>_tail      one branch per task, run in parallel by Triton: the task's own ONNX tail and post
           -> <task>_post      models, the very ones its single-task ensemble runs (not copies)

and answers every task in one response, each output under ``<task>.<output>`` (:func:`builder.triton.wire
.task_output`: ``effnet_lite0.labels``, ``mobilenet_v2.scores``, ...).

Choices, and why:

- **The shared exit** (:func:`shared_exit`), per video and request: each task is served from the injection layer
  its tail starts at (one per task and repository, as for its own ensemble), so an exit qualifies when every task
  has a stored adapter for its layer there. Among those, the exit every task's own ensemble would serve
  (:func:`~builder.triton.task_serving.choose_adapter`) when they agree: the group then answers exactly what each
  task's own ensemble answers; else the exit with the best worst-task accuracy (``adapt``'s stored measurement),
  the cheapest (lowest) exit on ties. No such exit: a clear error that names the ``adapt`` command to run.
- **Adapters run in the input step**, one after the other, not in branches of their own: a branch would add a
  Python-backend hop per task (a shared-memory copy of the prefix), and the adapters must be read with the INR they
  are bound to, under one version check. (Measured: docs/BENCHMARKS.md, "Multi-task requests".)
- **One frame protocol per group**, checked when the group is built (:class:`TaskGroup`): a request reads one
  frame selection, and an action task reads 32 consecutive frames as one clip where a 2-D task reads 8 spread
  frames. Mixing them is refused with a message; build them as separate groups.
- **One INR cache** per server process: ``nvp_input`` is one model for every task and group, with one
  :class:`~builder.triton.serving.StoreCache` of decoders (:class:`~builder.triton.task_serving.InputHandler`);
  which tasks a request is for, it reads from the outputs the ensemble step asks of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .serving import RequestError
from .task_serving import choose_adapter
from .wire import task_output

__all__ = ["TaskGroup", "group_feature_names", "shared_exit"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _protocol(task: Any) -> str:
    return f"clips of {task.clip} consecutive frames" if task.video else f"{task.clip} frames"


@dataclass(frozen=True)
class TaskGroup:
    """Tasks answered together by one ensemble ``name``: at least two served tasks of one frame protocol."""

    name: str
    tasks: tuple[str, ...]

    def __post_init__(self) -> None:
        from ..tasks import get_task

        object.__setattr__(self, "tasks", tuple(self.tasks))
        where = f"--multi {self.name}"
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"--multi: group name {self.name!r} must be 1-64 letters, digits, '_' or '-' (it names "
                             "the served ensemble)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"{where}: a task is named twice ({', '.join(self.tasks)})")
        if len(self.tasks) < 2:
            raise ValueError(f"{where}: a group needs at least two tasks (one task is answered by its own ensemble)")
        tasks = [get_task(t) for t in self.tasks]  # an unknown name: the registry's error, listing the tasks
        for t in tasks:
            if not t.kind.served:
                raise ValueError(f"{where}: task {t.name!r} ({t.kind.name}) cannot be served")
        if len({(t.video, t.clip) for t in tasks}) > 1:
            raise ValueError(f"{where}: its tasks read different frames per request ("
                             + "; ".join(f"{t.name}: {_protocol(t)}" for t in tasks)
                             + "); one request reads one frame selection, so build action and 2-D tasks as "
                               "separate groups")

    @classmethod
    def parse(cls, text: str) -> TaskGroup:
        """``NAME=TASK1,TASK2[,...]`` (``build-repo --multi``)."""
        name, sep, tasks = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--multi expects NAME=TASK1,TASK2[,...], got {text!r}")
        return cls(name.strip(), tuple(t.strip() for t in tasks.split(",") if t.strip()))


def shared_exit(video_id: str, layers: Mapping[str, str], pairings: Mapping[str, Mapping[str, Any]],
                adapters: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> int:
    """The exit block a group's prefix stops at for one video (the rule: this module's docstring).

    ``layers``: task -> its served injection layer; ``pairings``: task -> the video's pairing JSON; ``adapters``:
    task -> {exit block: stored adapter metadata}. Raises :class:`RequestError` naming what to run."""
    # each task's own choice first: a task with no adapter for its layer at all gets its own ensemble's error
    own = {t: choose_adapter(pairings[t], adapters[t], layer, video_id, t) for t, layer in layers.items()}
    if len(set(own.values())) == 1:
        return next(iter(own.values()))
    fits = {t: {k: float(m.get("accuracy") or 0.0) for k, m in adapters[t].items() if m.get("layer") == layer}
            for t, layer in layers.items()}
    common = set.intersection(*(set(f) for f in fits.values()))
    if common:
        return max(common, key=lambda k: (min(f[k] for f in fits.values()), -k))
    first = next(iter(layers))
    k = own[first]
    have = "; ".join(f"{t}: exit(s) {', '.join(map(str, sorted(fits[t])))} for {layers[t]}" for t in layers)
    todo = " and ".join(f"'python -m builder adapt {video_id} --task {t} --layers {layers[t]} --exits {k}'"
                        for t in layers if k not in fits[t])
    raise RequestError(f"video '{video_id}' has no exit block where every task ({', '.join(layers)}) has an adapter for "
                       f"the layer it is served from ({have}); run {todo}")


def group_feature_names(task: str, names: Sequence[str]) -> dict[str, str]:
    """A task's tail inputs (``features``, ...) -> the group ensemble's tensors carrying them."""
    return {n: task_output(task, n) for n in names}
