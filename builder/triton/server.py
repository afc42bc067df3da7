"""Run a real ``tritonserver`` on a model repository: start, wait until ready, stop; and ``serve``, the blocking
front end of ``python -m builder serve``. Where the server comes from and what it needs: :mod:`builder.triton.install`.

By default the model-repository, model-config, shared-memory, trace and logging APIs are *restricted*: gRPC calls need
the header ``triton-grpc-protocol-admin-key: <token>`` and HTTP calls ``admin-key: <token>``, with the token from
``$NVP_TRITON_ADMIN_TOKEN`` (a random one when unset, i.e. nobody can call them). Health, metadata, inference and
statistics stay open. ``--model-control-mode=none``: models cannot be loaded or unloaded at run time.
"""
from __future__ import annotations

import collections
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Sequence

from .install import TritonServerError, locate_tritonserver, prepare_python_backend, server_env

__all__ = [
    "ADMIN_KEY",
    "ADMIN_TOKEN_ENV",
    "DEFAULT_RESTRICTED",
    "TritonServer",
    "free_port",
    "serve",
]

ADMIN_KEY = "admin-key"
ADMIN_TOKEN_ENV = "NVP_TRITON_ADMIN_TOKEN"
DEFAULT_RESTRICTED = ("model-repository", "model-config", "shared-memory", "trace", "logging")
_PROTOCOLS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics",
              "trace", "logging")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it if the parent process dies
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, Linux only
        pass


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


