"""``python -m clients ready``: wait until the Triton server answers and its models are ready; list them."""
from __future__ import annotations

import argparse
import time
from typing import Any

from .common import ClientError, add_common_arguments, connect

__all__ = ["COMMANDS", "add_arguments", "run"]

COMMANDS = {"ready": "wait for the server to be ready (--wait S) and list its models"}


def add_arguments(parser: argparse.ArgumentParser, name: str = "ready") -> None:
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="keep trying for up to S seconds (default 0: ask once)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    client = connect(args.url)
    deadline = time.monotonic() + max(0.0, args.wait)
    try:
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() >= deadline:
                raise ClientError(f"Triton at {args.url} is not ready (start it with 'python -m builder serve')")
            time.sleep(1.0)
        models = sorted(m["name"] for m in client.get_model_repository_index(as_json=True).get("models", [])
                        if m.get("state") == "READY")
    except ClientError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. the repository index is restricted: readiness is still known
        models = []
        if "admin" not in str(e).lower() and "restricted" not in str(e).lower() and "unavailable" not in str(e).lower():
            raise ClientError(f"Triton at {args.url}: {' '.join(str(e).split())}") from None
    finally:
        client.close()
    text = f"Triton at {args.url} is ready" + (f": {', '.join(models)}" if models else "")
    return text, {"url": args.url, "ready": True, "models": models}
