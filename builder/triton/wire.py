"""Names on the wire: the served models, the paths of a task and the tensors clients send and read.

Both sides import them from here: the repository builder and the served models (:mod:`builder.triton`), and the
thin clients (:mod:`clients`). Pure constants, no torch (nor numpy)::

    decode              video_id TYPE_STRING [1], frame_indices TYPE_INT64 [-1]  ->  frames TYPE_FP32 [-1, 3, -1, -1]
    <task>, <task>_fulldecode, <task>_codec
                        video_id TYPE_STRING [1], frame_selection TYPE_STRING [1]  ->  the task kind's answer
                        (``frame_selection``'s grammar: :mod:`builder.selection`)
    <group> (build-repo --multi GROUP=TASK1,TASK2)
                        video_id, frame_selection  ->  every task's answer, named ``<task>.<output>``
"""
from __future__ import annotations

__all__ = [
    "BOXES",
    "BOX_FRAMES",
    "CAPTION",
    "CAPTIONS",
    "DECODE_MODEL",
    "FRAMES",
    "FRAME_INDICES",
    "FRAME_LABELS",
    "FRAME_SCORES",
    "FRAME_SELECTION",
    "LABELS",
    "PATHS",
    "SCORES",
    "VIDEO_ID",
    "ensemble_name",
    "task_output",
]

# request tensors
VIDEO_ID = "video_id"  # one store ID (BYTES)
FRAME_INDICES = "frame_indices"  # decode: the frames asked for; task answers: the frames read
FRAME_SELECTION = "frame_selection"  # tasks: which frames to read (BYTES)

# the decode model and its answer
DECODE_MODEL = "decode"
FRAMES = "frames"

# a task's three ensembles: the product (INR prefix + adapter + tail) and its two baselines at equal storage
PATHS = ("nvp", "fulldecode", "codec")

# what the task kinds answer (which kind answers which: task_serving.POST_OUTPUTS)
LABELS = "labels"
SCORES = "scores"
FRAME_LABELS = "frame_labels"
FRAME_SCORES = "frame_scores"
BOXES = "boxes"
BOX_FRAMES = "box_frames"
CAPTION = "caption"
CAPTIONS = "captions"


def ensemble_name(task: str, path: str = "nvp", collection: str | None = None) -> str:
    """The served model of ``task``'s ``path``: the task's own name for ``nvp``, ``<task>_<path>`` for a baseline;
    with ``collection``, its nvp path is the collection's static ensemble ``<collection>_<task>``."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    if path != "nvp":
        return f"{task}_{path}"
    return f"{collection}_{task}" if collection else task


def task_output(task: str, name: str) -> str:
    """A multi-task ensemble's name for ``task``'s tensor ``name`` (``<task>.<name>``): every task of the group
    answers under its own prefix (``effnet_lite0.labels``, ``mobilenet_v2.labels``)."""
    return f"{task}.{name}"
