"""Request bounds of the served models (pure numpy, no server), the queue policy in the generated configs, and the
CLI's one-line file-system errors and per-ID encode lock."""
from __future__ import annotations

import errno

import numpy as np
import pytest
from google.protobuf.json_format import MessageToDict

from tritonclient.utils import InferenceServerException

from builder.api import EncodeInProgress, encoding_lock
from builder.cli import os_error_line, printable
from builder.store import VideoStore
from builder.tensor_spec import TensorSpec
from builder.triton.pbtxt import parse_pbtxt, read_config, to_model_config, to_pbtxt
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.serving import (
    MAX_MESSAGE_CHARS,
    RequestError,
    RequestLimits,
    ServingLimits,
    error_info,
    parse_video_id,
    short_text,
)
from builder.triton.specs import PythonModelSpec, QueuePolicy
from clients.common import _server_message


def limits_of(spec: PythonModelSpec) -> RequestLimits:
    """The limits a served model reads: its config as the JSON Triton hands ``initialize`` (dims as strings)."""
    return RequestLimits.from_model_config(MessageToDict(to_model_config(spec), preserving_proto_field_name=True))


def model(tmp_path, *, max_batch_size: int = 0, **limits) -> PythonModelSpec:
    src = tmp_path / "model.py"
    src.write_text("")
    inputs = (TensorSpec("video_id", "TYPE_STRING", (1,)), TensorSpec("frame_indices", "TYPE_INT64", (-1,)),
              TensorSpec("pixels", "TYPE_FP32", (-1, 3, -1, -1)) if not max_batch_size
              else TensorSpec("pixels", "TYPE_FP32", (3, -1, -1)))
    return PythonModelSpec(name="m", inputs=inputs, outputs=(TensorSpec("out", "TYPE_FP32", (-1,)),), source=src,
                           max_batch_size=max_batch_size,
                           parameters=ServingLimits(**limits).parameters(max_rows=8))


def request(frames: int = 2, side: int = 4, video_id: bytes = b"car") -> dict:
    return {"video_id": np.array([video_id], dtype=object), "frame_indices": np.zeros(frames, np.int64),
            "pixels": np.zeros((frames, 3, side, side), np.float32)}


def test_limits_travel_through_the_config(tmp_path):
    lim = limits_of(model(tmp_path, max_side=16, max_string_bytes=100, max_request_mb=2, max_response_mb=3))
    assert (lim.max_rows, lim.max_side, lim.max_string_bytes) == (8, 16, 100)
    assert (lim.max_request_bytes, lim.max_response_bytes) == (2 * 2**20, 3 * 2**20)
    assert lim.dims["pixels"] == (-1, 3, -1, -1) and not lim.batching
    lim.check_inputs(request(8, 16))  # at the limits: accepted


@pytest.mark.parametrize("req, match", [
    (request(frames=9), "input 'frame_indices' has 9 rows .* at most 8 per request"),
    (request(side=17), "input 'pixels' has size 17 along axis 2; .* at most 16"),
    (request(video_id=b"x" * 101), "input 'video_id' holds an element of 101 bytes; .* at most 100"),
])
def test_each_bound_is_refused_before_the_handler(tmp_path, req, match):
    lim = limits_of(model(tmp_path, max_side=16, max_string_bytes=100))
    with pytest.raises(RequestError, match=match):
        lim.check_inputs(req)


def test_request_and_response_bytes(tmp_path):
    lim = limits_of(model(tmp_path, max_side=2048, max_request_mb=1, max_response_mb=1))
    with pytest.raises(RequestError, match=r"inputs hold 1\.5 MB; .* at most 1 MB"):
        lim.check_inputs(request(frames=8, side=128))  # 8 x 3 x 128 x 128 x 4 bytes
    lim.check_outputs({"out": np.zeros(2**18, np.float32)})  # exactly 1 MB
    with pytest.raises(RequestError, match="answer would hold 1.0 MB; .* at most 1 MB .* fewer frames"):
        lim.check_outputs({"out": np.zeros(2**18 + 1, np.float32)})


def test_a_batching_model_leaves_rows_to_triton(tmp_path):
    lim = limits_of(model(tmp_path, max_batch_size=4, max_side=16))
    assert lim.batching and lim.dims["pixels"] == (3, -1, -1)
    lim.check_inputs({"pixels": np.zeros((50, 3, 16, 16), np.float32)})  # max_batch_size is Triton's check
    with pytest.raises(RequestError, match="'pixels' has size 17 along axis 1"):
        lim.check_inputs({"pixels": np.zeros((1, 3, 17, 16), np.float32)})


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="max_queue_size"):
        ServingLimits(max_queue_size=0)
    with pytest.raises(ValueError, match="max_request_mb"):
        ServingLimits(max_request_mb=0.5)


