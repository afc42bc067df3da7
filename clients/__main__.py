"""``python -m clients TASK ...``: call a model served by Triton (see ``--help`` of each task).

Output follows the builder CLI: a readable summary on stdout (with ``--json``, one JSON object as the last line);
errors, including the server's (unknown video, bad frames), are one line on stderr and exit status 1
(``NVP_DEBUG=1`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from builder.cliutil import run_command

from . import TASKS
from .common import ClientError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clients", description="Clients of the NVP models served by Triton.")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in TASKS:
        module = importlib.import_module(f".{name}", __package__)
        sp = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), (ClientError, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
