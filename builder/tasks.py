"""Downstream tasks, named after their model as in the seed's tables, and how each one reads a video."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec", "TASKS", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    name: str  # = backbone name
    kind: str  # "classification" | "action" | "detection" | "captioning"
    adapter: str  # adapter kind (builder.adapters)
    clip: int  # frames per evaluation sample: 8 uniformly spaced, or 32 consecutive for action recognition


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("effnet_lite0", "classification", "conv1x1", 8),
    TaskSpec("resnet50", "classification", "conv1x1", 8),
    TaskSpec("clip_rn50", "classification", "conv1x1", 8),
    TaskSpec("vit_b16", "classification", "patch_embed", 8),
    TaskSpec("i3d_r50", "action", "conv3d", 32),
    TaskSpec("slowfast_r50", "action", "conv3d", 32),
    TaskSpec("detr_r50", "detection", "patch_embed", 8),
    TaskSpec("blip", "captioning", "patch_embed", 8),
)}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
