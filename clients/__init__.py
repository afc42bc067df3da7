"""Thin tritonclient.grpc clients of the served models: ``python -m clients TASK ...``.

Each module listed in :data:`TASKS` exposes ``COMMANDS`` (subcommand name -> help), ``add_arguments(parser,
name)`` and ``run(args) -> (text, obj)`` (``args.task`` holds the subcommand); :mod:`clients.__main__` builds one
subcommand per command. ``decode`` serves frames; ``classify``, ``detect`` and ``caption`` one command per served
task of their kind (labels, boxes, captions); ``multi`` every task of a multi-task ensemble in one request.
"""
from __future__ import annotations

__all__ = ["TASKS"]

TASKS = ("decode", "classify", "detect", "caption", "multi", "ready")  # module names under clients/
