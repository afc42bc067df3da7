"""The decode model on the REAL tritonserver (the one in the nvidia-pytriton wheel), over real gRPC.

One server per module (free ports): a store entry encoded from a real clip, the ``decode`` model, an ONNX model run
with onnxruntime inside the Python backend, and an ensemble of the two. Checks parity with the in-process INR,
every bad input (error message, server still healthy), videos encoded after start, restricted admin APIs, the
client CLI, and a clear startup failure.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import INR_FILE, encode_video, load_inr
from training.config import TrainConfig
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.decode import decode_model_kwargs
from builder.triton.install import TritonServerError
from builder.triton.repository import RepositoryBuilder
from builder.triton.server import TritonServer
from clients.__main__ import main as client_main
from conftest import decode_mean_repository

pytestmark = pytest.mark.integration
CLIP = sample_path("carphone")


def encode(store: VideoStore, video_id: str) -> dict:
    return encode_video(CLIP, video_id, store=store, arch="nerv", count=4, step=4, size=(64, 48),
                        model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=3),
                        progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> VideoStore:
    s = VideoStore(tmp_path_factory.mktemp("store"))
    encode(s, "car")
    # a damaged entry: the real bitstream, one byte flipped on disk after it was checksummed
    s.put("broken", {INR_FILE: s.get("car", INR_FILE)}, s.meta("car"))
    path = s.root / "broken" / INR_FILE
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    return s


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repo")
    srv = TritonServer(decode_mean_repository(store.root, tmp), admin_token="test-token", startup_timeout=90)
    with srv:
        yield srv
    assert srv.returncode == 0, srv.log_tail()
    assert not srv.is_running


def infer(client, video_id, indices, *, model="decode", output="frames", dtype="INT64"):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id], dtype=np.object_))
    arr = np.asarray(indices, dtype=np.int64 if dtype == "INT64" else np.float32)
    idx = grpcclient.InferInput("frame_indices", list(arr.shape), dtype)
    idx.set_data_from_numpy(arr)
    return client.infer(model, [vid, idx]).as_numpy(output)


def test_decoded_frames_equal_the_in_process_inr(store, client):
    idx = [3, 0, 1, 1]
    frames = infer(client, b"car", idx)
    assert frames.dtype == np.float32 and frames.shape == (4, 3, 48, 64)
    with torch.no_grad():
        expected = load_inr(store, "car").model(torch.tensor(idx)).numpy()
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-5)


def test_chunked_video_served_by_global_index(store, client):
    """A video encoded in 3 chunks (after the server started) is one video ID: frames of every chunk, in request
    order, equal the in-process decoder; past the last frame is the usual clear error."""
    encode_video(CLIP, "long", store=store, arch="nerv", count=10, step=2, size=(64, 48),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=2), progress=False,
                 chunk_frames=4)
    assert [c.start for c in store.video("long").chunks] == [0, 4, 7]
    idx = [8, 5, 0]  # the last chunk, the second, the first
    frames = infer(client, b"long", idx)
    with torch.no_grad():
        expected = load_inr(store, "long").model(torch.tensor(idx)).numpy()
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-5)
    with pytest.raises(InferenceServerException, match="frame 10 out of range for video 'long': it has 10 frames"):
        infer(client, b"long", [10])


BAD_REQUESTS = [
    pytest.param(b"nope", [0], "INT64", "NOT_FOUND", "unknown video ID 'nope'", id="unknown-id"),
    pytest.param(b"../etc", [0], "INT64", "INVALID_ARGUMENT", "invalid video ID '../etc'", id="traversal"),
    pytest.param(b"a/b", [0], "INT64", "INVALID_ARGUMENT", "invalid video ID 'a/b'", id="slash"),
    pytest.param(b"", [0], "INT64", "INVALID_ARGUMENT", "invalid video ID ''", id="empty-id"),
    pytest.param(b"\xff\xfe", [0], "INT64", "INVALID_ARGUMENT", "'video_id' is not valid UTF-8", id="not-utf8"),
    pytest.param(b"car", [0, 4], "INT64", "INVALID_ARGUMENT",
                 "frame 4 out of range for video 'car': it has 4 frames (0..3)", id="frame-too-big"),
    pytest.param(b"car", [-1], "INT64", "INVALID_ARGUMENT", "frame -1 out of range", id="negative-frame"),
    pytest.param(b"car", [], "INT64", "INVALID_ARGUMENT", "'frame_indices' is empty", id="no-frames"),
    pytest.param(b"car", [0.0], "FP32", "INVALID_ARGUMENT",
                 "inference input 'frame_indices' data-type is 'FP32', but model 'decode' expects 'INT64'",
                 id="float-frames"),
    pytest.param(b"car", [[0, 1]], "INT64", "INVALID_ARGUMENT", "unexpected shape for input 'frame_indices'",
                 id="2d-frames"),
    pytest.param(b"broken", [0], "INT64", "INTERNAL",
                 "video 'broken' cannot be served: store entry 'broken' is corrupt", id="corrupt-entry"),
]


@pytest.mark.parametrize("video_id, indices, dtype, status, message", BAD_REQUESTS)
def test_bad_requests_get_clear_errors_and_the_server_survives(client, store, video_id, indices, dtype, status,
                                                                message):
    with pytest.raises(InferenceServerException) as e:
        infer(client, video_id, indices, dtype=dtype)
    assert str(e.value.status()).endswith(status), e.value
    assert message in e.value.message()
    assert "Traceback" not in e.value.message() and str(store.root) not in e.value.message()
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("decode")
    assert infer(client, b"car", [2]).shape == (1, 3, 48, 64)


def test_video_encoded_after_start_is_served(store, client):
    with pytest.raises(InferenceServerException, match="unknown video ID 'late'"):
        infer(client, b"late", [0])
    encode(store, "late")
    frames = infer(client, b"late", [0, 3])
    with torch.no_grad():
        expected = load_inr(store, "late").model(torch.tensor([0, 3])).numpy()
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-5)


def test_ensemble_decode_then_onnx(client):
    frames = infer(client, b"car", [0, 2])
    means = infer(client, b"car", [0, 2], model="decode_mean", output="channel_mean")
    assert means.shape == (2, 3)
    np.testing.assert_allclose(means, frames.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceServerException, match="unknown video ID 'nope'"):
        infer(client, b"nope", [0], model="decode_mean", output="channel_mean")


def test_admin_apis_are_restricted(server, client):
    for call in (lambda **kw: client.get_model_config("decode", **kw),
                 lambda **kw: client.get_model_repository_index(**kw),
                 lambda **kw: client.unload_model("decode", **kw)):
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            call()
    cfg = client.get_model_config("decode", headers=server.admin_headers()).config
    assert cfg.parameters["cache_size"].string_value == "2"
    with pytest.raises(InferenceServerException):  # authorised, but model control is off
        client.unload_model("decode", headers=server.admin_headers())
    assert client.is_model_ready("decode")
    assert client.get_model_metadata("decode").name == "decode"  # metadata stays open


def test_client_cli(server, tmp_path, capsys):
    url = server.grpc_url
    assert client_main(["decode", "--video", "car", "--frames", "0-3", "--url", url, "--json",
                        "--out", str(tmp_path / "car.mp4")]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0].startswith("decoded 4 frame(s) of 'car'")
    obj = json.loads(lines[-1])
    assert obj["shape"] == [4, 3, 48, 64] and obj["frames"] == [0, 1, 2, 3]
    assert (tmp_path / "car.mp4").stat().st_size > 0
    assert client_main(["decode", "--video", "car", "--frames", "1,3", "--url", url,
                        "--out", str(tmp_path / "pngs")]) == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["frame_00000.png", "frame_00001.png"]
    capsys.readouterr()
    for argv, message in (
        (["--video", "nope", "--frames", "0"], "error: unknown video ID 'nope'"),
        (["--video", "car", "--frames", "0-9"], "error: frame 4 out of range for video 'car'"),
    ):
        assert client_main(["decode", *argv, "--url", url]) == 1
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith(message), err
        assert "Traceback" not in err and out == ""


def test_startup_failure_reports_the_log(tmp_path):
    repo = RepositoryBuilder(tmp_path / "repo")
    kwargs = decode_model_kwargs(tmp_path / "store")
    kwargs["parameters"] = {"cache_size": "2"}  # no store_root: initialize() must fail
    repo.add_python(**kwargs)
    server = TritonServer(repo.build(), startup_timeout=60)
    with pytest.raises(TritonServerError) as e:
        server.start()
    assert "exited with status" in str(e.value)
    assert "'store_root' (the video store directory) is required" in e.value.log_tail
    assert not server.is_running
