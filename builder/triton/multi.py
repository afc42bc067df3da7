"""Multi-task requests (``build-repo --multi NAME=TASK1,TASK2``): one request, one INR prefix, every task's answer.

::

    NAME = NAME_input          video_id + frame_selection -> the INR prefix up to the video's shared exit block,
                               computed ONCE, and each task's stored adapter applied to it
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
- **One INR cache** per server process for the group: its input model is one model with one
  :class:`~builder.triton.serving.StoreCache` of decoders, whatever the number of tasks.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .serving import RequestError, StoreCache, parse_video_id
from .task_serving import FRAME_SIZE, InputOptions, StoredAdapters, answer_arrays, choose_adapter, input_names, \
    parse_selection, served_frames, store_root
from .wire import FRAME_INDICES, FRAME_SELECTION, VIDEO_ID, task_output

__all__ = ["GroupInputHandler", "GroupInputSettings", "TaskGroup", "shared_exit"]

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


def shared_exit(video_id: str, group: str, layers: Mapping[str, str], pairings: Mapping[str, Mapping[str, Any]],
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
    raise RequestError(f"video '{video_id}' has no exit block where every task of '{group}' has an adapter for "
                       f"the layer it is served from ({have}); run {todo}")


@dataclass(frozen=True)
class GroupInputSettings:
    """What a group's input model reads from its config parameters."""

    store_root: Path
    group: str
    layers: Mapping[str, str]  # task -> the injection layer its tail starts at, in the group's order
    options: InputOptions = InputOptions()

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, instance_kind: str = "CPU",
                        device_id: str | int = 0) -> GroupInputSettings:
        layers = json.loads(params.get("tasks", "") or "{}")
        if not isinstance(layers, dict) or len(layers) < 2 or not all(
                isinstance(v, str) and v for v in layers.values()):
            raise ValueError(f"model parameter 'tasks' must be a JSON object task -> injection layer with at least "
                             f"two tasks, got {params.get('tasks')!r}")
        group = TaskGroup(params.get("group", ""), tuple(layers))  # the same checks as at build time
        return cls(store_root(params), group.name, layers, InputOptions.from_parameters(params, instance_kind,
                                                                                        device_id))


class GroupInputHandler:
    """``handle({"video_id", "frame_selection"}) -> {"<task>.features"..., "frame_indices"}``: the INR prefix once,
    each task's adapter on it."""

    def __init__(self, settings: GroupInputSettings, log: Callable[[str], None] | None = None) -> None:
        from ..tasks import get_task

        self.settings = settings
        self.log = log or (lambda msg: None)
        self.tasks = {t: get_task(t) for t in settings.layers}
        self.protocol = next(iter(self.tasks.values()))  # the group's tasks share one frame protocol (TaskGroup)
        o = settings.options
        self.inrs = StoreCache(settings.store_root, o.cache_size, device=o.device)
        self.adapters = {t: StoredAdapters(settings.store_root, task, o.cache_size, o.device)
                         for t, task in self.tasks.items()}
        self.frame_size = any(t.kind.frame_size for t in self.tasks.values())
        from ..nvp import path, storage  # noqa: F401 - the decoder/adapter stack at model load, not on a request

    def describe(self) -> str:
        return f"group {self.settings.group} input ({', '.join(self.tasks)})"

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        from ..nvp.path import inr_features

        s = self.settings
        video_id = parse_video_id(inputs.get(VIDEO_ID))
        selection = parse_selection(inputs.get(FRAME_SELECTION))
        t0 = time.perf_counter()
        with torch.inference_mode():
            inr_version, model, idx, size = served_frames(self.inrs, video_id, selection, self.protocol,
                                                          s.options.max_frames)
            stored = {t: a.get(video_id) for t, a in self.adapters.items()}
            k = shared_exit(video_id, s.group, s.layers, {t: p for t, (p, _) in stored.items()},
                            {t: {e: meta for e, (_, meta) in st.items()} for t, (_, st) in stored.items()})
            prefix = inr_features(model, idx.tolist(), k, self.protocol.video)  # once, for every task
            named = {}
            for t, (_, st) in stored.items():
                outs = self.adapters[t].bound(st, k, inr_version, video_id)(prefix)
                named.update({task_output(t, n): o for n, o in zip(input_names("nvp", len(outs)), outs)})
        result = answer_arrays(named, video_id, "NVP prefix")
        result[FRAME_INDICES] = idx
        if self.frame_size:
            result[FRAME_SIZE] = np.asarray(size, dtype=np.int64)
        self.log(f"{s.group}: {len(idx)} frame(s) of '{video_id}' to exit {k} for {len(stored)} tasks in "
                 f"{1000 * (time.perf_counter() - t0):.1f} ms")
        return result

    def close(self) -> None:
        self.inrs.clear()
        for a in self.adapters.values():
            a.cache.clear()


def group_feature_names(task: str, names: Sequence[str]) -> dict[str, str]:
    """A task's tail inputs (``features``, ...) -> the group ensemble's tensors carrying them."""
    return {n: task_output(task, n) for n in names}
