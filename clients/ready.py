"""``python -m clients ready``: wait until the Triton server answers and its models are ready; list them."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import ClientError, add_common_arguments, connect

__all__ = ["COMMANDS", "add_arguments", "expected_models", "run"]

COMMANDS = {"ready": "wait for the server to be ready (--wait S) and list its models"}


def add_arguments(parser: argparse.ArgumentParser, name: str = "ready") -> None:
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="keep trying for up to S seconds (default 0: ask once)")
    parser.add_argument("--repository", type=Path, default=None, metavar="DIR",
                        help="also require every model of this model repository to be ready (a health check: "
                             "the server's own readiness says ready while a model that was unloaded, e.g. one "
                             "'serve' reloads after its stub died, is not loaded)")
    add_common_arguments(parser)


def expected_models(repository: Path) -> list[str]:
    """The models of a model repository: its folders with a ``config.pbtxt``."""
    if not repository.is_dir():
        raise ClientError(f"{repository} is not a model repository folder (build one with 'python -m builder "
                          "build-repo')")
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def _not_ready(client: Any, expected: list[str]) -> list[str] | None:
    """None when the server is ready and so is every expected model; else what is not (empty: the server)."""
    try:
        if not client.is_server_ready():
            return []
        return [m for m in expected if not client.is_model_ready(m)] or None
    except Exception:  # noqa: BLE001 - not listening yet
        return []


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    expected = expected_models(args.repository) if getattr(args, "repository", None) is not None else []
    client = connect(args.url)
    deadline = time.monotonic() + max(0.0, args.wait)
    try:
        while (missing := _not_ready(client, expected)) is not None:
            if time.monotonic() >= deadline:
                what = f"models not ready: {', '.join(missing)}" if missing else "start it with 'python -m builder serve'"
                raise ClientError(f"Triton at {args.url} is not ready ({what})")
            time.sleep(1.0)
        models = sorted(m["name"] for m in client.get_model_repository_index(as_json=True).get("models", [])
                        if m.get("state") == "READY")
    except ClientError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. the repository index is restricted: readiness is still known
        models = expected
        if "admin" not in str(e).lower() and "restricted" not in str(e).lower() and "unavailable" not in str(e).lower():
            raise ClientError(f"Triton at {args.url}: {' '.join(str(e).split())}") from None
    finally:
        client.close()
    text = f"Triton at {args.url} is ready" + (f": {', '.join(models)}" if models else "")
    return text, {"url": args.url, "ready": True, "models": models}
