"""The output contract shared by ``python -m builder`` and ``python -m clients``.

A command returns ``(text, obj)``: the text goes to stdout and, with ``--json``, ``obj`` as one JSON object on the
last line. Expected failures are one line on stderr (and ``{"error": ...}`` with ``--json``), exit status 1;
``NVP_DEBUG=1`` re-raises them for a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_command"]


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite_json(o: Any) -> Any:
    """NaN/inf (e.g. mAP without reference boxes) as null: strict JSON has no NaN, and json.dumps never hands
    plain floats to ``default``."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v) for v in o]
    return o


def run_command(args: argparse.Namespace, errors: tuple[type[BaseException], ...]) -> int:
    as_json = getattr(args, "json", False)
    try:
        text, obj = args.func(args)
    except errors as e:
        if os.environ.get("NVP_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": msg}))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(text)
    if as_json:
        print(json.dumps(finite_json(obj), default=_json_default, allow_nan=False))
    return 0
