"""Per-task ensembles on the REAL tritonserver over real gRPC: a real clip encoded as an INR, its adapters trained
(EfficientNet-Lite0 with its real weights; I3D, DETR and BLIP with seeded random weights and small configs, since
no weights for them ship here), the repository built by ``build_repository`` (ONNX tails), served, and every answer
compared with the in-process pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from builder.api import encode_video, load_inr, read_h264
from builder.backbones import get_backbone
from training.config import AdapterTrainConfig, TrainConfig
from builder.nvp.path import NVPPath
from builder.nvp.search import adapt_video
from builder.nvp.storage import load_adapter, pairing_file
from builder.selection import consecutive_frames, uniform_frames
from builder.samples import sample_path
from builder.store import VideoStore
from builder.tasks import get_task
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.pbtxt import read_config
from builder.triton.server import TritonServer
from clients.__main__ import main as client_main

pytestmark = [pytest.mark.integration, pytest.mark.slow]
I3D_SMALL = {"input_size": (8, 64, 64)}
DETR_SMALL = {"small": True, "shortest_edge": 64, "longest_edge": 160, "backbone": "resnet18"}  # 91 COCO labels
BLIP_SMALL = {"small": True, "image_size": 64}
THRESHOLD = 0.01  # random DETR scores every class at ~1/92: keep every box (filtering is unit-tested)
RANDOM = {"i3d_r50": (I3D_SMALL, "blocks.3"), "detr_r50": (DETR_SMALL, "detr.model.input_projection"),
          "blip": (BLIP_SMALL, "blip.vision_model.embeddings")}


def encode(store: VideoStore, video_id: str, clip: str = "carphone") -> None:
    encode_video(sample_path(clip), video_id, store=store, arch="nerv", count=32, step=2, size=(64, 48),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=3), progress=False)


def adapt(store: VideoStore, video_id: str, task: str) -> dict:
    if task == "effnet_lite0":
        return adapt_video(store, video_id, task, exits=[2], layers=["blocks.5"], top_k=1,
                           train=AdapterTrainConfig(epochs=2, init="ls"), max_samples=8, progress=False)
    config, layer = RANDOM[task]
    return adapt_video(store, video_id, task, exits=[2], layers=[layer], top_k=1, random_init=True,
                       backbone_config=config, train=AdapterTrainConfig(epochs=1), max_samples=8, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> VideoStore:
    s = VideoStore(tmp_path_factory.mktemp("store"))
    encode(s, "car")
    adapt(s, "car", "effnet_lite0")
    for task in RANDOM:
        adapt(s, "car", task)
    encode(s, "raw-only")  # encoded, never adapted
    return s


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    cfg = RepoConfig(store=store.root, tasks=("effnet_lite0", *RANDOM), out=tmp_path_factory.mktemp("r") / "repo",
                     weights={t: "random" for t in RANDOM}, backbone_config={t: c for t, (c, _) in RANDOM.items()},
                     max_frames=32, score_threshold=THRESHOLD)
    return cfg, build_repository(cfg, progress=False)


@pytest.fixture(scope="module")
def server(built):
    # unrestricted: perf_analyzer reads the model configuration (restriction itself is tested with 'decode')
    srv = TritonServer(built[0].out, restricted=(), startup_timeout=600, exit_timeout=60)
    with srv:
        yield srv
    # a clean exit: every model unloaded in time (the log names any that was not)
    assert srv.returncode == 0, "\n".join(line for line in srv.log_tail(400).splitlines()
                                           if "unload" in line or "Timeout" in line or "rror" in line)


def ask(client, model, video_id, selection="auto", *, selection_dtype="BYTES",
        outputs=("logits", "labels", "scores", "frame_indices", "frame_labels")):
    vid = grpcclient.InferInput("video_id", [1], "BYTES")
    vid.set_data_from_numpy(np.array([video_id.encode()], dtype=object))
    if selection_dtype == "BYTES":
        sel = grpcclient.InferInput("frame_selection", [1], "BYTES")
        sel.set_data_from_numpy(np.array([selection.encode()], dtype=object))
    else:
        sel = grpcclient.InferInput("frame_selection", [1], selection_dtype)
        sel.set_data_from_numpy(np.array([7], dtype=np.int64))
    r = client.infer(model, [vid, sel])
    return {k: r.as_numpy(k) for k in outputs}


def test_build_summary_and_configs(built):
    cfg, summary = built
    eff = summary["tasks"]["effnet_lite0"]
    assert eff["layer"] == "blocks.5" and eff["videos"] == ["car"] and eff["num_classes"] == 1000
    assert max(eff["parity"].values()) < 1e-3  # onnxruntime vs PyTorch, checked before writing
    for name in ("effnet_lite0", "effnet_lite0_codec", "effnet_lite0_fulldecode", "i3d_r50", "decode"):
        assert name in summary["models"]
    steps = [s.model_name for s in read_config(cfg.out / "effnet_lite0").ensemble_scheduling.step]
    assert steps == ["nvp_input", "effnet_lite0_tail", "effnet_lite0_post"]  # one input model for every task
    shared = json.loads(read_config(cfg.out / "nvp_input").parameters["tasks"].string_value)
    assert sorted(shared) == sorted(summary["tasks"])  # (one INR cache per server process)
    tail = read_config(cfg.out / "effnet_lite0_tail")
    assert tail.max_batch_size == 32 and tail.HasField("dynamic_batching")
    assert (cfg.out / "effnet_lite0_tail" / "1" / "model.onnx").stat().st_size > 100_000
    assert json.loads((cfg.out / "nvp_repository.json").read_text())["tasks"]["i3d_r50"]["weights"] == "random"
    detr = summary["tasks"]["detr_r50"]
    assert detr["num_classes"] == 91 and max(detr["parity"].values()) < 1e-3
    assert summary["tasks"]["blip"]["outputs"] == {"embeddings": [17, 32]}
    # DETR's frame size follows the video's aspect ratio: spatial dims are dynamic, in the ONNX model and the config
    tail = read_config(cfg.out / "detr_r50_tail")
    assert [list(t.dims) for t in tail.input] == [[32, -1, -1], [-1, -1]]  # (d_model, h, w) and the mask (h, w)
    assert [mc.DataType.Name(t.data_type) for t in tail.input] == ["TYPE_FP32", "TYPE_BOOL"]


def test_classification_paths_equal_in_process_pipeline(store, client):
    task = get_task("effnet_lite0")
    bb = get_backbone(task.backbone)
    model = bb.load_for(task, "default")
    inr = load_inr(store, "car").model
    idx = uniform_frames(32, 8, 0)
    pairing = json.loads(store.get("car", pairing_file(task.name)))
    adapters, meta = load_adapter(store, "car", task.name, pairing["exit_block"])
    with torch.no_grad():
        expect = {
            "effnet_lite0": NVPPath(inr, pairing["exit_block"], adapters, bb.split(meta["layer"], model=model).tail,
                                    False)(idx),
            "effnet_lite0_fulldecode": model(bb.preprocess(inr(torch.tensor(idx)).clamp(0, 1))),
            "effnet_lite0_codec": model(bb.preprocess(read_h264(store, "car", idx))),
        }
    for name, ref in expect.items():
        got = ask(client, name, "car")
        assert got["frame_indices"].tolist() == idx
        np.testing.assert_allclose(got["logits"], ref.numpy(), rtol=1e-3, atol=2e-3 * float(ref.abs().max()))
        top = ref.mean(0).argmax().item()
        assert got["labels"][0].decode() == bb_label(top)
        assert 0 < got["scores"][0] <= 1 and list(got["scores"]) == sorted(got["scores"], reverse=True)


def test_each_ensemble_asks_the_shared_input_model_for_its_own_task_only(client):
    """``nvp_input`` (and each baseline's input model) serves every task of the repository, and computes only the
    tasks whose outputs the ensemble step asks for: four frames are a valid selection for the classifier but not for
    the action task (clips of exactly 32), so had the step computed every task, the request would be refused."""
    for name in ("effnet_lite0", "effnet_lite0_fulldecode", "effnet_lite0_codec"):
        assert ask(client, name, "car", "0-3")["frame_indices"].tolist() == [0, 1, 2, 3]
    with pytest.raises(InferenceServerException, match="reads clips of exactly"):
        ask(client, "i3d_r50", "car", "0-3", outputs=("labels",))


def bb_label(i: int) -> str:
    from builder.tasks import class_names

    return class_names("effnet_lite0", 1000)[i]


def test_action_task_equals_in_process_pipeline(store, client):
    task = get_task("i3d_r50")
    bb = get_backbone(task.backbone)
    model = bb.load_for(task, random_init=True, config=I3D_SMALL)
    inr = load_inr(store, "car").model
    pairing = json.loads(store.get("car", pairing_file(task.name)))
    adapters, meta = load_adapter(store, "car", task.name, pairing["exit_block"])
    idx = consecutive_frames(32, 32, 0)
    with torch.no_grad():
        ref = NVPPath(inr, pairing["exit_block"], adapters, bb.split(meta["layer"], model=model).tail, True)(idx)
    got = ask(client, "i3d_r50", "car")
    assert got["frame_indices"].tolist() == idx and got["logits"].shape == (1, 400)
    np.testing.assert_allclose(got["logits"], ref.numpy(), rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    with pytest.raises(InferenceServerException, match="exactly 32 frames"):
        ask(client, "i3d_r50", "car", "0-7")


def in_process(store, task_name, path, idx):
    """The task's raw outputs for frames ``idx`` of 'car' on one path, computed here with PyTorch."""
    task = get_task(task_name)
    bb = get_backbone(task.backbone)
    model = bb.load_for(task, random_init=True, config=RANDOM[task_name][0])
    inr = load_inr(store, "car").model
    with torch.no_grad():
        if path == "nvp":
            pairing = json.loads(store.get("car", pairing_file(task.name)))
            adapters, meta = load_adapter(store, "car", task.name, pairing["exit_block"])
            out = NVPPath(inr, pairing["exit_block"], adapters, bb.split(meta["layer"], model=model).tail, False)(idx)
        elif path == "fulldecode":
            out = model(bb.preprocess(inr(torch.tensor(idx)).clamp(0, 1)))
        else:
            out = model(bb.preprocess(read_h264(store, "car", idx)))
    return model, out


def close(got, ref, scale=1e-3):
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-3, atol=scale * float(ref.abs().max()))


