"""Thin tritonclient.grpc clients of the served models: ``python -m clients TASK ...``.

Each task is a module exposing ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> (text, obj)``,
listed in :data:`TASKS`; :mod:`clients.__main__` builds one subcommand per task. Add a task by writing its module
and adding it here.
"""
from __future__ import annotations

__all__ = ["TASKS"]

TASKS = ("decode",)  # module names under clients/
