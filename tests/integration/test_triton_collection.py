"""A D-NeRV collection served by the REAL tritonserver through its shared decoder as one ONNX model
(builder/triton/collection_prefix.py, build-repo --collection): the lookup step, the ONNX decoder (onnxruntime in
the Python backend here; dynamic batching across members) and the gather step, as the ensemble col_decode. Frames
of every member equal the in-process MemberINR's; a non-member, an out-of-range frame and a collection changed
since the build are clear errors with the server healthy."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import load_inr
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.server import TritonServer
from conftest import tiny_collection

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = tiny_collection(tmp_path_factory.mktemp("store"), frames=20)
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    summary = build_repository(RepoConfig(store=store.root, collections=("col",), out=out, max_frames=16),
                               progress=False)
    assert summary["collections"]["col"]["parity"] < 1e-3
    assert json.loads((out / "nvp_repository.json").read_text())["collections"]["col"]["members"] == ["col-0", "col-1"]
    with TritonServer(out, admin_token="t", startup_timeout=180) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        yield store, client
        client.close()


def infer(client, video_id, indices):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id], dtype=np.object_))
    idx = grpcclient.InferInput("frame_indices", [len(indices)], "INT64")
    idx.set_data_from_numpy(np.asarray(indices, dtype=np.int64))
    return client.infer("col_decode", [vid, idx]).as_numpy("frames")


def test_members_decode_through_the_onnx_decoder(served):
    store, client = served
    for member, idx in (("col-0", [19, 0, 9, 9]), ("col-1", [3])):
        got = infer(client, member, idx)
        with torch.no_grad():
            want = load_inr(store, member).model(idx).numpy()
        assert got.shape == want.shape == (len(idx), 3, 32, 48)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


def test_concurrent_requests_for_different_members_agree(served):
    store, client = served
    want = {}
    with torch.no_grad():
        for m in ("col-0", "col-1"):
            want[m] = load_inr(store, m).model(list(range(8))).numpy()
    errors = []

    def ask(member):
        try:
            np.testing.assert_allclose(infer(client, member, list(range(8))), want[member], rtol=0, atol=2e-3)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(m,)) for m in ("col-0", "col-1") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_bad_requests_are_clear_errors(served):
    store, client = served
    for vid, idx, message in ((b"col", [0], "not a member"), (b"nope", [0], "nope"), (b"col-0", [20], "out of range"),
                              (b"col-0", list(range(17)), "16")):
        with pytest.raises(InferenceServerException, match=message):
            infer(client, vid, idx)
    assert client.is_server_live() and client.is_model_ready("col_decode")
    infer(client, b"col-1", [0])  # still serving


def test_a_grown_collection_is_refused_until_the_repository_is_rebuilt(served):
    store, client = served
    from builder.entry import INR_FILE

    entry = store.video("col")
    blob = store.get("col", INR_FILE)
    # the collection's decoder rewritten (as --add does): the served ONNX graph is of the old one
    store.add_file("col", INR_FILE, blob[:-1] + bytes([blob[-1] ^ 1]))
    try:
        with pytest.raises(InferenceServerException, match="rebuild"):
            infer(client, b"col-0", [0])
    finally:
        store.add_file("col", INR_FILE, blob)
    assert store.video("col").files[INR_FILE].sha256 == entry.files[INR_FILE].sha256
    infer(client, b"col-0", [0])
