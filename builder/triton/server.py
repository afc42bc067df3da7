"""Run a real ``tritonserver`` on a model repository: locate it, prepare its Python backend, start, wait, stop.

Locally the server is the one inside the ``nvidia-pytriton`` wheel
(``<site-packages>/pytriton/tritonserver/bin/tritonserver``, Triton 2.51 = NGC 24.10, with the Python backend and
ensembles, no onnxruntime/TensorRT backends). It needs:

- the Python backend stub for this interpreter's version (``python_backend_stubs/3.11/triton_python_backend_stub``)
  next to ``libtriton_python.so``: :func:`prepare_python_backend` copies it there once (or, if site-packages is
  read-only, builds a private backend directory under ``$XDG_CACHE_HOME/nvp``);
- ``LD_LIBRARY_PATH`` including ``<site-packages>/nvidia_pytriton.libs`` (libtritonserver, libcudart, ...);
- this virtualenv's ``bin`` first on ``PATH``: the stub runs ``model.py`` with the ``python`` it finds there (it
  ignores ``PYTHONPATH``), which is how ``model.py`` imports ``builder``.

Elsewhere (the NGC image) pass ``binary=`` / ``$NVP_TRITONSERVER`` (backends default to ``<prefix>/backends``).

By default the model-repository, model-config, shared-memory, trace and logging APIs are *restricted*: gRPC calls need
the header ``triton-grpc-protocol-admin-key: <token>`` and HTTP calls ``admin-key: <token>``, with the token from
``$NVP_TRITON_ADMIN_TOKEN`` (a random one when unset, i.e. nobody can call them). Health, metadata, inference and
statistics stay open. ``--model-control-mode=none``: models cannot be loaded or unloaded at run time.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import filecmp
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

__all__ = [
    "ADMIN_KEY",
    "ADMIN_TOKEN_ENV",
    "DEFAULT_RESTRICTED",
    "TritonInstall",
    "TritonServer",
    "TritonServerError",
    "add_build_repo_arguments",
    "add_serve_arguments",
    "free_port",
    "locate_perf_analyzer",
    "locate_tritonserver",
    "prepare_python_backend",
    "run_build_repo",
    "run_serve",
    "serve",
    "server_env",
]

ADMIN_KEY = "admin-key"
ADMIN_TOKEN_ENV = "NVP_TRITON_ADMIN_TOKEN"
BINARY_ENV = "NVP_TRITONSERVER"
DEFAULT_RESTRICTED = ("model-repository", "model-config", "shared-memory", "trace", "logging")
_PROTOCOLS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics",
              "trace", "logging")
_STUB = "triton_python_backend_stub"


class TritonServerError(RuntimeError):
    """tritonserver could not be found, prepared, started or reached. ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


# --- locating and preparing the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    lib_dirs: tuple[Path, ...] = ()  # prepended to LD_LIBRARY_PATH
    pytriton_dir: Path | None = None  # <site-packages>/pytriton/tritonserver when bundled with nvidia-pytriton


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")  # no import: pytriton's __init__ is heavy
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_tritonserver(binary: str | Path | None = None, backend_dir: str | Path | None = None) -> TritonInstall:
    """The tritonserver to run: ``binary`` or ``$NVP_TRITONSERVER`` if given, else the one in nvidia-pytriton,
    else ``tritonserver`` on ``PATH`` (e.g. ``/opt/tritonserver/bin`` in the NGC image)."""
    explicit = binary or os.environ.get(BINARY_ENV)
    pkg = _pytriton_root()
    bundled = pkg / "tritonserver" if pkg else None
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TritonServerError(f"tritonserver binary {path} does not exist or is not executable")
    elif bundled and (bundled / "bin" / "tritonserver").is_file():
        path = bundled / "bin" / "tritonserver"
    elif shutil.which("tritonserver"):
        path = Path(shutil.which("tritonserver"))  # type: ignore[arg-type]
    else:
        raise TritonServerError("no tritonserver found: install nvidia-pytriton (make setup) or set "
                                f"${BINARY_ENV} to a tritonserver binary")
    path = path.resolve()
    if bundled and path == (bundled / "bin" / "tritonserver").resolve():
        libs = bundled.parent.parent / "nvidia_pytriton.libs"
        return TritonInstall(path, Path(backend_dir) if backend_dir else bundled / "backends",
                             (libs,) if libs.is_dir() else (), bundled)
    return TritonInstall(path, Path(backend_dir) if backend_dir else path.parent.parent / "backends")


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "nvp"


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.is_file() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _install_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (concurrent callers are fine), executable."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_python_backend(install: TritonInstall) -> Path:
    """Make sure the Python backend under ``install`` has a stub for this interpreter; return the directory to
    pass as ``--backend-directory``. Idempotent. Servers not from nvidia-pytriton are used as they are."""
    if install.pytriton_dir is None:
        return install.backend_dir
    stub = install.pytriton_dir / "python_backend_stubs" / _python_tag() / _STUB
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton ships no Python backend stub for Python {_python_tag()} "
                                f"(looked for {stub})")
    python_dir = install.backend_dir / "python"
    if not (python_dir / "libtriton_python.so").is_file():
        raise TritonServerError(f"no Python backend in {install.backend_dir} (missing python/libtriton_python.so)")
    if _same_file(stub, python_dir / _STUB):
        return install.backend_dir
    try:
        _install_copy(stub, python_dir / _STUB)
        return install.backend_dir
    except OSError:
        pass  # read-only site-packages: assemble a private backend directory instead
    cache = _cache_dir() / f"triton-backends-py{_python_tag()}"
    private = cache / "python"
    private.mkdir(parents=True, exist_ok=True)
    for item in python_dir.iterdir():
        if item.name == _STUB or item.name.startswith((".", "__pycache__")):
            continue
        link = private / item.name
        if not (link.is_symlink() and link.resolve() == item.resolve()):
            tmp = private / f".{item.name}.{secrets.token_hex(4)}"
            tmp.symlink_to(item.resolve())
            os.replace(tmp, link)
    if not _same_file(stub, private / _STUB):
        _install_copy(stub, private / _STUB)
    return cache


