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
    for module_name in TASKS:
        module = importlib.import_module(f".{module_name}", __package__)
        for name, help_text in module.COMMANDS.items():
            sp = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0] + "\n\n" + help_text,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
            module.add_arguments(sp, name)
            sp.set_defaults(func=module.run, task=name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), (ClientError, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