def test_ids_in_errors_are_short():
    with pytest.raises(RequestError) as e:
        parse_video_id(np.array([b"x" * 1_000_000], dtype=object))
    assert len(str(e.value)) < 200 and "x" * 64 + "…" in str(e.value) and "too long" in str(e.value)
    with pytest.raises(RequestError) as e:  # invalid characters, under the byte bound: the store's rule, cut short
        parse_video_id(np.array([b"a.b" * 60], dtype=object))
    assert "…" in str(e.value) and "a.b" * 30 not in str(e.value) and "1-64 characters" in str(e.value)
    assert parse_video_id(np.array([b"car-1"], dtype=object)) == "car-1"
    assert short_text("abc") == "abc" and short_text("a" * 65) == "a" * 64 + "…"
    code, message = error_info(RuntimeError("y" * 10_000), "decode")
    assert code == "INTERNAL" and len(message) == MAX_MESSAGE_CHARS + 1 and message.endswith("…")


def test_queue_policy_in_the_config(tmp_path):
    src = tmp_path / "model.py"
    src.write_text("")
    spec = PythonModelSpec(name="post", inputs=(TensorSpec("x", "TYPE_FP32", (-1, 4)),),
                           outputs=(TensorSpec("y", "TYPE_FP32", (-1,)),), source=src,
                           queue=QueuePolicy(max_queue_size=3, timeout_microseconds=250_000))
    cfg = parse_pbtxt(to_pbtxt(spec))  # a model without batching: Triton takes the policy under dynamic_batching
    assert cfg.max_batch_size == 0
    policy = cfg.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 250_000)
    assert policy.timeout_action == policy.REJECT
    with pytest.raises(ValueError, match="no bound"):
        QueuePolicy(max_queue_size=0, timeout_microseconds=1)


def test_build_repo_bounds_every_model(tmp_path):
    cfg = RepoConfig(store=tmp_path / "store", out=tmp_path / "repo", max_frames=12,
                     limits=ServingLimits(max_queue_size=5, queue_timeout_ms=700, max_response_mb=9))
    build_repository(cfg, progress=False)
    decode = read_config(cfg.out / "decode")
    policy = decode.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (5, 700_000)
    params = {k: v.string_value for k, v in decode.parameters.items()}
    assert params["max_rows"] == params["max_frames"] == "12" and params["max_response_mb"] == "9"
    assert cfg.to_dict()["limits"]["max_queue_size"] == 5


def test_os_errors_are_one_line_with_advice():
    line = os_error_line(OSError(errno.ENOSPC, "No space left on device", "/data/store/.tmp-x"))
    assert line == ("No space left on device: /data/store/.tmp-x (the disk is full: free some space, or use "
                    "--store DIR on another disk)")
    assert "read-only" in os_error_line(OSError(errno.EROFS, "Read-only file system", "/s"))
    assert "chmod" in os_error_line(PermissionError(errno.EACCES, "Permission denied", b"/s/\xff"))
    assert os_error_line(OSError(errno.EIO, "Input/output error", "/s/x")) == ("Input/output error: /s/x (check that "
                                                                            "path and its disk)")
    assert os_error_line(OSError(errno.EADDRINUSE, "Address already in use")) == "Address already in use"


def test_paths_that_are_not_utf8_print():
    odd = "/videos/clip\udcff.mp4"  # how Python hands over the file name b"clip\xff.mp4"
    assert printable(odd) == "/videos/clip\\udcff.mp4"
    assert printable("plain ✓") == "plain ✓"


def test_one_encode_per_id(tmp_path):
    store = VideoStore(tmp_path / "store")
    with encoding_lock(store, "a"):
        with pytest.raises(EncodeInProgress, match=r"video 'a' is being encoded by another process \(pid \d+\)"):
            with encoding_lock(store, "a"):
                pass
        with encoding_lock(store, "b"):  # other IDs are free
            pass
    with encoding_lock(store, "a"):  # released on exit
        pass


def test_clients_read_a_full_queue_as_load():
    full = InferenceServerException("[request id: <id_unknown>] Exceeds maximum queue size", "StatusCode.UNAVAILABLE")
    assert _server_message(full, "localhost:8001") == ("Triton at localhost:8001 is busy (Exceeds maximum queue size); "
                                                       "retry later")
    bad = InferenceServerException("input 'frame_indices' has 40 rows", "StatusCode.INVALID_ARGUMENT")
    assert _server_message(bad, "localhost:8001") == "input 'frame_indices' has 40 rows"
