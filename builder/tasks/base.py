"""Task kinds and tasks.

A :class:`TaskKind` says what a model's answer is and how it is read: its served outputs, its scoring protocol
against the raw frames' output, its post-processing step on Triton, its labels and its frame protocol. A
:class:`Task` is a registered backbone read as one kind (``effnet_lite0`` = the EfficientNet-Lite0 backbone as a
classifier). Kinds register with :func:`register_kind`, tasks with :func:`register_task`; nothing outside a kind's
file switches on which kind it is.

Importing this package needs neither torch nor torchvision (the thin clients read the task table): the scoring
and label code imports them where it runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from ..tensor_spec import TensorSpec
from ..triton.serving import RequestError
from ..triton.task_serving import SELECTED
from ..triton.wire import FRAME_INDICES

if TYPE_CHECKING:
    from ..triton.pipelines import RepoConfig

__all__ = ["TaskKind", "Task", "Scorer", "register_kind", "get_kind", "list_kinds", "register_task", "get_task",
           "TASKS", "class_names", "request_array", "selected_frames", "label_array", "read_labels", "cat_outputs",
           "take_rows", "runs"]

# a path's output and the raw frames' output -> the task's scores; ``accuracy`` is its metric in [0, 1]
Scorer = Callable[[Any, Any], dict[str, float]]


class TaskKind:
    """What one kind of task answers and how it is measured and served (one instance per kind, registered)."""

    name: ClassVar[str]
    metric: ClassVar[str]  # what ``accuracy`` measures (text and plots)
    model_outputs: ClassVar[tuple[str, ...]]  # the backbone's (and tail's) raw outputs, one ONNX output each
    answers: ClassVar[tuple[TensorSpec, ...]]  # what the post step answers besides passing the raw outputs on
    clip: ClassVar[int] = 8  # frames per evaluation sample
    video: ClassVar[bool] = False  # a sample is ``clip`` consecutive frames read as one video (else single frames)
    has_logits: ClassVar[bool] = False  # class logits: the adapter's task loss and joint mode's task term need them
    frame_size: ClassVar[bool] = False  # the post step needs the video's (height, width)
    post_on_device: ClassVar[bool] = False  # the post step runs a model, on the instance's device
    served: ClassVar[bool] = True  # build-repo writes ensembles for it
    answer: ClassVar[str]  # what the answer is ("labels", "boxes", "captions"): the client command that reads it

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"

    # --- frames ---

    def protocol_frames(self, num_frames: int, count: int, seed: int = 0) -> list[int]:
        """The evaluation protocol's frames: ``count`` uniformly spaced ones (seed 000 §1.1)."""
        from ..selection import uniform_frames

        return uniform_frames(num_frames, count, seed)

    default_train_frames: ClassVar[str] = "uniform:25%"  # adapt --train-frames: a quarter of the frames, spread

    def samples(self, task: Task, frames: int | Sequence[int], max_samples: int | None) -> list[list[int]]:
        """Training samples from ``frames`` (a frame count: all of them; else the allowed frame indices): every
        frame when ``max_samples`` is None, else at most that many, evenly spread."""
        allowed = _frame_list(frames)
        step = 1 if max_samples is None else max(1, -(-len(allowed) // max_samples))
        return [[i] for i in allowed[::step]]

    def units(self, task: Task, frames: Sequence[int]) -> list[list[int]]:
        """``frames`` cut into what the model reads at once, without overlap (here: single frames): how the frames
        a model never trained on are scored."""
        return [[i] for i in sorted(set(frames))]

    # --- outputs and scores ---

    def post_outputs(self) -> tuple[str, ...]:
        """The post step's outputs: the answer, then the frame indices and the raw outputs passed through. (A tensor
        that is both an ensemble output and another step's input is not forwarded when a client leaves it out of
        the requested outputs, so the post step re-emits them rather than the ensemble tapping them.)"""
        return (*(a.name for a in self.answers), FRAME_INDICES, *self.model_outputs)

    def served_outputs(self, out: Any) -> Any:
        """A model's output as the served (ONNX) models give it: :attr:`model_outputs` in order."""
        return out

    def logits(self, out: Any) -> Any:
        raise ValueError(f"{self.name} tasks have no class logits")

    def scorer(self, task: Task, model: Any, random_init: bool) -> Scorer:
        """Scores a path's output against the raw frames' (``builder.protocols``)."""
        raise NotImplementedError

    def raw_stability(self, raw: Any) -> dict[str, float] | None:
        """How steady the raw frames' own answers are over one video's protocol frames (None: not measured)."""
        return None

    def constant_output(self, train_raw: Any, n: int) -> Any:
        """The constant answer a system that learned only the training frames' outputs would give: here the first
        training sample's output, repeated for ``n`` samples (classification overrides it with the majority
        class). Scored like any path, it is the floor an adapter must beat on frames it never trained on."""
        return take_rows(train_raw, [0] * n)

    # --- labels and the served post step ---

    def label_names(self) -> list[str]:
        """Readable names of the kind's classes (empty: none ship with the libraries)."""
        return []

    def num_classes(self, outputs: Mapping[str, Any]) -> int | None:
        """Classes the post step labels, from the raw outputs (``outputs``: name -> example tensor); None when its
        answers carry no labels."""
        return None

    def post_parameters(self, cfg: RepoConfig, task: Task) -> dict[str, str]:
        """The post model's config parameters besides ``task``."""
        return {}

    def post_handler(self, task: Task, params: Mapping[str, str], model_dir: str | Path, *,
                     instance_kind: str = "CPU", device_id: str | int = 0) -> Any:
        """The post step: ``handle(inputs) -> outputs``, reading :attr:`inputs` (see ``task_serving``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Task:
    """A registered backbone read as one kind, named after its model as in the seed's tables."""

    name: str
    kind: TaskKind
    backbone: str  # a registered backbone (builder.backbones)
    adapter: str  # the seed's adapter kind (builder.adapters)
    clip: int  # frames per evaluation sample

    @property
    def video(self) -> bool:
        return self.kind.video

    def protocol_frames(self, num_frames: int, seed: int = 0) -> list[int]:
        return self.kind.protocol_frames(num_frames, self.clip, seed)

    def samples(self, frames: int | Sequence[int], max_samples: int | None) -> list[list[int]]:
        return self.kind.samples(self, frames, max_samples)

    def units(self, frames: Sequence[int]) -> list[list[int]]:
        return self.kind.units(self, frames)

    def _trainable(self, frames: Sequence[int]) -> bool:
        try:
            return bool(self.samples(frames, None))
        except ValueError:
            return False

    def train_frames(self, num_frames: int, selection: str | None = None) -> list[int]:
        """The frames ``adapt`` trains on: ``selection`` (the frame-selection grammar, :mod:`builder.selection`) or
        the kind's default, sorted and unique; an index outside the video is an error."""
        from ..selection import Selection

        text = selection or self.kind.default_train_frames
        idx = sorted(set(Selection.parse(text).frames(num_frames, clip=self.clip, consecutive=self.video)))
        if selection is None and not self._trainable(idx):
            return list(range(num_frames))  # too short to hold out anything: every frame trains (adapt warns)
        if not idx:
            raise ValueError(f"--train-frames {text!r} selects no frame")
        if idx[0] < 0 or idx[-1] >= num_frames:
            raise ValueError(f"--train-frames {text!r} selects frame {idx[-1]}; this video has {num_frames} "
                             f"(0..{num_frames - 1})")
        return idx


_KINDS: dict[str, TaskKind] = {}
TASKS: dict[str, Task] = {}


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: register one instance under ``cls.name``; a duplicate name raises."""
    if cls.name in _KINDS:
        raise ValueError(f"task kind {cls.name!r} is already registered")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> TaskKind:
    if name not in _KINDS:
        raise ValueError(f"unknown task kind {name!r}; choose one of {', '.join(_KINDS)}")
    return _KINDS[name]


def list_kinds() -> list[str]:
    return list(_KINDS)


def register_task(name: str, kind: str, adapter: str, *, backbone: str | None = None,
                  clip: int | None = None) -> Task:
    """Register ``name`` as ``backbone`` (default: the same name) read as ``kind``."""
    if name in TASKS:
        raise ValueError(f"task {name!r} is already registered")
    k = get_kind(kind)
    TASKS[name] = Task(name, k, backbone or name, adapter, clip or k.clip)
    return TASKS[name]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def class_names(task: Task | str, num_classes: int) -> list[str]:
    """Readable labels of the task's ``num_classes`` outputs (:meth:`TaskKind.label_names`); heads the libraries'
    names do not fit (ViT's ImageNet-21k, small test configs) get ``class_<i>``."""
    task = get_task(task) if isinstance(task, str) else task
    names = task.kind.label_names()
    return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]


# --- helpers of the post steps (numpy only) ---

def cat_outputs(outs: Sequence[Any]) -> Any:
    """Model outputs of several batches joined along the batch dim: tensors, or tuples/lists/dicts of them."""
    import torch

    first = outs[0]
    if isinstance(first, dict):
        return {k: cat_outputs([o[k] for o in outs]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(cat_outputs([o[i] for o in outs]) for i in range(len(first)))
    return torch.cat(list(outs))


def take_rows(out: Any, rows: Sequence[int]) -> Any:
    """Rows ``rows`` (batch dim) of a model output with :func:`cat_outputs`' structure."""
    if isinstance(out, dict):
        return {k: take_rows(v, rows) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(take_rows(v, rows) for v in out)
    return out[list(rows)]


def _frame_list(frames: int | Sequence[int]) -> list[int]:
    return list(range(frames)) if isinstance(frames, int) else sorted(set(int(i) for i in frames))


def runs(frames: Sequence[int]) -> list[list[int]]:
    """Sorted unique ``frames`` as maximal runs of consecutive indices."""
    out: list[list[int]] = []
    for i in sorted(set(frames)):
        if out and i == out[-1][-1] + 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def request_array(inputs: Mapping[str, Any], name: str, ndim: int, dtype: Any) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise RequestError(f"missing input '{name}'")
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim or arr.shape[0] < 1:
        raise RequestError(f"'{name}' must have {ndim} dimension(s) and at least one row, got shape {list(arr.shape)}")
    return arr


def selected_frames(inputs: Mapping[str, Any], rows: int | None = None) -> np.ndarray:
    """The selected frame indices; ``rows``: how many answers the model gave (one per frame), when it must match."""
    idx = request_array(inputs, SELECTED, 1, np.int64)
    if rows is not None and len(idx) != rows:
        raise RequestError(f"'{SELECTED}' has {len(idx)} frame(s) but the model answered for {rows}")
    return idx


def label_array(names: Sequence[str]) -> np.ndarray:
    if not names:
        raise ValueError("labels must not be empty")
    return np.array([str(n).encode() for n in names], dtype=object)


def read_labels(params: Mapping[str, str], model_dir: str | Path) -> list[str]:
    """The ``labels.json`` the builder wrote next to a post model."""
    with open(Path(model_dir) / params.get("labels_file", "labels.json"), encoding="utf-8") as f:
        return json.load(f)
