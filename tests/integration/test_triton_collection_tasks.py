"""A D-NeRV collection adapted once (``adapt COLLECTION``) and served by the REAL tritonserver: every member,
the ones the adapter never trained on included, is answered by the task's NVP ensemble with the collection's
adapter, equal to the in-process NVP path; and by ``col_effnet_lite0`` (build-repo --collection col: the shared
decoder's prefix and the adapter as one ONNX model, then the task's tail), with the same answers."""
from __future__ import annotations

import json

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
from clients.__main__ import main as client_main
from conftest import tiny_collection

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
TASK = "effnet_lite0"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = tiny_collection(tmp_path_factory.mktemp("store"), frames=12)
    r = adapt_collection(store, "col", TASK, exits=[1, 2], layers=["blocks.6"], top_k=2, repeats=1, progress=False)
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    summary = build_repository(RepoConfig(store=store.root, tasks=(TASK,), out=out, max_frames=16,
                                          collections=("col",)), progress=False)
    assert summary["tasks"][TASK]["videos"] == ["col-0", "col-1"]  # the members, not the collection entry
    static = summary["collections"]["col"]["tasks"][TASK]
    assert static["ensemble"] == f"col_{TASK}" and static["parity"] < 1e-3 and static["layer"] == "blocks.6"
    with TritonServer(out, admin_token="t", startup_timeout=300) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        yield store, client, r, srv.grpc_url
        client.close()


def ask(client, video_id, selection, model=TASK):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id.encode()], dtype=object))
    sel = grpcclient.InferInput("frame_selection", [1], "BYTES")
    sel.set_data_from_numpy(np.array([selection.encode()], dtype=object))
    r = client.infer(model, [vid, sel])
    return r.as_numpy("logits"), r.as_numpy("frame_indices")


def test_every_member_is_answered_with_the_collection_adapter(served):
    store, client, r, _ = served
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
    store, client, _, _ = served
    with pytest.raises(InferenceServerException, match="video 'nope' not found|unknown video"):
        ask(client, "nope", "0")
    assert client.is_server_ready()


def test_the_static_collection_ensemble_answers_as_the_task_ensemble(served):
    _, client, _, _ = served
    for member, selection in (("col-0", "auto"), ("col-1", "11,0,4")):
        want, want_idx = ask(client, member, selection)
        got, idx = ask(client, member, selection, f"col_{TASK}")
        assert idx.tolist() == want_idx.tolist()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * float(np.abs(want).max()))
    with pytest.raises(InferenceServerException, match="not a member of collection 'col'"):
        ask(client, "col", "0", f"col_{TASK}")
    with pytest.raises(InferenceServerException, match="out of range"):
        ask(client, "col-0", "12", f"col_{TASK}")
    assert client.is_model_ready(f"col_{TASK}")


def test_the_client_asks_the_collection_ensemble_with_collection(served, capsys):
    *_, url = served
    answers = {}
    for extra in ([], ["--collection", "col"]):
        assert client_main([TASK, "--video", "col-1", "--url", url, "--json", *extra]) == 0
        answers[bool(extra)] = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
    assert answers[False]["model"] == TASK and answers[True]["model"] == f"col_{TASK}"
    assert answers[True]["frames"] == answers[False]["frames"] and answers[True]["top1"] == answers[False]["top1"]