def _libpython_dirs() -> list[Path]:
    """The directory of *this* interpreter's ``libpython3.X.so``. The stub links ``libpython3.X.so.1.0`` by name;
    without this it may load the system's copy (e.g. Debian's 3.11.2), whose ABI differs from the stdlib extension
    modules of the interpreter actually running (e.g. pyenv's 3.11.7: ``_ssl``: undefined symbol)."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).is_file():
        return [Path(libdir)]
    return []


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: its libraries on ``LD_LIBRARY_PATH`` and this interpreter's ``bin`` (the
    virtualenv's) first on ``PATH``, so the Python backend stub runs model.py with this environment."""
    env = dict(os.environ if base is None else base)

    def prepend(var: str, items: Sequence[str]) -> None:
        old = [p for p in env.get(var, "").split(os.pathsep) if p and p not in items]
        env[var] = os.pathsep.join([*items, *old])

    prepend("LD_LIBRARY_PATH", [*(str(p) for p in _libpython_dirs()), *(str(p) for p in install.lib_dirs)])
    prepend("PATH", [str(Path(sys.executable).parent)])  # not resolved: a venv's bin holds symlinks to python
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def locate_perf_analyzer() -> tuple[Path, dict[str, str]]:
    """``perf_analyzer`` from the tritonclient wheel and an environment it runs in: it links ``libb64.so.0d`` and
    ``libcudart.so.12``, which nvidia_pytriton.libs holds under hashed names, so they are symlinked into a cache
    directory put on ``LD_LIBRARY_PATH``. Pass ``-H triton-grpc-protocol-admin-key:<token>`` for restricted APIs."""
    exe = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent)) or shutil.which("perf_analyzer")
    if not exe:
        raise TritonServerError("perf_analyzer not found (it ships in the tritonclient wheel)")
    install = locate_tritonserver()
    env = server_env(install)
    libdir = _cache_dir() / "perf-analyzer-libs"
    libdir.mkdir(parents=True, exist_ok=True)
    for libs in install.lib_dirs:
        for want, prefix in (("libb64.so.0d", "libb64-"), ("libcudart.so.12", "libcudart-")):
            found = sorted(libs.glob(f"{prefix}*"))
            if found and not (libdir / want).exists():
                tmp = libdir / f".{want}.{secrets.token_hex(4)}"
                tmp.symlink_to(found[0])
                os.replace(tmp, libdir / want)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return Path(exe), env