class TritonServer:
    """A tritonserver process serving ``repository``; a context manager (start on enter, stop on exit).

    Ports of ``0`` are picked free; ``None`` disables HTTP / metrics. ``restricted`` lists the APIs that need the
    admin header (see the module docstring); ``()`` restricts nothing. The server's log is kept (last
    ``log_lines`` lines, :meth:`log_tail`) and, with ``echo``, copied to that stream as it comes.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        grpc_port: int = 0,
        http_port: int | None = 0,
        metrics_port: int | None = 0,
        host: str = "127.0.0.1",
        binary: str | Path | None = None,
        backend_dir: str | Path | None = None,
        restricted: Sequence[str] = DEFAULT_RESTRICTED,
        admin_token: str | None = None,
        log_verbose: int = 0,
        startup_timeout: float = 120.0,
        exit_timeout: int = 30,  # unloading a dozen Python-backend models on a busy 2-core machine takes > 5 s
        extra_args: Sequence[str] = (),
        echo: IO[str] | None = None,
        log_lines: int = 400,
        die_with_parent: bool = True,
    ) -> None:
        self.repository = Path(repository).resolve()
        bad = [p for p in restricted if p not in _PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad} to restrict; choose from {', '.join(_PROTOCOLS)}")
        self.requested_ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.ports: dict[str, int | None] = dict(self.requested_ports)
        self.host = host
        self.install = locate_tritonserver(binary, backend_dir)
        self.restricted = tuple(restricted)
        token = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or ""
        self.admin_token_generated = not token
        self.admin_token = token or secrets.token_urlsafe(24)
        if not all(c.isalnum() or c in "-_." for c in self.admin_token):
            raise ValueError("the admin token may only hold letters, digits, '-', '_' and '.'")
        self.log_verbose = log_verbose
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.extra_args = tuple(extra_args)
        self.echo = echo
        self.die_with_parent = die_with_parent
        self._log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    # --- endpoints ----------------------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str | None:
        return None if self.ports["http"] is None else f"{_client_host(self.host)}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str | None:
        port = self.ports["metrics"]
        return None if port is None else f"http://{_client_host(self.host)}:{port}/metrics"

    def admin_headers(self, protocol: str = "grpc") -> dict[str, str]:
        """Headers that unlock the restricted APIs (tritonclient ``headers=``)."""
        key = f"triton-grpc-protocol-{ADMIN_KEY}" if protocol == "grpc" else ADMIN_KEY
        return {key: self.admin_token}

    # --- process ------------------------------------------------------------------------------------------------
    def command(self, backend_dir: Path | None = None) -> list[str]:
        h = self.host
        cmd = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir or self.install.backend_dir}",
            "--model-control-mode=none",
            "--disable-auto-complete-config",  # config.pbtxt is authoritative
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
            f"--grpc-address={h}", f"--grpc-port={self.ports['grpc']}",
        ]
        if self.ports["http"] is None:
            cmd.append("--allow-http=false")
        else:
            cmd += [f"--http-address={h}", f"--http-port={self.ports['http']}"]
        if self.ports["metrics"] is None:
            cmd.append("--allow-metrics=false")
        else:
            cmd += ["--allow-metrics=true", f"--metrics-address={h}", f"--metrics-port={self.ports['metrics']}"]
        if self.restricted:
            rule = f"{','.join(self.restricted)}:{ADMIN_KEY}={self.admin_token}"
            cmd.append(f"--grpc-restricted-protocol={rule}")
            if self.ports["http"] is not None:
                cmd.append(f"--http-restricted-api={rule}")
        return [*cmd, *self.extra_args]

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log_tail(self, lines: int = 40) -> str:
        return "".join(list(self._log)[-lines:]).rstrip()

    def _read_log(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self._log.append(line)
            if self.echo is not None:
                try:
                    self.echo.write(line)
                    self.echo.flush()
                except (OSError, ValueError):
                    pass
        stream.close()

    def _pick_ports(self) -> None:
        host = _client_host(self.host)
        taken: set[int] = set()
        for name, port in self.requested_ports.items():
            if port == 0:
                while (p := free_port(host)) in taken:
                    pass
                self.ports[name] = p
            else:
                self.ports[name] = port
            if self.ports[name] is not None:
                taken.add(self.ports[name])  # type: ignore[arg-type]

    def start(self) -> TritonServer:
        """Start and wait until every model is ready; raises :class:`TritonServerError` (with the log tail)."""
        if self.is_running:
            raise TritonServerError("this server is already running")
        if not self.repository.is_dir():
            raise TritonServerError(f"model repository {self.repository} does not exist; build it first "
                                    "('python -m builder build-repo')")
        backend_dir = prepare_python_backend(self.install)
        env = server_env(self.install)
        auto = any(p == 0 for p in self.requested_ports.values())
        for attempt in range(3 if auto else 1):
            self._pick_ports()
            self._log.clear()
            self._proc = subprocess.Popen(
                self.command(backend_dir), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
            self._reader = threading.Thread(target=self._read_log, args=(self._proc.stdout,), daemon=True,
                                            name="tritonserver-log")
            self._reader.start()
            try:
                self._wait_ready()
                return self
            except TritonServerError:
                self.stop()
                in_use = "address already in use" in self.log_tail(400).lower()
                if not (auto and in_use and attempt < 2):  # a port picked free was grabbed meanwhile: retry
                    raise
        raise AssertionError("unreachable")

    def _fail(self, message: str) -> TritonServerError:
        tail = self.log_tail()
        if self.echo is None and tail:
            message = f"{message}; last log lines:\n{tail}"
        return TritonServerError(message, tail)

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        headers = self.admin_headers() if "health" in self.restricted else None
        deadline = time.monotonic() + self.startup_timeout
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                rc = self._proc.poll() if self._proc else -1
                if rc is not None:
                    if self._reader is not None:
                        self._reader.join(timeout=5)
                    raise self._fail(f"tritonserver exited with status {rc} while starting "
                                     f"(repository {self.repository})")
                try:
                    if client.is_server_ready(headers=headers, client_timeout=2.0):
                        return
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    raise self._fail(f"tritonserver not ready after {self.startup_timeout:.0f} s "
                                     f"(repository {self.repository})")
                time.sleep(0.2)
        finally:
            client.close()

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM, then SIGKILL (of its whole process group: the backend stubs too) after ``timeout`` s."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg(proc.pid)
                proc.wait(10)
        self._killpg(proc.pid)  # stubs left behind by a crashed server
        if self._reader is not None:
            self._reader.join(timeout=5)
        return proc.returncode

    @staticmethod
    def _killpg(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- serve: the blocking front end of `python -m builder serve` ------------------------------------------------


def _model_names(repository: Path) -> list[str]:
    return sorted(d.name for d in repository.iterdir() if d.is_dir() and (d / "config.pbtxt").is_file())


def serve(
    repository: str | Path,
    grpc_port: int = 8001,
    http_port: int | None = 8000,
    metrics_port: int | None = 8002,
    *,
    host: str = "127.0.0.1",
    binary: str | Path | None = None,
    backend_dir: str | Path | None = None,
    restricted: Sequence[str] = DEFAULT_RESTRICTED,
    log_verbose: int = 0,
    startup_timeout: float = 300.0,
    out: IO[str] | None = None,
) -> dict[str, Any]:
    """Serve ``repository`` until SIGINT/SIGTERM: print the endpoints, block, stop cleanly. The server's log goes
    to stderr. Returns a summary; raises :class:`TritonServerError` if it cannot start or dies."""
    out = out or sys.stdout
    repo = Path(repository)
    if not repo.is_dir() or not _model_names(repo):
        raise TritonServerError(f"no models in {repo}: build the repository first ('python -m builder build-repo')")
    stop = threading.Event()
    received: list[int] = []
    started = False

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()
        if not started:  # still starting: abandon the start (the finally below stops the process)
            raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()  # signal handlers need the main thread
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    server = TritonServer(repo, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, host=host,
                          binary=binary, backend_dir=backend_dir, restricted=restricted, log_verbose=log_verbose,
                          startup_timeout=startup_timeout, echo=sys.stderr)
    t0 = time.monotonic()
    try:
        server.start()
        started = True
        models = _model_names(repo)
        print(f"Triton {server.install.binary} ready with {len(models)} model(s): {', '.join(models)}", file=out)
        print(f"  gRPC     {server.grpc_url}", file=out)
        if server.http_url:
            print(f"  HTTP     http://{server.http_url}", file=out)
        if server.metrics_url:
            print(f"  metrics  {server.metrics_url}", file=out)
        if restricted:
            how = (f"set ${ADMIN_TOKEN_ENV} to enable them" if server.admin_token_generated
                   else f"token from ${ADMIN_TOKEN_ENV}")
            print(f"  restricted APIs ({', '.join(restricted)}) need header '{ADMIN_KEY}' "
                  f"(gRPC: 'triton-grpc-protocol-{ADMIN_KEY}'); {how}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while not stop.wait(0.5):
            if not server.is_running:
                raise TritonServerError(f"tritonserver exited unexpectedly with status {server.returncode}",
                                        server.log_tail())
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    name = signal.Signals(received[0]).name if received else "stop"
    return {"stopped_by": name, "seconds": round(time.monotonic() - t0, 3), "grpc": server.grpc_url,
            "http": server.http_url, "metrics": server.metrics_url, "models": _model_names(repo),
            "returncode": server.returncode}
