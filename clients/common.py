"""Shared client plumbing: connection, request helpers, error messages, frame arguments.

Clients need tritonclient and numpy only: the names they share with the server come from
:mod:`builder.triton.wire` and the frame grammar from :mod:`builder.selection`, both torch-free (the test suite
imports every client in a fresh interpreter and checks that torch and PyAV stay out)."""
from __future__ import annotations

import argparse
import os
import re
import time
from typing import Any, Callable, Sequence

import numpy as np

from builder.selection import GRAMMAR, Selection, parse_frame_list
from builder.triton.wire import FRAME_SELECTION, PATHS, VIDEO_ID, ensemble_name

__all__ = [
    "DEFAULT_URL",
    "ClientError",
    "add_common_arguments",
    "add_selection_arguments",
    "add_video_arguments",
    "ask",
    "ask_paths",
    "ask_task",
    "describe_answer",
    "report",
    "connect",
    "infer",
    "parse_frames",
    "parse_selection",
    "task_commands",
]

DEFAULT_URL = os.environ.get("NVP_TRITON_URL", "localhost:8001")
# argparse %-formats help strings: the grammar's "P%" must be escaped or every task's --help fails
_SELECTION_HELP = (f"frames to read: {GRAMMAR.replace('%', '%%')}; auto is the task's protocol: 8 uniformly spaced "
                   "frames, or 32 consecutive for action tasks (default auto)")


class ClientError(RuntimeError):
    """A failure to report as one line: bad arguments, unreachable server, or the server's error message."""