@pytest.mark.parametrize("path", ["nvp", "fulldecode", "codec"])
def test_detection_boxes_equal_in_process_pipeline(store, client, path):
    """DETR: the raw outputs equal PyTorch's, and the boxes are DETR's post-processing of them in the video's
    pixels (64x48), with COCO labels."""
    from builder.postprocess import cxcywh_to_xyxy
    from builder.protocols import detections
    from builder.tasks import class_names

    idx = uniform_frames(32, 8, 0)
    _, (logits, boxes) = in_process(store, "detr_r50", path, idx)
    got = ask(client, "detr_r50" if path == "nvp" else f"detr_r50_{path}", "car", outputs=(
        "boxes", "labels", "scores", "box_frames", "frame_indices", "logits", "pred_boxes"))
    assert got["frame_indices"].tolist() == idx
    close(got["logits"], logits)
    close(got["pred_boxes"], boxes)
    ref = detections(torch.tensor(got["logits"]), torch.tensor(got["pred_boxes"]), threshold=THRESHOLD)
    names = class_names("detr_r50", 91)
    assert len(got["boxes"]) == sum(len(r["labels"]) for r in ref) == 8 * 10  # 10 queries per frame
    for frame, r in zip(idx, ref):
        mine = got["box_frames"] == frame
        order = r["scores"].argsort(descending=True)
        assert [b.decode() for b in got["labels"][mine]] == [names[i] for i in r["labels"][order].tolist()]
        np.testing.assert_allclose(got["boxes"][mine], cxcywh_to_xyxy(r["boxes"][order].numpy(), 48, 64),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("path", ["nvp", "codec"])
def test_captions_equal_in_process_pipeline(store, client, path):
    """BLIP: the image embeddings equal PyTorch's, and the captions are BLIP's text decoder on them (random
    weights have no tokenizer, so captions are token ids)."""
    idx = [0, 5, 9]
    model, embeds = in_process(store, "blip", path, idx)
    got = ask(client, "blip" if path == "nvp" else f"blip_{path}", "car", "0,5,9",
              outputs=("caption", "captions", "frame_indices", "embeddings"))
    assert got["frame_indices"].tolist() == idx
    close(got["embeddings"], embeds)
    expect = model.captions(torch.tensor(got["embeddings"]), ids_without_tokenizer=True)
    assert [c.decode() for c in got["captions"]] == expect and len(expect[0].split()) > 1
    assert got["caption"][0].decode() == max(expect, key=expect.count)


@pytest.mark.parametrize("video_id,selection,message", [
    ("nope", "auto", "unknown video ID 'nope'"),
    ("../etc", "auto", "invalid video ID"),
    ("", "auto", "invalid video ID"),
    ("car", "0-20,40", "frame 40 out of range for video 'car'"),
    ("car", "uniform:0", "gives 0 frames"),
    ("car", "consecutive:8@30", "frame 32 out of range"),
    ("car", "x" * 300, "too long"),
    ("car", "1;rm -rf /", "bad frame selection"),
    ("raw-only", "auto", "has no effnet_lite0 adapters; run 'python -m builder adapt raw-only"),
])
def test_bad_requests_get_clear_errors_and_server_stays_up(client, video_id, selection, message):
    with pytest.raises(InferenceServerException, match=message.replace("(", r"\(")):
        ask(client, "effnet_lite0", video_id, selection)
    assert client.is_server_live() and client.is_model_ready("effnet_lite0")


def test_wrong_dtype_and_shape_are_rejected(client):
    with pytest.raises(InferenceServerException, match="data-type is 'INT64', but model 'effnet_lite0' expects 'BYTES'"):
        ask(client, "effnet_lite0", "car", selection_dtype="INT64")
    vid = grpcclient.InferInput("video_id", [2], "BYTES")
    vid.set_data_from_numpy(np.array([b"car", b"car"], dtype=object))
    sel = grpcclient.InferInput("frame_selection", [1], "BYTES")
    sel.set_data_from_numpy(np.array([b"auto"], dtype=object))
    with pytest.raises(InferenceServerException, match="(?i)shape|exactly one"):
        client.infer("effnet_lite0", [vid, sel])
    assert client.is_server_live() and client.is_model_ready("effnet_lite0_codec")


def test_video_encoded_and_adapted_while_serving_is_served(store, client):
    with pytest.raises(InferenceServerException, match="unknown video ID 'late'"):
        ask(client, "effnet_lite0", "late")
    encode(store, "late", clip="bikes")
    adapt(store, "late", "effnet_lite0")
    got = ask(client, "effnet_lite0", "late", "0-3")
    assert got["frame_indices"].tolist() == [0, 1, 2, 3] and got["logits"].shape == (4, 1000)


def test_client_cli_prints_top1_for_each_path(server, capsys):
    code = client_main(["effnet_lite0", "--video", "car", "--path", "all", "--url", server.grpc_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out.strip().splitlines()[-1])
    assert set(obj["paths"]) == {"nvp", "fulldecode", "codec"} and obj["top1"] == obj["paths"]["nvp"]["top1"]
    assert 0 < obj["score"] <= 1 and len(obj["paths"]["codec"]["frames"]) == 8
    assert "1. " in out and "effnet_lite0_codec" in out
    code = client_main(["detr_r50", "--video", "car", "--frames", "0-3", "--url", server.grpc_url, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out.strip().splitlines()[-1])
    assert obj["frames"] == [0, 1, 2, 3] and sum(obj["counts"].values()) == len(obj["detections"])
    assert all(d["frame"] in obj["frames"] and len(d["box"]) == 4 and d["score"] > THRESHOLD for d in obj["detections"])
    assert len(obj["detections"]) == 4 * 10 and "frame     0  " in out and "more (--max-lines, --json)" in out
    code = client_main(["blip", "--video", "car", "--frames", "0-1", "--path", "all", "--url", server.grpc_url,
                        "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out.strip().splitlines()[-1])
    assert set(obj["paths"]) == {"nvp", "fulldecode", "codec"} and obj["caption"] == obj["paths"]["nvp"]["caption"]
    assert f'"{obj["caption"]}"' in out and len(obj["paths"]["codec"]["captions"]) == 2
    code = client_main(["i3d_r50", "--video", "nope", "--url", server.grpc_url])
    _, err = capsys.readouterr()
    assert code == 1 and "unknown video ID 'nope'" in err and len(err.strip().splitlines()) == 1


def test_perf_sweep_reports_every_path_and_no_failures(server, tmp_path, capsys):
    from clients.perf import main as perf_main

    code = perf_main(["--url", server.grpc_url, "--repo", str(tmp_path), "--tasks", "effnet_lite0", "--videos", "car",
                      "--concurrency", "1", "--window-ms", "500", "--hold-seconds", "3", "--hold-concurrency", "2",
                      "--out", str(tmp_path / "perf"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out.strip().splitlines()[-1])
    assert {r["path"] for r in obj["results"]} == {"nvp", "fulldecode", "codec"}
    assert all(r["infer_per_s"] > 0 and r["frames"] == 8 for r in obj["results"])
    assert obj["failed"] == 0 and all(h["ok"] > 0 for h in obj["hold"])
    assert (tmp_path / "perf" / "perf.png").stat().st_size > 1000
    assert "NVP / path" in (tmp_path / "perf" / "perf.md").read_text()


def test_a_video_encoded_and_adapted_while_serving_is_answered(store, client):
    """Hot-add: build-repo recorded effnet_lite0's served layer (blocks.5) in the store; a new video adapted with
    no --layers is fitted there alone, and the running server answers it through the NVP ensemble."""
    from builder.nvp.storage import served_layer

    assert served_layer(store, "effnet_lite0") == "blocks.5"
    encode(store, "hot-add", clip="bikes")
    r = adapt_video(store, "hot-add", "effnet_lite0", exits=[2], top_k=1,
                    train=AdapterTrainConfig(epochs=2, init="ls"), max_samples=8, progress=False)
    assert r["served_layer"] == "blocks.5" and r["layer"] == "blocks.5"
    assert {row["layer"] for row in r["ranking"]} == {"blocks.5"}  # no other layer was even tried
    got = ask(client, "effnet_lite0", "hot-add", "0-3")
    assert got["frame_indices"].tolist() == [0, 1, 2, 3] and got["frame_labels"].shape[0] == 4
