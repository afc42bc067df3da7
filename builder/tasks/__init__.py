"""Downstream tasks: a registered backbone read as a registered kind (classification, action, detection,
captioning). One file per kind; each registers its kind and the tasks of that kind. Importing this package
loads neither torch nor torchvision."""
from .base import (
    TASKS,
    Scorer,
    Task,
    TaskKind,
    cat_outputs,
    class_names,
    get_kind,
    get_task,
    list_kinds,
    register_kind,
    register_task,
    take_rows,
)
from . import classification, action, detection, captioning  # noqa: E402,F401 - registers the kinds and tasks

__all__ = ["TASKS", "Scorer", "Task", "TaskKind", "cat_outputs", "class_names", "get_kind", "get_task", "list_kinds",
           "register_kind", "register_task", "take_rows"]
