"""Downstream tasks, named after their model as in the seed's tables, and how each one reads a video."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec", "TASKS", "SERVED_KINDS", "get_task", "class_names"]


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

SERVED_KINDS = ("classification", "action", "detection", "captioning")  # tasks with Triton ensembles


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def class_names(task: TaskSpec | str, num_classes: int) -> list[str]:
    """Readable labels of the task's ``num_classes`` outputs: ImageNet-1k (classifiers; CLIP classifies zero-shot
    over the same names), Kinetics-400 (action) and COCO (detection: DETR's 91 category ids, "no object" excluded)
    names ship with torchvision; other heads (ViT's ImageNet-21k, small test configs) get ``class_<i>``."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    from torchvision.models.video import R3D_18_Weights

    task = get_task(task) if isinstance(task, str) else task
    names: list[str] = []
    if task.kind == "classification":
        names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    elif task.kind == "action":
        names = list(R3D_18_Weights.KINETICS400_V1.meta["categories"])
    elif task.kind == "detection":  # index = COCO category id, as DETR's id2label (0 and gaps are "N/A")
        names = ["N/A" if n == "__background__" else n
                 for n in FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]]
    return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]
