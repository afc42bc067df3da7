"""``python -m builder serve`` (a real process, the real tritonserver of nvidia-pytriton, real gRPC) when a
Python-backend stub is killed (kill -9, what an OOM kill does): the model turns not-ready, is loaded again and
answers, the ensemble using it too, and the rest of the server stays up. Also: the admin token never shows in a
process's command line.

One server for the module: a tiny store entry, the ``decode`` model, an ONNX model run in the Python backend and
an ensemble of the two.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import encode_video
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.install import SECRET_PLACEHOLDER
from builder.triton.server import ADMIN_TOKEN_ENV, free_port
from conftest import decode_mean_repository
from training.config import TrainConfig

pytestmark = pytest.mark.integration
TOKEN = "supervision-test-token-5f1c"
RECOVERY_S = 45.0  # the issue says ~30 s; 10-26 s measured here on 2 shared cores, the rest is room for a busier one


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("supervision")
    store = VideoStore(tmp / "store")
    encode_video(sample_path("carphone"), "car", store=store, arch="nerv", count=4, step=4, size=(64, 48),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=1),
                 progress=False)
    return decode_mean_repository(store.root, tmp)


class Serve:
    """``python -m builder serve`` in a child process; its stderr is collected line by line."""

    def __init__(self, repo: Path) -> None:
        self.grpc_port = free_port()
        env = {**os.environ, ADMIN_TOKEN_ENV: TOKEN}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "builder", "serve", "--repo", str(repo), "--grpc-port", str(self.grpc_port),
             "--http-port", str(free_port()), "--metrics-port", str(free_port())],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self.stderr.extend(iter(self.proc.stderr.readline, "")),
                                        daemon=True)
        self._reader.start()
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        self.repo = repo

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until serve says it is ready (it prints "Press Ctrl-C" once every model is loaded and supervised)."""
        deadline = time.monotonic() + timeout
        for line in iter(self.proc.stdout.readline, ""):
            if line.startswith("Press Ctrl-C"):
                assert self.client.is_server_ready()
                return
            assert time.monotonic() < deadline, "serve not ready in time:\n" + "".join(self.stderr[-40:])
        raise AssertionError("serve exited:\n" + "".join(self.stderr[-40:]))

    def children(self, pid: int, pattern: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(pid), "-f", pattern], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def processes(self) -> str:
        """tritonserver's children, for a failure message."""
        return subprocess.run(["ps", "-o", "pid,ppid,stat,args", "--ppid", str(self.tritonserver_pid)],
                              capture_output=True, text=True).stdout

    @property
    def tritonserver_pid(self) -> int:
        (pid,) = self.children(self.proc.pid, "tritonserver")
        return pid

    def stub_pid(self, model: str) -> int:
        (pid,) = self.children(self.tritonserver_pid, f"/{model}/1/model.py")
        return pid

    def stop(self) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(90)
            print(f"serve stopped in {time.monotonic() - t0:.1f} s")
            return rc
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def serve(repository):
    s = Serve(repository)
    try:
        s.wait_ready()
        yield s
    finally:
        rc = s.stop()
    assert rc == 0, "".join(s.stderr[-40:])


def healthy(serve: Serve) -> bool:
    """The container's health check: ``python -m clients ready --repository REPO`` exits 0."""
    probe = subprocess.run([sys.executable, "-m", "clients", "ready", "--url", f"127.0.0.1:{serve.grpc_port}",
                            "--repository", str(serve.repo)], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0 or "is not ready (" in probe.stderr, probe.stderr
    return probe.returncode == 0


def infer(client, model="decode", output="frames"):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([b"car"], dtype=np.object_))
    idx = grpcclient.InferInput("frame_indices", [2], "INT64")
    idx.set_data_from_numpy(np.array([0, 3], dtype=np.int64))
    return client.infer(model, [vid, idx], client_timeout=20.0).as_numpy(output)


def test_admin_token_is_not_on_any_command_line(serve):
    c = serve.client
    for headers in (None, {"triton-grpc-protocol-admin-key": SECRET_PLACEHOLDER}):  # the public placeholder too
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            c.get_model_repository_index(headers=headers)
    index = c.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": TOKEN})
    assert {m.name for m in index.models} == {"decode", "frame_mean", "decode_mean"}
    triton = serve.tritonserver_pid
    cmdline = Path(f"/proc/{triton}/cmdline").read_bytes()
    assert b"--grpc-restricted-protocol=" in cmdline and b"--http-restricted-api=" in cmdline
    for pid in (serve.proc.pid, triton, serve.stub_pid("decode")):
        assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    # nor in what the model code inherits
    assert TOKEN.encode() not in Path(f"/proc/{serve.stub_pid('decode')}/environ").read_bytes()


