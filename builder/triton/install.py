"""Locate a ``tritonserver`` and prepare what it needs to run here; also ``perf_analyzer``.

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
Running the located server: :mod:`builder.triton.server`.

tritonserver takes its admin key only as a flag (``--grpc-restricted-protocol=...:admin-key=<token>``; 2.51 has no
file or environment form), and every local user can read a process's flags in ``/proc/<pid>/cmdline``.
:func:`argv_secret_shim` builds a tiny preload library (``_ARGV_SECRET_C``) that puts the token, passed in the
environment (readable by the same user only), in place of :data:`SECRET_PLACEHOLDER` before tritonserver reads its
flags, so the command line shows the placeholder.
"""
from __future__ import annotations

import filecmp
import importlib.util
import os
import secrets
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = [
    "BINARY_ENV",
    "SECRET_ENV",
    "SECRET_PLACEHOLDER",
    "TritonInstall",
    "TritonServerError",
    "argv_secret_shim",
    "locate_perf_analyzer",
    "locate_tritonserver",
    "prepare_python_backend",
    "server_env",
]

BINARY_ENV = "NVP_TRITONSERVER"
SECRET_ENV = "NVP_TRITONSERVER_ARGV_SECRET"
SECRET_PLACEHOLDER = "NVP-ARGV-SECRET"  # a valid admin key itself, so a flag holding it always parses
_STUB = "triton_python_backend_stub"


class TritonServerError(RuntimeError):
    """tritonserver could not be found, prepared, started or reached. ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


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


# Preloaded into tritonserver (LD_PRELOAD), compiled with SECRET_ENV and PLACEHOLDER defined. Before main() runs,
# every argument holding PLACEHOLDER gets the value of $SECRET_ENV in its place: main() (getopt) sees the secret,
# while the process's argument bytes, which /proc/<pid>/cmdline shows to every local user, keep the placeholder.
# $SECRET_ENV is then dropped, so the backend stubs do not inherit it. Kept here, not in a .c file, so it ships with
# the package without package-data.
_ARGV_SECRET_C = r"""#include <stdlib.h>
#include <string.h>

static void fill_secret(int argc, char **argv, char **envp) {
    (void)envp;
    const char *secret = getenv(SECRET_ENV);
    if (secret == NULL) return;
    size_t plen = strlen(PLACEHOLDER), slen = strlen(secret);
    for (int i = 1; i < argc; i++) {
        char *at = strstr(argv[i], PLACEHOLDER);
        if (at == NULL) continue;
        size_t head = (size_t)(at - argv[i]), tail = strlen(at + plen);
        char *arg = malloc(head + slen + tail + 1);
        if (arg == NULL) abort();
        memcpy(arg, argv[i], head);
        memcpy(arg + head, secret, slen);
        memcpy(arg + head + slen, at + plen, tail + 1);
        argv[i] = arg;  /* a new string in the pointer array main() gets; the bytes /proc reads stay as they were */
    }
    unsetenv(SECRET_ENV);
}

/* glibc calls .init_array entries with (argc, argv, envp), the same argv main() receives */
__attribute__((section(".init_array"), used)) static void (*fill_secret_entry)(int, char **, char **) = fill_secret;
"""


def argv_secret_shim() -> Path | None:
    """The preload library that fills :data:`SECRET_PLACEHOLDER` in tritonserver's flags from ``$SECRET_ENV``
    (see the module docstring), compiled once per source into the cache directory; ``None`` without a C compiler
    (``$CC``, else ``cc``)."""
    import hashlib
    import subprocess

    defines = [f'-DSECRET_ENV="{SECRET_ENV}"', f'-DPLACEHOLDER="{SECRET_PLACEHOLDER}"']
    digest = hashlib.sha256((_ARGV_SECRET_C + " ".join(defines)).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"argv-secret-{digest}.so"
    if lib.is_file():
        return lib
    cc = shutil.which(os.environ.get("CC") or "cc")
    if cc is None:
        return None
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        done = subprocess.run([cc, "-shared", "-fPIC", "-O2", *defines, "-o", str(tmp), "-x", "c", "-"],
                              input=_ARGV_SECRET_C, capture_output=True, text=True)
        if done.returncode != 0:
            raise TritonServerError(f"compiling the argv shim failed: {done.stderr.strip()}")
        os.replace(tmp, lib)
    finally:
        tmp.unlink(missing_ok=True)
    return lib


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
    # torch's OpenMP workers in each Python-backend stub busy-wait between parallel regions by default; with a few
    # cores they starve tritonserver's own threads, and a request waits for them in the model's queue (measured:
    # 17-33 ms of queue per request at concurrency 1 on 2 cores, 0.1 ms with PASSIVE; docs/BENCHMARKS.md)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


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
