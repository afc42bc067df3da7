"""Action recognition: class logits per clip of 32 consecutive frames (one sample = one clip), scored and served
as classification is."""
from __future__ import annotations

from typing import Any

from .base import Task, register_kind, register_task
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

    def samples(self, task: Task, num_frames: int, max_samples: int | None) -> list[list[int]]:
        """``task.clip``-frame windows at stride 8: all of them, or the first ``max_samples``."""
        if num_frames < task.clip:
            raise ValueError(f"{task.name} needs {task.clip} consecutive frames; this video has {num_frames}")
        starts = list(range(0, num_frames - task.clip + 1, 8))[:max_samples]
        return [list(range(s, s + task.clip)) for s in starts]

    def raw_stability(self, raw: Any) -> dict[str, float] | None:
        return None  # one clip per video: nothing to be steady over

    def label_names(self) -> list[str]:
        from torchvision.models.video import R3D_18_Weights  # Kinetics-400 names ship with torchvision

        return list(R3D_18_Weights.KINETICS400_V1.meta["categories"])


register_task("i3d_r50", "action", "conv3d")
register_task("slowfast_r50", "action", "conv3d")
