"""Action recognition: class logits per clip of 32 consecutive frames (one sample = one clip), scored and served
as classification is."""
from __future__ import annotations

from typing import Any, Sequence

from .base import Task, _frame_list, register_kind, register_task, runs
from .classification import Classification

__all__ = ["Action"]


@register_kind
class Action(Classification):
    name = "action"
    clip = 32
    video = True

    def protocol_frames(self, num_frames: int, count: int, seed: int = 0) -> list[int]:
        """``count`` consecutive frames from a seeded random start."""
        from ..selection import consecutive_frames

        return consecutive_frames(num_frames, count, seed)

    default_train_frames = "consecutive:50%@0"  # windows need runs of frames: the first half of the video

    def samples(self, task: Task, frames: int | Sequence[int], max_samples: int | None) -> list[list[int]]:
        """``task.clip``-frame windows at stride 8 inside runs of consecutive allowed frames: all of them, or the
        first ``max_samples``."""
        starts = [w[0] for r in runs(_frame_list(frames)) for w in _windows(r, task.clip, 8)]
        if not starts:
            n = frames if isinstance(frames, int) else len(frames)
            raise ValueError(f"{task.name} needs {task.clip} consecutive frames; this video has {n}"
                             + ("" if isinstance(frames, int) else " allowed, in runs shorter than that"))
        return [list(range(s, s + task.clip)) for s in starts[:max_samples]]

    def units(self, task: Task, frames: Sequence[int]) -> list[list[int]]:
        """Non-overlapping ``task.clip``-frame windows inside runs of consecutive ``frames``."""
        return [w for r in runs(frames) for w in _windows(r, task.clip, task.clip)]

    def raw_stability(self, raw: Any) -> dict[str, float] | None:
        return None  # one clip per video: nothing to be steady over

    def label_names(self) -> list[str]:
        from torchvision.models.video import R3D_18_Weights  # Kinetics-400 names ship with torchvision

        return list(R3D_18_Weights.KINETICS400_V1.meta["categories"])


def _windows(run: list[int], size: int, stride: int) -> list[list[int]]:
    return [run[i:i + size] for i in range(0, len(run) - size + 1, stride)]


register_task("i3d_r50", "action", "conv3d")
register_task("slowfast_r50", "action", "conv3d")