def test_killed_stub_makes_the_model_not_ready_then_comes_back(serve):
    c = serve.client
    expected = infer(c)
    assert infer(c, "decode_mean", "channel_mean").shape == (2, 3)
    stub = serve.stub_pid("decode")
    other = serve.stub_pid("frame_mean")
    os.kill(stub, signal.SIGKILL)
    t0 = time.monotonic()
    not_ready_at = answered_at = None
    errors: set[str] = set()
    health: set[bool] = set()  # what the health check (`clients ready --repository`) says while decode is not ready
    while time.monotonic() - t0 < RECOVERY_S:
        assert c.is_server_live()
        assert c.is_model_ready("frame_mean")  # the other models are untouched
        ready = c.is_model_ready("decode")
        if not ready and not_ready_at is None:
            not_ready_at = time.monotonic() - t0
        if not ready:
            health.add(healthy(serve))
        try:
            frames = infer(c)  # requests keep coming during the outage
        except InferenceServerException as e:
            errors.add(e.message())
        else:
            if not_ready_at is not None:  # an answer from the new stub, not from before the death was seen
                answered_at = time.monotonic() - t0
                break
        time.sleep(0.1)
    log = "".join(serve.stderr)
    supervisor_log = "".join(line for line in serve.stderr if line.startswith("supervisor:"))
    assert not_ready_at is not None and not_ready_at < 5.0, (not_ready_at, stub, serve.processes(), supervisor_log)
    assert False in health  # the health check sees the outage (the server's own readiness may not: see ready.py)
    assert answered_at is not None, f"decode still failing {RECOVERY_S:.0f} s after the kill: {errors}\n{log[-3000:]}"
    np.testing.assert_array_equal(frames, expected)
    assert c.is_model_ready("decode") and serve.stub_pid("decode") != stub
    assert serve.stub_pid("frame_mean") == other
    deadline = time.monotonic() + 10  # the ensemble using decode follows
    while not c.is_model_ready("decode_mean") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert infer(c, "decode_mean", "channel_mean").shape == (2, 3)
    assert c.is_server_ready() and healthy(serve)
    # meanwhile: the stub's own error until the death is seen, then Triton's for a model that is not loaded
    assert errors <= {"Stub process 'decode_0_0' is not healthy.",
                      "Request for unknown model: 'decode' has no available versions"}, errors
    assert f"the Python-backend stub of model 'decode' died: decode_0_0 (pid {stub})" in log
    assert "'decode' is loaded again" in log
    assert "supervisor: watching 2 Python-backend stub(s)" in log
    print(f"killed stub: model-ready false after {not_ready_at:.2f} s, answering again after {answered_at:.1f} s; "
          f"errors meanwhile: {sorted(errors)}; health check meanwhile: {health}")


def test_admin_token_from_a_file_only_its_owner_reads(tmp_path, monkeypatch):
    """The Docker-secret form: ``$NVP_TRITON_ADMIN_TOKEN_FILE``; a file other users may read is refused."""
    from builder.triton.server import ADMIN_TOKEN_FILE_ENV, TritonServer

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    secret = tmp_path / "admin_token"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv(ADMIN_TOKEN_FILE_ENV, str(secret))
    secret.chmod(0o644)
    with pytest.raises(ValueError, match="may be read by other users"):
        TritonServer(tmp_path)
    secret.chmod(0o600)
    server = TritonServer(tmp_path)
    assert server.admin_token == "from-a-file" and not server.admin_token_generated


def test_a_shim_that_does_not_load_stops_the_start(tmp_path, monkeypatch):
    """ld.so only warns about a preload it cannot load; then tritonserver's key would be the public placeholder,
    so start() checks the token works and refuses to go on."""
    from builder.triton import server as server_module
    from builder.triton.install import TritonServerError

    monkeypatch.setattr(server_module, "argv_secret_shim", lambda: tmp_path / "missing.so")
    (tmp_path / "empty_repository").mkdir()
    srv = server_module.TritonServer(tmp_path / "empty_repository", http_port=None, metrics_port=None,
                                     admin_token=TOKEN, startup_timeout=60)
    with pytest.raises(TritonServerError, match="does not take the admin token"):
        srv.start()
    assert not srv.is_running
