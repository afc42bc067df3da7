"""A D-NeRV collection adapted once (``adapt COLLECTION``) and served by the REAL tritonserver: every member,
the ones the adapter never trained on included, is answered by the task's NVP ensemble with the collection's
adapter, equal to the in-process NVP path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import load_inr
from builder.backbones import get_backbone
from builder.nvp.path import NVPPath
from builder.nvp.shared import adapt_collection
from builder.nvp.storage import load_adapter, load_pairing
from builder.tasks import get_task
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.server import TritonServer
from conftest import tiny_collection

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
TASK = "effnet_lite0"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = tiny_collection(tmp_path_factory.mktemp("store"), frames=12)
    r = adapt_collection(store, "col", TASK, exits=[1, 2], layers=["blocks.6"], top_k=2, repeats=1, progress=False)
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    summary = build_repository(RepoConfig(store=store.root, tasks=(TASK,), out=out, max_frames=16), progress=False)
    assert summary["tasks"][TASK]["videos"] == ["col-0", "col-1"]  # the members, not the collection entry
    with TritonServer(out, admin_token="t", startup_timeout=300) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        yield store, client, r
        client.close()


def ask(client, video_id, selection):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id.encode()], dtype=object))
    sel = grpcclient.InferInput("frame_selection", [1], "BYTES")
    sel.set_data_from_numpy(np.array([selection.encode()], dtype=object))
    r = client.infer(TASK, [vid, sel])
    return r.as_numpy("logits"), r.as_numpy("frame_indices")


def test_every_member_is_answered_with_the_collection_adapter(served):
    store, client, r = served
    task = get_task(TASK)
    bb = get_backbone(task.backbone)
    model = bb.load_for(task, "default")
    assert r["heldout_videos"] == ["col-1"]
    for member in ("col-0", "col-1"):  # col-1: a video the adapter never trained on
        k = load_pairing(store, member, TASK)["exit_block"]
        adapters, meta = load_adapter(store, member, TASK, k)
        idx = [0, 5, 11]
        with torch.no_grad():
            want = NVPPath(load_inr(store, member).model, k, adapters, bb.split(meta["layer"], model=model).tail,
                           False)(idx)
        got, frames = ask(client, member, "0,5,11")
        assert frames.tolist() == idx
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=2e-3 * float(want.abs().max()))


def test_an_unknown_video_is_a_clear_error_and_the_server_stays_up(served):
    store, client, _ = served
    with pytest.raises(InferenceServerException, match="video 'nope' not found|unknown video"):
        ask(client, "nope", "0")
    assert client.is_server_ready()