# --- the server process ---------------------------------------------------------------------------------------


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


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 = pick a free one), got {value}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``python -m builder serve`` (the caller adds ``--json``)."""
    parser.add_argument("--repo", type=Path, default=Path("model_repository"), metavar="DIR",
                        help="model repository to serve (default: model_repository, from build-repo)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001; 0 = free port)")
    parser.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000; 0 = free port)")
    parser.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)")
    parser.add_argument("--no-http", action="store_true", help="serve gRPC only")
    parser.add_argument("--tritonserver", type=Path, metavar="PATH",
                        help=f"tritonserver binary (default: ${BINARY_ENV}, else the one in nvidia-pytriton)")
    parser.add_argument("--backend-directory", type=Path, metavar="DIR",
                        help="Triton backends directory (default: next to the binary)")
    parser.add_argument("--unrestricted", action="store_true",
                        help="leave the model-repository/model-config/shared-memory/trace/logging APIs open "
                             f"(default: they need the '{ADMIN_KEY}' header with ${ADMIN_TOKEN_ENV})")
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver verbose log level (default 0)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S",
                        help="seconds to wait for every model to be ready (default 300)")
    return parser


def run_serve(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Run ``serve`` from parsed :func:`add_serve_arguments` flags; returns (text, JSON object) like CLI commands."""
    summary = serve(
        args.repo, args.grpc_port, None if args.no_http else args.http_port, args.metrics_port, host=args.host,
        binary=args.tritonserver, backend_dir=args.backend_directory,
        restricted=() if args.unrestricted else DEFAULT_RESTRICTED, log_verbose=args.log_verbose,
        startup_timeout=args.startup_timeout)
    return f"tritonserver stopped ({summary['stopped_by']})", summary


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_build_repo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``python -m builder build-repo``; the store comes from the caller's ``--store`` (or the default)."""
    from ..tasks import TASKS

    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help=f"tasks to serve ({', '.join(TASKS)}); each gets an NVP ensemble named after it plus "
                             "<task>_fulldecode and <task>_codec baselines (default: every task some stored video was "
                             "adapted for; none -> only the decode model)")
    parser.add_argument("--layer", type=_key_value, action="append", default=[], metavar="TASK=LAYER",
                        help="injection layer of a task's tail (default: the layer most videos chose in adapt)")
    parser.add_argument("--weights", type=_key_value, action="append", default=[], metavar="TASK=FILE",
                        help="backbone weights file of a task (default: the family's file, see docs/BACKBONES.md); "
                             "TASK=random: seeded random weights, as 'adapt --random-weights' uses")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random weights for every task (plumbing checks only)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the fulldecode and codec ensembles")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="classification/action: labels returned per video (default 5)")
    parser.add_argument("--score-threshold", type=float, default=0.5, metavar="P",
                        help="detection: boxes scoring above P are returned (default 0.5, DETR's own)")
    parser.add_argument("--max-frames", type=int, default=64, metavar="N",
                        help="frames per request and largest ONNX batch (default 64)")
    parser.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                        help="dynamic batching: max wait for other requests, microseconds (default 2000)")
    parser.add_argument("--no-tensorrt", action="store_true",
                        help="ngc: plain onnxruntime (CUDA) instead of its TensorRT accelerator (FP16)")
    parser.add_argument("--out", type=Path, default=Path("model_repository"), metavar="DIR",
                        help="repository directory (default: model_repository); model directories in it are "
                             "replaced, other files kept")
    parser.add_argument("--target", choices=("local", "ngc"), default="local",
                        help="local: CPU instances, store path resolved here, ONNX run by onnxruntime inside "
                             "Python-backend models (the nvidia-pytriton server has no onnxruntime backend); "
                             "ngc: GPU instances, onnxruntime_onnx models with TensorRT, store path as given (in the "
                             "container). Default local")
    parser.add_argument("--cache-size", type=int, default=32, metavar="N",
                        help="decoded INRs (and adapters) each serving model keeps in memory (default 32)")
    parser.add_argument("--instances", type=int, default=1, metavar="N",
                        help="instances of each model (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_build_repo(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from ..store import VideoStore, default_store_root
    from .pipelines import RepoConfig, adapted_tasks, build_repository

    store = Path(getattr(args, "store", None) or default_store_root())
    tasks = args.tasks if args.tasks is not None else adapted_tasks(VideoStore(store))
    weights = {**({t: "random" for t in tasks} if args.random_weights else {}), **dict(args.weights)}
    cfg = RepoConfig(store=store, tasks=tuple(tasks), out=args.out, target=args.target, layers=dict(args.layer),
                     weights=weights, baselines=not args.no_baselines,
                     top_k=args.top_k, score_threshold=args.score_threshold, max_frames=args.max_frames,
                     queue_delay_us=args.queue_delay_us,
                     instances=args.instances, cache_size=args.cache_size, tensorrt=not args.no_tensorrt)
    summary = build_repository(cfg, progress=not getattr(args, "no_progress", False))
    lines = [f"wrote {cfg.out} ({cfg.target}) over store {store}: {len(summary['models'])} models"]
    for name, t in summary["tasks"].items():
        lines.append(f"  {name}: ensembles {', '.join(t['ensembles'])}; tail from {t['layer']} "
                     f"(ONNX parity {t['parity']['tail']:.1e}); videos {', '.join(t['videos']) or 'none yet'}")
        if t["other_layer"]:
            lines.append(f"    adapted for another layer (served only if they also have a {t['layer']} adapter): "
                         f"{', '.join(t['other_layer'])}")
    if not summary["tasks"]:
        lines.append("  no task ensembles: no stored video has adapters yet (python -m builder adapt ID --task "
                     "effnet_lite0), so only 'decode' is served")
    return "\n".join(lines), {"repository": str(cfg.out), "target": cfg.target, "store": str(store), **summary}