def parse_frames(text: str) -> list[int]:
    """``"0,1,2"``, ``"0-7"`` (inclusive) or a mix (``"0-3,8,10-11"``) -> frame indices (argparse type)."""
    try:
        return parse_frame_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_selection(text: str) -> str:
    """A frame selection, checked here and sent as written: the server resolves it against the video (argparse
    type)."""
    try:
        Selection.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad frame selection {text!r}: {e}. Use {GRAMMAR}") from None
    return text


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="Triton gRPC endpoint host:port, or replicas host:port,host:port (requests spread "
                             "round-robin) (default: $NVP_TRITON_URL or localhost:8001)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="request timeout (default 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--video`` and ``--frames``: what every task request names."""
    parser.add_argument("--video", required=True, metavar="ID", help="video ID in the server's store")
    parser.add_argument("--frames", type=parse_selection, default="auto", metavar="SELECTION", help=_SELECTION_HELP)


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--video``, ``--frames`` and ``--path`` of every task command, then the common ones."""
    add_selection_arguments(parser)
    parser.add_argument("--path", choices=(*PATHS, "all"), default="nvp",
                        help="nvp (default), fulldecode or codec ensemble; all: the three side by side")
    parser.add_argument("--collection", metavar="ID",
                        help="the video is a member of D-NeRV collection ID: ask its static ensemble ID_TASK (the "
                             "shared decoder and the collection's adapter as one ONNX model; build-repo "
                             "--collection ID) for the nvp path")
    add_common_arguments(parser)


def task_commands(answer: str, what: str) -> dict[str, str]:
    """One subcommand per served task whose kind answers ``answer`` (``TaskKind.answer``: labels, boxes,
    captions), named after its model as in ``python -m builder adapt``."""
    from builder.tasks import TASKS  # torch-free: the task table only

    return {name: f"{task.kind.name}: {what} from the '{name}' ensemble" for name, task in TASKS.items()
            if task.kind.served and task.kind.answer == answer}


def ask_task(client: Any, url: str, task: str, video_id: str, frames: str, path: str, outputs: Sequence[str],
             timeout: float | None = None, collection: str | None = None) -> dict[str, Any]:
    """One request to a task ensemble (``video_id`` + ``frame_selection``; with ``collection``, the nvp path is the
    collection's static ensemble): the named outputs, plus ``seconds`` and ``model`` (the ensemble asked)."""
    model = ensemble_name(task, path, collection)
    return {**ask(client, url, model, video_id, frames, outputs, timeout), "model": model}


def ask(client: Any, url: str, model: str, video_id: str, frames: str, outputs: Sequence[str],
        timeout: float | None = None) -> dict[str, Any]:
    """One request to an ensemble that takes ``video_id`` + ``frame_selection`` (a task's, or a task group's):
    the named outputs, plus ``seconds``."""
    t0 = time.perf_counter()
    out: dict[str, Any] = infer(
        client, url, model,
        [(VIDEO_ID, np.array([video_id.encode("utf-8")], dtype=np.object_), "BYTES"),
         (FRAME_SELECTION, np.array([frames.encode("utf-8")], dtype=np.object_), "BYTES")],
        outputs, timeout=timeout)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return out


def ask_paths(args: argparse.Namespace, answer: Callable[[Any, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``answer(client, path)`` for ``args.path`` (or every path with ``all``) over one connection."""
    client = connect(args.url)
    try:
        return {p: answer(client, p) for p in (PATHS if args.path == "all" else (args.path,))}
    finally:
        client.close()


def report(args: argparse.Namespace, answers: dict[str, dict[str, Any]],
           describe: Callable[[dict[str, Any]], tuple[str, list[str]]], **summary: Any) -> tuple[str, dict[str, Any]]:
    """A task command's output: per path a header (model, frames, time, then ``describe``'s first item) and
    ``describe``'s lines; the JSON object holds ``summary``, then the one answer or every path's."""
    lines = [line for a in answers.values() for line in describe_answer(args.task, args.video, a, describe)]
    first = next(iter(answers.values()))
    obj = {"task": args.task, "video": args.video, "url": args.url, **summary,
           **({"paths": answers} if len(answers) > 1 else first)}
    return "\n".join(lines), obj


def describe_answer(task: str, video: str, a: dict[str, Any],
                    describe: Callable[[dict[str, Any]], tuple[str, list[str]]]) -> list[str]:
    """One answer as text: a header (task, model, frames, time, then ``describe``'s first item) and its lines."""
    head, body = describe(a)
    return [f"{task} [{a['model']}] on '{video}', {len(a['frames'])} frame(s), {1000 * a['seconds']:.0f} ms{head}",
            *body]


def replica_target(url: str) -> str:
    """``host:port,host:port,...`` (replicas serving one store) as a gRPC target gRPC's own round-robin balancer
    spreads requests over: ``ipv4:ADDR:PORT,...`` (each host resolved here; gRPC's ipv4 scheme takes literals)."""
    import socket

    addrs = []
    for part in url.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ClientError(f"bad replica address {part.strip()!r} in --url {url!r}: give host:port,host:port")
        try:
            addrs.append(f"{socket.gethostbyname(host)}:{port}")
        except OSError as e:
            raise ClientError(f"cannot resolve {host!r} in --url {url!r}: {e}") from None
    return "ipv4:" + ",".join(addrs)


def connect(url: str) -> Any:
    """A ``tritonclient.grpc.InferenceServerClient`` (no request is made yet). ``url`` may name several replicas,
    ``a:8001,b:8001``: requests then go round-robin over the ones that answer (gRPC's ``round_robin`` policy, which
    also skips a replica that stops answering)."""
    import tritonclient.grpc as grpcclient

    try:
        if "," not in url:
            return grpcclient.InferenceServerClient(url)
        size = grpcclient.MAX_GRPC_MESSAGE_SIZE
        return grpcclient.InferenceServerClient(replica_target(url), channel_args=[
            ("grpc.lb_policy_name", "round_robin"), ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size)])
    except ClientError:
        raise
    except Exception as e:  # noqa: BLE001 - bad URL syntax and the like
        raise ClientError(f"cannot connect to Triton at {url}: {e}") from None


def _server_message(exc: Exception, url: str) -> str:
    status = str(exc.status()) if hasattr(exc, "status") and exc.status() else ""
    message = exc.message() if hasattr(exc, "message") else str(exc)
    message = " ".join(str(message).split())
    message = re.sub(r"^\[request id: [^\]]*\]\s*", "", message)
    if status.endswith("UNAVAILABLE") and ("connect" in message.lower() or "socket" in message.lower()):
        return f"cannot reach Triton at {url} (is the server running? start it with 'python -m builder serve')"
    if status.endswith("DEADLINE_EXCEEDED"):
        return f"Triton at {url} did not answer in time"
    if status.endswith("UNAVAILABLE") and ("maximum queue size" in message or "timeout expired" in message):
        # the model's bounded queue (docs/SERVING.md) refused the request: load, not a bad request
        return f"Triton at {url} is busy ({message}); retry later"
    return message or status or "unknown server error"


def infer(client: Any, url: str, model: str, inputs: Sequence[tuple[str, np.ndarray, str]], outputs: Sequence[str],
          *, timeout: float | None = None) -> dict[str, np.ndarray]:
    """One request: ``inputs`` as ``(name, array, datatype)``; returns the named outputs. Server errors become a
    :class:`ClientError` holding the server's message."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    tensors = []
    for name, array, datatype in inputs:
        t = grpcclient.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        tensors.append(t)
    try:
        result = client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                              client_timeout=timeout)
    except InferenceServerException as e:
        raise ClientError(_server_message(e, url)) from None
    return {o: result.as_numpy(o) for o in outputs}
