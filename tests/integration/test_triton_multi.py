"""Multi-task requests on the REAL tritonserver over real gRPC: a real clip encoded as a tiny INR, adapted for both
real-weights classifiers (EfficientNet-Lite0, MobileNetV2), a ``--multi`` ensemble of the two built by
``build_repository``; one request answers both tasks from one INR prefix, each answer equal to the task's own NVP
ensemble's, and a video lacking one task's adapters is refused clearly while the server stays up."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import encode_video
from builder.nvp.search import adapt_video
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.multi import TaskGroup
from builder.triton.pbtxt import read_config
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.server import TritonServer
from clients.__main__ import main as client_main
from training.config import AdapterTrainConfig, TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TASKS = {"effnet_lite0": "blocks.5", "mobilenet_v2": "features.6"}  # task -> the injection layer it is adapted at
GROUP = "both"
EXIT = 2


def encode(store: VideoStore, video_id: str) -> None:
    encode_video(sample_path("carphone"), video_id, store=store, arch="nerv", count=16, step=2, size=(64, 48),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=3), progress=False)


def adapt(store: VideoStore, video_id: str, task: str) -> None:
    adapt_video(store, video_id, task, exits=[EXIT], layers=[TASKS[task]], top_k=1,
                train=AdapterTrainConfig(epochs=2, init="ls"), max_samples=8, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    store = VideoStore(tmp_path_factory.mktemp("store"))
    encode(store, "car")
    for task in TASKS:
        adapt(store, "car", task)
    encode(store, "half")  # adapted for one task of the group only
    adapt(store, "half", "effnet_lite0")
    # fused (--fuse): every task model and the group run their steps in one process each; the split layout is the
    # default every other Triton test serves
    cfg = RepoConfig(store=store.root, tasks=tuple(TASKS), groups=(TaskGroup(GROUP, tuple(TASKS)),),
                     out=tmp_path_factory.mktemp("r") / "repo", baselines=False, max_frames=32, fuse=True)
    return cfg, build_repository(cfg, progress=False)


@pytest.fixture(scope="module")
def server(built):
    srv = TritonServer(built[0].out, restricted=(), startup_timeout=600, exit_timeout=60)
    with srv:
        yield srv


def ask(client, model, video_id, outputs, selection="auto"):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id.encode()], dtype=object))
    sel = grpcclient.InferInput("frame_selection", [1], "BYTES")
    sel.set_data_from_numpy(np.array([selection.encode()], dtype=object))
    r = client.infer(model, [vid, sel], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    return {o: r.as_numpy(o) for o in outputs}


def executions(client, model) -> int:
    stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0))


def test_group_ensemble_reuses_each_tasks_tail_and_post(built):
    """One input step (the INR prefix once), then each task's own tail and post; fused, the group is one model
    (two instances) that runs those steps, written inside it, and no step model is served."""
    cfg, summary = built
    fused = read_config(cfg.out / GROUP)
    assert fused.backend == "python" and fused.instance_group[0].count == 2  # FUSED_INSTANCES: docs/SERVING.md
    assert fused.dynamic_batching.default_queue_policy.max_queue_size > 0  # the bounded queue stays
    assert sorted(summary["models"]) == sorted(["decode", GROUP, *TASKS])
    steps = [s.model_name for s in read_config(cfg.out / GROUP / "1" / "steps" / GROUP).ensemble_scheduling.step]
    assert steps == ["nvp_input", "effnet_lite0_tail", "effnet_lite0_post", "mobilenet_v2_tail",
                     "mobilenet_v2_post"]
    group = summary["groups"][GROUP]
    assert group["videos"] == {"car": EXIT} and group["layers"] == TASKS
    assert "no mobilenet_v2" in group["refused"]["half"] or "not adapted for mobilenet_v2" in group["refused"]["half"]


def test_one_request_answers_both_tasks_as_their_own_ensembles_do(client):
    """Raw logits and answers of the multi-task request equal each task's own NVP ensemble's on the same frames;
    one request is one execution of the group's model and none of the tasks' own."""
    outs = ("labels", "scores", "frame_labels", "frame_indices", "logits")
    before = {m: executions(client, m) for m in (GROUP, *TASKS)}
    got = ask(client, GROUP, "car", [f"{t}.{o}" for t in TASKS for o in outs], "0-5,9")
    after = {m: executions(client, m) for m in before}
    assert after == {**before, GROUP: before[GROUP] + 1}
    for task in TASKS:
        own = ask(client, task, "car", outs, "0-5,9")
        assert got[f"{task}.frame_indices"].tolist() == own["frame_indices"].tolist() == [0, 1, 2, 3, 4, 5, 9]
        ref = own["logits"]
        np.testing.assert_allclose(got[f"{task}.logits"], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
        assert got[f"{task}.labels"].tolist() == own["labels"].tolist()
        assert got[f"{task}.frame_labels"].tolist() == own["frame_labels"].tolist()
        np.testing.assert_allclose(got[f"{task}.scores"], own["scores"], rtol=1e-4, atol=1e-6)
    # the two tasks are different models: their logits differ (a branch answering for the other would not)
    assert not np.allclose(got["effnet_lite0.logits"], got["mobilenet_v2.logits"])


def test_client_multi_prints_each_tasks_answer_with_its_clients_fields(server, capsys):
    code = client_main(["multi", GROUP, "--video", "car", "--url", server.grpc_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out.strip().splitlines()[-1])
    assert obj["video"] == "car" and list(obj["tasks"]) == list(TASKS)
    for task in TASKS:
        assert client_main([task, "--video", "car", "--url", server.grpc_url, "--json"]) == 0
        own = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
        mine = obj["tasks"][task]
        assert set(mine) == {k for k in own if k not in ("task", "video", "url")}  # the same fields
        assert mine["top1"] == own["top1"] and mine["frames"] == own["frames"] and len(mine["frames"]) == 8
        assert mine["labels"] == own["labels"] and mine["frame_labels"] == own["frame_labels"]
        np.testing.assert_allclose(mine["scores"], own["scores"], rtol=1e-4, atol=1e-6)
        assert mine["model"] == GROUP and f"{task} [{GROUP}] on 'car', 8 frame(s)" in out


def test_a_video_without_one_tasks_adapters_is_refused_and_the_server_stays_up(client, server, capsys):
    with pytest.raises(InferenceServerException, match="video 'half' has no mobilenet_v2 adapters; run 'python -m "
                                                       "builder adapt half --task mobilenet_v2'"):
        ask(client, GROUP, "half", ["effnet_lite0.labels"])
    assert client.is_server_live() and client.is_model_ready(GROUP)
    assert ask(client, "effnet_lite0", "half", ["labels"])["labels"].size == 5  # its own task still answers
    assert client_main(["multi", GROUP, "--video", "half", "--url", server.grpc_url]) == 1
    err = capsys.readouterr()[1]
    assert "has no mobilenet_v2 adapters" in err and len(err.strip().splitlines()) == 1
    assert client_main(["multi", "nope", "--video", "car", "--url", server.grpc_url]) == 1
    err = capsys.readouterr()[1]
    assert "no ready model 'nope'" in err and "--multi nope=TASK1,TASK2" in err
    assert ask(client, GROUP, "car", ["mobilenet_v2.labels"], "0-3")["mobilenet_v2.labels"].size == 5
