"""Run a real ``tritonserver`` on a model repository: start, wait until ready, stop; and ``serve``, the blocking
front end of ``python -m builder serve``. Where the server comes from and what it needs: :mod:`builder.triton.install`.

By default the model-repository, model-config, shared-memory, trace and logging APIs are *restricted*: gRPC calls need
the header ``triton-grpc-protocol-admin-key: <token>`` and HTTP calls ``admin-key: <token>``, with the token from
``$NVP_TRITON_ADMIN_TOKEN``, else from the file named by ``$NVP_TRITON_ADMIN_TOKEN_FILE`` (which only its owner may
read: a Docker secret, say), else a random one (nobody can call them). Health, metadata, inference and
statistics stay open. The token reaches tritonserver through its environment, not its command line, which every
local user can read (:func:`builder.triton.install.argv_secret_shim`; without a C compiler it is a flag, with a
warning). ``model_control="none"`` (the default): models cannot be loaded or unloaded at run time;
``"explicit"`` (what ``serve`` uses): every model is loaded at start and the admin can reload one, which is how
:class:`StubSupervisor` brings back a model whose Python-backend stub died.
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

from .guard import DEFAULT_MAX_BODY_MB
from .install import (SECRET_ENV, SECRET_PLACEHOLDER, TritonServerError, argv_secret_shim, locate_tritonserver,
                      prepare_python_backend, server_env)

__all__ = [
    "ADMIN_KEY",
    "ADMIN_TOKEN_ENV",
    "ADMIN_TOKEN_FILE_ENV",
    "DEFAULT_RESTRICTED",
    "StubSupervisor",
    "TritonServer",
    "free_port",
    "serve",
]

ADMIN_KEY = "admin-key"
ADMIN_TOKEN_ENV = "NVP_TRITON_ADMIN_TOKEN"
ADMIN_TOKEN_FILE_ENV = "NVP_TRITON_ADMIN_TOKEN_FILE"
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


def _token_from_file() -> str:
    """The token in ``$NVP_TRITON_ADMIN_TOKEN_FILE`` ("" when unset); a file others may read is refused."""
    name = os.environ.get(ADMIN_TOKEN_FILE_ENV)
    if not name:
        return ""
    path = Path(name)
    try:
        if path.stat().st_mode & 0o077:
            raise ValueError(f"the admin token file {path} may be read by other users (chmod 600 it)")
        return path.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the admin token file {path}: {e.strerror}") from None


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
        model_control: str = "none",
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
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', not {model_control!r}")
        self.model_control = model_control
        token = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or _token_from_file()
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
    def command(self, backend_dir: Path | None = None, *, hide_token: bool = False) -> list[str]:
        """tritonserver's argv; with ``hide_token`` the admin token is the placeholder the preload shim fills."""
        h = self.host
        cmd = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir or self.install.backend_dir}",
            f"--model-control-mode={self.model_control}",
            *(["--load-model=*"] if self.model_control == "explicit" else []),
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
            key = SECRET_PLACEHOLDER if hide_token else self.admin_token
            rule = f"{','.join(self.restricted)}:{ADMIN_KEY}={key}"
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
        env.pop(ADMIN_TOKEN_ENV, None)  # model.py has no use for it
        shim = argv_secret_shim() if self.restricted else None
        if shim is not None:
            env["LD_PRELOAD"] = f"{shim} {env.get('LD_PRELOAD', '')}".strip()
            env[SECRET_ENV] = self.admin_token
        elif self.restricted:
            print("warning: no C compiler to build the argv shim (set $CC): the admin token is on tritonserver's "
                  "command line, which every local user can read", file=self.echo or sys.stderr)
        auto = any(p == 0 for p in self.requested_ports.values())
        for attempt in range(3 if auto else 1):
            self._pick_ports()
            self._log.clear()
            self._proc = subprocess.Popen(
                self.command(backend_dir, hide_token=shim is not None), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
            self._reader = threading.Thread(target=self._read_log, args=(self._proc.stdout,), daemon=True,
                                            name="tritonserver-log")
            self._reader.start()
            try:
                self._wait_ready()
                if shim is not None:
                    self._check_admin_token()
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
                    if client.is_server_ready(headers=headers, client_timeout=2.0) and self._all_loaded(client):
                        return
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    raise self._fail(f"tritonserver not ready after {self.startup_timeout:.0f} s "
                                     f"(repository {self.repository})")
                time.sleep(0.2)
        finally:
            client.close()

    def _all_loaded(self, client: Any) -> bool:
        """With explicit model control the server can say ready while models it was told to load are still
        loading (seen under load: a stub not yet started after "ready"); then every model must be READY too."""
        if self.model_control != "explicit":
            return True
        models = client.get_model_repository_index(headers=self.admin_headers(), client_timeout=5.0).models
        return bool(models) and all(m.state == "READY" for m in models)

    def _check_admin_token(self) -> None:
        """The token, not the public placeholder, is the key (a preload that fails is only a warning to ld.so)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        probes = {"model-repository": "get_model_repository_index", "logging": "get_log_settings",
                  "trace": "get_trace_settings", "statistics": "get_inference_statistics",
                  "shared-memory": "get_system_shared_memory_status", "metadata": "get_server_metadata"}
        call = next((probes[p] for p in self.restricted if p in probes), None)
        if call is None:
            return
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            getattr(client, call)(headers=self.admin_headers(), client_timeout=10.0)
        except InferenceServerException as e:
            raise self._fail(f"tritonserver does not take the admin token ({e.message()}): the argv shim "
                             f"({SECRET_ENV} via LD_PRELOAD) did not work") from None
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


# --- supervision: a Python-backend stub that dies is noticed and its model loaded again -------------------------

_STUB_BINARY = "triton_python_backend_stub"


def _python_stubs(server_pid: int, repository: Path) -> tuple[dict[int, tuple[str, str, int]], set[int], set[int]]:
    """One look at /proc: the living Python-backend stubs of the tritonserver ``server_pid`` (pid -> (model,
    instance, parent pid), from the stub's argv: ``stub <repo>/<model>/<version>/model.py <shm> <size> <size>
    <server pid> <lib dir> <ipc handle> <instance> ...``), the zombies (dead, not yet collected) and every pid seen
    (one that is exiting has no argv left and is no zombie yet)."""
    living: dict[int, tuple[str, str, int]] = {}
    zombies: set[int] = set()
    present: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        try:
            state, ppid = (proc / "stat").read_text().rpartition(")")[2].split()[:2]  # the "(name)" may hold spaces
            present.add(pid)
            if state == "Z":
                zombies.add(pid)
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):  # gone meanwhile
            continue
        if len(argv) > 8 and Path(os.fsdecode(argv[0])).name == _STUB_BINARY and argv[5] == str(server_pid).encode():
            model = Path(os.fsdecode(argv[1]))
            if model.is_relative_to(repository):
                living[pid] = (model.relative_to(repository).parts[0], os.fsdecode(argv[8]), int(ppid))
    return living, zombies, present


class StubSupervisor:
    """Brings back the models of a running :class:`TritonServer` (``model_control="explicit"``) whose Python-backend
    stub died.

    Triton 2.51's Python backend neither restarts a stub that died (kill -9, an OOM kill) nor reports it: every
    request to the model fails with "Stub process '<instance>' is not healthy" while health and model readiness stay
    200 (r24.10 ``python_be.cc``: "TODO: Implement restart"; readiness follows the stub only from r25.12). Every
    ``interval`` s the supervisor looks at the stubs (found by their argv, which names the server and the model). One
    that turned zombie died unasked: Triton collects the stubs it stops at once, so a zombie seen twice in a row is a
    death (as is a stub that vanished while not tritonserver's own child, which Triton cannot have collected). It
    then unloads that model (model-ready turns false, and so do the ensembles that use it; the server's readiness
    need not: an unloaded model does not count), loads it again through the repository API (with the admin token) and loads whatever was ready
    before and is not now. A failed load is retried with a growing pause; the model stays not-ready meanwhile. What
    it sees and does goes to ``log``; :attr:`events` keeps it (one dict per death).
    """

    def __init__(self, server: TritonServer, *, interval: float = 0.5, unload_timeout: float = 2.0,
                 log: IO[str] | None = None) -> None:
        if server.model_control != "explicit":
            raise ValueError("supervising stubs needs a server started with model_control='explicit'")
        self.server = server
        self.interval = interval
        self.unload_timeout = unload_timeout
        self.log = log or sys.stderr
        self.events: list[dict[str, Any]] = []
        self._known: dict[int, tuple[str, str, int]] = {}  # stubs seen alive: pid -> (model, instance, parent)
        self._handled: set[int] = set()  # zombies already acted on (one stuck unloading stays a zombie)
        self._zombies: set[int] = set()  # zombies at the last look
        self._restore: dict[str, dict[str, Any] | None] = {}  # to load back: model -> its death event, or None
        self._since: dict[str, float] = {}  # model -> when its stub's death was seen
        self._next_try = 0.0
        self._pause = 2.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def _say(self, message: str) -> None:
        try:
            print(f"supervisor: {message}", file=self.log, flush=True)
        except (OSError, ValueError):
            pass

    def start(self) -> StubSupervisor:
        if self.server.pid is not None:  # the stubs as they are now, so one that dies before the first look counts
            self._known.update(_python_stubs(self.server.pid, self.server.repository)[0])
            stubs = ", ".join(f"{instance} (pid {p})" for p, (_, instance, _) in sorted(self._known.items()))
            self._say(f"watching {len(self._known)} Python-backend stub(s): {stubs or 'none'}")
        self._thread = threading.Thread(target=self._run, daemon=True, name="stub-supervisor")
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop; with ``timeout``, wait that long for it (a load in flight ends with the server)."""
        self._stopping.set()
        if self._thread is not None and timeout is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval):
                if not self.server.is_running:
                    return
                try:
                    self.check()
                except Exception as e:  # noqa: BLE001 - keep watching; a server going down ends the loop above
                    if not self._stopping.is_set() and self.server.is_running:
                        self._say(f"check failed: {e}")
        finally:
            if self._client is not None:
                self._client.close()

    def _index(self) -> dict[str, str]:
        models = self._client.get_model_repository_index(headers=self.server.admin_headers(), client_timeout=10.0)
        return {m.name: m.state for m in models.models}

    def check(self) -> list[str]:
        """One look (the thread calls it every ``interval`` s): unload the models whose stub died, then load back
        what should be ready; returns the models loaded."""
        pid = self.server.pid
        if pid is None:
            return []
        if self._client is None:
            import tritonclient.grpc as grpcclient

            self._client = grpcclient.InferenceServerClient(self.server.grpc_url)
        living, zombies, present = _python_stubs(pid, self.server.repository)
        self._known.update(living)
        self._handled &= zombies  # a collected zombie frees its pid for reuse
        # a zombie seen twice: Triton collects the stubs it stops at once, not an interval later
        confirmed, self._zombies = zombies & self._zombies, zombies
        gone = {p for p, (_, _, ppid) in self._known.items() if p not in present and ppid != pid}
        dead: dict[str, list[tuple[int, str]]] = {}
        for z in sorted((confirmed - self._handled) | gone):
            if z in self._known:
                model, instance, _ = self._known[z]
                dead.setdefault(model, []).append((z, instance))
            if z in zombies:
                self._handled.add(z)
        self._known = {p: v for p, v in self._known.items() if p in present and p not in self._handled}
        for model, stubs in dead.items():
            who = ", ".join(f"{instance} (pid {p})" for p, instance in stubs)
            self._say(f"the Python-backend stub of model '{model}' died: {who}; unloading it, then loading it again")
            event: dict[str, Any] = {"model": model, "stubs": [{"pid": p, "instance": i} for p, i in stubs]}
            self.events.append(event)
            since = time.monotonic()
            for name, state in self._index().items():
                if state == "READY" and name != model:
                    self._restore.setdefault(name, None)  # ensembles using it go unavailable with it
            self._restore[model] = event
            self._unload(model)
            event["unloaded_s"] = round(time.monotonic() - since, 3)
            self._since[model] = since
            self._next_try = 0.0
        return self._load_back() if self._restore and time.monotonic() >= self._next_try else []

    def _unload(self, model: str) -> None:
        self._client.unload_model(model, headers=self.server.admin_headers(), client_timeout=30.0)
        deadline = time.monotonic() + self.unload_timeout
        while self._index().get(model) == "UNLOADING":
            if time.monotonic() > deadline:
                # Triton 2.51 never releases the requests that reached the dead stub, so that instance never
                # finishes unloading: a new one loads beside it; the old one goes when the server stops
                self._say(f"'{model}': the dead instance is not unloaded after {self.unload_timeout:.0f} s (it "
                          "holds the requests that reached it, if any); loading a new one beside it")
                return
            time.sleep(0.1)

    def _load_back(self) -> list[str]:
        """Load the models whose stub died, then whatever else was ready before and is not now; on a failure, stop
        and try again after a pause that doubles (up to a minute)."""
        from tritonclient.utils import InferenceServerException

        loaded = []
        died_first = sorted(self._restore, key=lambda m: (self._restore[m] is None, m))
        for model in died_first:
            event = self._restore[model]
            # an ensemble is usually back already: Triton loads it again with the model it uses
            if event is None and self._index().get(model) == "READY":
                del self._restore[model]
                continue
            t0 = time.monotonic()
            try:
                self._client.load_model(model, headers=self.server.admin_headers())
            except InferenceServerException as e:
                if self._stopping.is_set() or not self.server.is_running:
                    return loaded
                self._say(f"loading '{model}' failed, next try in {self._pause:.0f} s: {e.message()}")
                self._next_try = time.monotonic() + self._pause
                self._pause = min(2 * self._pause, 60.0)
                return loaded
            del self._restore[model]
            loaded.append(model)
            if event is not None:
                event["recovered_s"] = round(time.monotonic() - self._since.pop(model), 3)
            self._say(f"'{model}' is loaded again ({time.monotonic() - t0:.1f} s)")
        self._pause = 2.0
        return loaded


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
    max_body_mb: int = DEFAULT_MAX_BODY_MB,
    out: IO[str] | None = None,
) -> dict[str, Any]:
    """Serve ``repository`` until SIGINT/SIGTERM: print the endpoints, block, stop cleanly. Models are loaded
    explicitly and a :class:`StubSupervisor` brings back one whose Python-backend stub dies. With
    ``max_body_mb`` (> 0, the default) the public ports are a :class:`~builder.triton.guard.RequestGuard`
    that refuses larger requests before tritonserver reads them, and tritonserver listens on 127.0.0.1 only; 0
    puts tritonserver on the public ports itself. The server's log and the supervisor's go to stderr. Returns a
    summary (``stub_deaths``: the supervisor's events); raises :class:`TritonServerError` if it cannot start or
    dies."""
    from .guard import RequestGuard

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
    if max_body_mb < 0:
        raise ValueError(f"max_body_mb must be >= 0 (0: no request guard), got {max_body_mb}")
    guarded = max_body_mb > 0
    private = {"grpc_port": 0, "http_port": None if http_port is None else 0,
               "metrics_port": None if metrics_port is None else 0, "host": "127.0.0.1"}
    public = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port, "host": host}
    server = TritonServer(repo, **(private if guarded else public), binary=binary, backend_dir=backend_dir,
                          restricted=restricted, model_control="explicit", log_verbose=log_verbose,
                          startup_timeout=startup_timeout, echo=sys.stderr)
    guard: RequestGuard | TritonServer = server  # what clients reach: the guard, or tritonserver itself
    supervisor = StubSupervisor(server, log=sys.stderr)
    t0 = time.monotonic()
    try:
        server.start()
        started = True
        if guarded:
            up = {k: None if server.ports[k] is None else f"127.0.0.1:{server.ports[k]}" for k in ("http", "metrics")}
            guard = RequestGuard(server.grpc_url, up["http"], upstream_metrics=up["metrics"],
                                 max_bytes=max_body_mb * 2**20, **public).start()
        supervisor.start()
        models = _model_names(repo)
        print(f"Triton {server.install.binary} ready with {len(models)} model(s): {', '.join(models)}", file=out)
        print(f"  gRPC     {guard.grpc_url}", file=out)
        if guard.http_url:
            print(f"  HTTP     http://{guard.http_url}", file=out)
        if guard.metrics_url:
            print(f"  metrics  {guard.metrics_url}", file=out)
        if guarded:
            print(f"  requests over {max_body_mb} MB are refused before tritonserver reads them "
                  "(serve --max-body-mb; tritonserver itself listens on 127.0.0.1)", file=out)
        if restricted:
            how = ("token as given" if not server.admin_token_generated
                   else f"set ${ADMIN_TOKEN_ENV} or ${ADMIN_TOKEN_FILE_ENV} to enable them")
            print(f"  restricted APIs ({', '.join(restricted)}) need header '{ADMIN_KEY}' "
                  f"(gRPC: 'triton-grpc-protocol-{ADMIN_KEY}'); {how}", file=out)
        print("  a model whose Python-backend stub dies is unloaded and loaded again (log on stderr)", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while not stop.wait(0.5):
            if not server.is_running:
                raise TritonServerError(f"tritonserver exited unexpectedly with status {server.returncode}",
                                        server.log_tail())
    finally:
        supervisor.stop()
        if guard is not server:
            guard.stop()
        server.stop()
        supervisor.stop(timeout=5)
        for s, handler in previous.items():
            signal.signal(s, handler)
    name = signal.Signals(received[0]).name if received else "stop"
    return {"stopped_by": name, "seconds": round(time.monotonic() - t0, 3), "grpc": guard.grpc_url,
            "http": guard.http_url, "metrics": guard.metrics_url, "max_body_mb": max_body_mb,
            "models": _model_names(repo),
            "returncode": server.returncode, "stub_deaths": supervisor.events}
