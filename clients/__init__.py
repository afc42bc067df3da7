"""Thin tritonclient.grpc clients of the served models: ``python -m clients TASK ...``.

Each module listed in :data:`TASKS` exposes ``COMMANDS`` (subcommand name -> help), ``add_arguments(parser,
name)`` and ``run(args) -> (text, obj)`` (``args.task`` holds the subcommand); :mod:`clients.__main__` builds one
subcommand per command. ``decode`` serves frames; ``classify`` one command per classification/action task.
"""
from __future__ import annotations

__all__ = ["TASKS"]

TASKS = ("decode", "classify", "ready")  # module names under clients/
