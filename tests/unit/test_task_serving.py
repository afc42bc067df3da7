"""Request logic of the per-task models without a server: frame selections, adapter choice, post-processing,
and the repository config's checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from builder.inr import inr_config
from builder.tasks import class_names, get_task
from builder.triton.pipelines import RepoConfig
from builder.triton.serving import RequestError
from builder.tasks.captioning import CaptionPostHandler
from builder.tasks.classification import ClassificationPostHandler
from builder.tasks.detection import DetectionPostHandler
from builder.triton.task_serving import choose_adapter, parse_selection, select_frames

EFF = get_task("effnet_lite0")
I3D = get_task("i3d_r50")


@pytest.mark.parametrize("text,expect", [
    ("uniform:4", None),
    ("0-3,9", [0, 1, 2, 3, 9]),
    ("consecutive:3@5", [5, 6, 7]),
    (" 7 ", [7]),
])
def test_selections(text, expect):
    idx = select_frames(text, 32, EFF, "v")
    assert idx.dtype == np.int64
    if expect is None:
        assert len(idx) == 4 and (np.diff(idx) == 8).all()
    else:
        assert idx.tolist() == expect


def test_auto_selection_is_the_evaluation_protocol():
    from builder.selection import consecutive_frames, uniform_frames

    assert select_frames("auto", 50, EFF).tolist() == uniform_frames(50, 8, 0)
    assert select_frames("auto", 50, I3D).tolist() == consecutive_frames(50, 32, 0)


@pytest.mark.parametrize("text,task,message", [
    ("0-40", EFF, "frame 32 out of range for video 'v': it has 32 frames"),
    ("uniform:0", EFF, "gives 0 frames"),
    ("5-2", EFF, "end is before the start"),
    ("../x", EFF, "bad frame selection"),
    ("0-7", I3D, "exactly 32 frames"),
    ("consecutive@10", I3D, "frame 32 out of range"),
])
def test_bad_selections(text, task, message):
    with pytest.raises(RequestError, match=message):
        select_frames(text, 32, task, "v")


def test_too_many_frames_is_refused():
    with pytest.raises(RequestError, match="at most 16"):
        select_frames("0-20", 32, EFF, "v", max_frames=16)


def test_parse_selection():
    assert parse_selection(np.array([b" 0-3 "], dtype=object)) == "0-3"
    assert parse_selection(np.array([b""], dtype=object)) == "auto"
    for bad, msg in [(np.array([b"a", b"b"], dtype=object), "exactly one"), (np.array([b"\xff"], dtype=object),
                     "UTF-8"), (np.array([b"1" * 300], dtype=object), "too long")]:
        with pytest.raises(RequestError, match=msg):
            parse_selection(bad)


def test_choose_adapter_prefers_the_videos_choice_then_the_best_for_the_layer():
    adapters = {1: {"layer": "blocks.5", "accuracy": 0.5}, 2: {"layer": "blocks.6", "accuracy": 1.0},
                3: {"layer": "blocks.5", "accuracy": 0.9}}
    assert choose_adapter({"exit_block": 2}, adapters, "blocks.6", "v", "t") == 2
    assert choose_adapter({"exit_block": 2}, adapters, "blocks.5", "v", "t") == 3
    with pytest.raises(RequestError, match="no t adapter for layer 'blocks.4'.*blocks.5, blocks.6.*--layers blocks.4"):
        choose_adapter({"exit_block": 2}, adapters, "blocks.4", "v", "t")


def test_classification_post_handler_video_topk_and_frame_top1():
    logits = np.zeros((3, 1000), dtype=np.float32)
    logits[:, 7] = [5, 5, 0]
    logits[2, 9] = 8
    names = class_names("effnet_lite0", 1000)
    frames = np.array([4, 9, 20])
    out = ClassificationPostHandler(names, top_k=3).handle({"tail_logits": logits, "selected_frames": frames})
    assert [b.decode() for b in out["labels"]] == [names[7], names[9], names[0]]
    assert out["scores"].dtype == np.float32 and 1 > out["scores"][0] > out["scores"][1]
    assert [b.decode() for b in out["frame_labels"]] == [names[7], names[7], names[9]]
    assert out["logits"] is not None and out["logits"].shape == (3, 1000)
    assert out["frame_indices"].tolist() == [4, 9, 20]
    with pytest.raises(RequestError, match=r"must have 2 dimension"):
        ClassificationPostHandler(names).handle({"tail_logits": np.zeros(5, dtype=np.float32),
                                                 "selected_frames": frames})
    with pytest.raises(RequestError, match=r"must be \(frames, 1000\)"):
        ClassificationPostHandler(names).handle({"tail_logits": np.zeros((3, 5), dtype=np.float32),
                                                 "selected_frames": frames})


def test_detection_post_handler_matches_detr_post_processing():
    """Boxes above the threshold, in the video's pixels, by frame then score; the same detections as the
    evaluation protocol's (DETR's post-processing) for the raw outputs passed through."""
    from builder.protocols import detections

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 4, generator=g) * 3
    boxes = torch.rand(3, 10, 4, generator=g) * 0.5 + 0.25
    names = ["cat", "dog", "car"]
    inputs = {"tail_logits": logits.numpy(), "tail_pred_boxes": boxes.numpy(), "selected_frames": np.array([2, 5, 7]),
              "frame_size": np.array([144, 176])}
    out = DetectionPostHandler(names, threshold=0.5).handle(inputs)
    ref = detections(logits, boxes, threshold=0.5)
    assert len(out["boxes"]) == sum(len(r["scores"]) for r in ref) > 0
    assert out["boxes"].shape == (len(out["scores"]), 4) and (out["scores"] > 0.5).all()
    for frame, r in zip([2, 5, 7], ref):
        mine = out["box_frames"] == frame
        assert sorted(out["scores"][mine].tolist(), reverse=True) == out["scores"][mine].tolist()
        np.testing.assert_allclose(sorted(out["scores"][mine]), sorted(r["scores"].numpy()), rtol=1e-6)
        assert sorted(b.decode() for b in out["labels"][mine]) == sorted(names[i] for i in r["labels"].tolist())
        cx, cy, w, h = r["boxes"][r["scores"].argmax()].tolist()
        x0, y0, x1, y1 = out["boxes"][mine][0]
        assert (x0, y0) == pytest.approx(((cx - w / 2) * 176, (cy - h / 2) * 144), rel=1e-5)
        assert (x1, y1) == pytest.approx(((cx + w / 2) * 176, (cy + h / 2) * 144), rel=1e-5)
    unsure = {**inputs, "tail_logits": np.zeros((3, 10, 4), np.float32)}  # every class at 1/4: nothing above 0.5
    assert DetectionPostHandler(names, threshold=0.5).handle(unsure)["boxes"].shape == (0, 4)
    with pytest.raises(RequestError, match=r"logits \(frames, queries, 3\)"):
        DetectionPostHandler(names[:2]).handle(inputs)
    with pytest.raises(RequestError, match="height, width"):
        DetectionPostHandler(names).handle({**inputs, "frame_size": np.array([0, 176])})


def test_caption_post_handler_video_caption_is_the_most_frequent():
    texts = iter([["a dog", "a cat", "a cat", "a dog", "a car"]])
    h = CaptionPostHandler(lambda embeds: next(texts))
    out = h.handle({"tail_embeddings": np.zeros((5, 3, 4), np.float32), "selected_frames": np.arange(5)})
    assert out["caption"].tolist() == [b"a dog"]  # tie between dog and cat: the earlier frame's
    assert [c.decode() for c in out["captions"]] == ["a dog", "a cat", "a cat", "a dog", "a car"]
    with pytest.raises(RequestError, match="non-finite"):
        h.handle({"tail_embeddings": np.full((1, 3, 4), np.nan, np.float32), "selected_frames": np.arange(1)})
    with pytest.raises(RequestError, match="has 2 frame.*answered for 1"):
        h.handle({"tail_embeddings": np.zeros((1, 3, 4), np.float32), "selected_frames": np.arange(2)})


def test_class_names():
    assert class_names("i3d_r50", 400)[0] == "abseiling"
    assert class_names("effnet_lite0", 1000)[0] == "tench"
    assert class_names("vit_b16", 10) == [f"class_{i}" for i in range(10)]


def test_repo_config_checks(tmp_path):
    with pytest.raises(ValueError, match="score_threshold"):
        RepoConfig(store=tmp_path, tasks=("detr_r50",), score_threshold=1.5)
    with pytest.raises(ValueError, match="--layer names task"):
        RepoConfig(store=tmp_path, tasks=("effnet_lite0",), layers={"resnet50": "layer3"})
    with pytest.raises(ValueError, match="needs random weights"):
        RepoConfig(store=tmp_path, tasks=("resnet50",), backbone_config={"resnet50": {"image_size": 64}})
    with pytest.raises(ValueError, match="target"):
        RepoConfig(store=tmp_path, target="cloud")
    assert RepoConfig(store=tmp_path, tasks=("resnet50", "resnet50")).tasks == ("resnet50",)


@pytest.mark.slow
def test_ngc_repository_configs_parse_and_reference_existing_files(tmp_path):
    """--target ngc without a GPU here: every config parses, ONNX models run on onnxruntime_onnx with TensorRT and
    GPU instances, every referenced file exists, and the layer override works for a store with no adapted video."""
    from builder.triton.pbtxt import read_config
    from builder.triton.pipelines import build_repository

    cfg = RepoConfig(store=tmp_path / "store", tasks=("resnet50",), out=tmp_path / "repo", target="ngc",
                     layers={"resnet50": "layer3"}, weights={"resnet50": "random"},
                     backbone_config={"resnet50": {"image_size": 64}})
    summary = build_repository(cfg, progress=False)
    assert summary["tasks"]["resnet50"]["videos"] == [] and max(summary["tasks"]["resnet50"]["parity"].values()) < 1e-3
    models = {d.name: read_config(d) for d in cfg.out.iterdir() if (d / "config.pbtxt").is_file()}
    assert set(models) == set(summary["models"])
    for name in ("resnet50_tail", "resnet50_backbone"):
        c = models[name]
        assert c.platform == "onnxruntime_onnx" and (cfg.out / name / "1" / "model.onnx").is_file()
        assert c.instance_group[0].kind == c.instance_group[0].KIND_GPU
        assert c.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
        assert c.max_batch_size == 64 and c.HasField("dynamic_batching")
    for name in ("nvp_input", "codec_input", "decode"):
        c = models[name]
        assert c.backend == "python" and (cfg.out / name / "1" / "model.py").is_file()
        assert c.instance_group[0].kind == c.instance_group[0].KIND_GPU
        assert c.parameters["store_root"].string_value == str(tmp_path / "store")  # the container's path, as given
    assert len(json.loads((cfg.out / "resnet50_post" / "1" / "labels.json").read_text())) == 1000
    assert json.loads(models["nvp_input"].parameters["tasks"].string_value) == {"resnet50": {"layer": "layer3"}}
    for ens in ("resnet50", "resnet50_fulldecode", "resnet50_codec"):
        for step in models[ens].ensemble_scheduling.step:
            assert step.model_name in models


# --- consistency: adapters bound to their INR, verified H.264 copies (the input handler, no server) -------------

EXIT = 2
CFG = inr_config("nerv", 4, 24, 32, stem_dim=8, lower_width=8, mlp_dim=16)  # the tiny INR these tests store


def _put_inr(store, video_id: str, seed: int, keep: dict | None = None):
    """A tiny INR stored as ``video_id`` (overwriting; ``keep``: other files stored with it, as they were)."""
    from builder.api import load_inr
    from builder.entry import INR_FILE
    from builder.inr import build_inr, encode_inr

    torch.manual_seed(seed)
    store.put_video(_entry(video_id), {INR_FILE: encode_inr(build_inr(CFG)), **(keep or {})}, overwrite=True)
    return load_inr(store, video_id).model


def _entry(video_id: str):
    """A 4-frame 32x24 video entry (the typed meta every reader expects)."""
    from builder.entry import FrameRange, INRInfo, Quality, Source, VideoEntry

    return VideoEntry(video_id, source=Source("clip.mp4"), frames=FrameRange(0, 1, 4, 25.0), width=32, height=24,
                      inr=INRInfo(CFG.to_dict(), {}, {}), quality=Quality(params=1, psnr=0.0, ms_ssim=0.0, bpp=0.0,
                                                                          bytes=1))


def _adapt(store, video_id: str, inr, seed: int):
    """A (random, untrained) adapter stored for the stored INR as adapt stores one, with its pairing."""
    from builder.adapters import build_adapter
    from builder.nvp.path import AdapterSet, inr_features
    from builder.nvp.storage import pairing_file, save_adapter

    torch.manual_seed(seed)
    shape = tuple(inr_features(inr, [0], EXIT, False).shape[1:])
    adapters = AdapterSet([build_adapter("conv1x1", shape, (8, 7, 7))]).eval()
    bound = store.inr_digest(video_id)
    save_adapter(store, video_id, EFF.name, EXIT, "blocks.5", adapters, {"accuracy": 1.0}, inr_sha256=bound)
    store.add_file(video_id, pairing_file(EFF.name), json.dumps({"exit_block": EXIT}).encode(), if_inr=bound)
    return adapters


def _handler(store, mode: str):
    from builder.triton.task_serving import InputHandler, InputSettings

    return InputHandler(InputSettings(store.root, mode, {EFF.name: {"layer": "blocks.5"} if mode == "nvp" else {}}))


def _ask(handler, video_id: str, selection: str = "0-3", requested=None):
    """The handler's answer, with one task's tensors under their own names (``features``, ``frame_indices``)."""
    got = handler.handle({"video_id": np.array([video_id.encode()], dtype=object),
                          "frame_selection": np.array([selection.encode()], dtype=object)}, requested)
    if len(handler.tasks) > 1:
        return got
    return {k.partition(".")[2]: v for k, v in got.items()}


def test_a_new_inr_never_meets_the_cached_adapter_of_the_old(tmp_path):
    """The probed bug: adapt --joint replaced the INR while the pairing file (which keyed the adapter cache) stayed
    the same, and the old adapter answered for the new INR. Now it is a clear error until adapt runs again."""
    from builder.entry import INR_FILE
    from builder.nvp.path import inr_features
    from builder.store import VideoStore
    from builder.triton.serving import VideoUnavailableError

    store = VideoStore(tmp_path / "store")
    inr = _put_inr(store, "car", seed=0)
    adapters = _adapt(store, "car", inr, seed=0)
    handler = _handler(store, "nvp")
    with torch.no_grad():
        np.testing.assert_allclose(_ask(handler, "car")["features"],
                                   adapters(inr_features(inr, [0, 1, 2, 3], EXIT, False))[0].numpy(), rtol=1e-5)
        # a new INR, every other file kept byte for byte (pairing and adapter included)
        keep = {n: store.get("car", n) for n in store.entry("car")["files"] if n != INR_FILE}
        new_inr = _put_inr(store, "car", seed=1, keep=keep)
        with pytest.raises(VideoUnavailableError, match="trained on another INR.*run 'python -m builder adapt car "
                                                        "--task effnet_lite0' again"):
            _ask(handler, "car")
        new_adapters = _adapt(store, "car", new_inr, seed=1)
        np.testing.assert_allclose(_ask(handler, "car")["features"],
                                   new_adapters(inr_features(new_inr, [0, 1, 2, 3], EXIT, False))[0].numpy(),
                                   rtol=1e-5)
    handler.close()


def test_a_corrupt_h264_copy_is_refused_and_a_good_one_decoded(tmp_path):
    from builder.api import h264_copy, read_h264
    from builder.entry import H264_FILE
    from builder.store import VideoStore
    from builder.triton.serving import VideoUnavailableError

    store = VideoStore(tmp_path / "store")
    frames = torch.rand(4, 3, 24, 32)
    data, _ = h264_copy(frames, 25.0, 100_000)
    store.put_video(_entry("good"), {H264_FILE: data})
    bad = bytearray(data)
    for i in range(64):  # 64 flipped bytes in the middle: still a decodable stream, not the stored one
        bad[len(bad) // 2 + i] ^= 0xFF
    store.put_video(_entry("bad"), {H264_FILE: data})
    (store.root / "bad" / H264_FILE).write_bytes(bytes(bad))
    handler = _handler(store, "codec")
    got = _ask(handler, "good")
    assert got["frame_indices"].tolist() == [0, 1, 2, 3] and got["pixels"].shape[0] == 4
    with pytest.raises(VideoUnavailableError, match="video 'bad' cannot be served: .*h264.mp4 does not match its "
                                                    "SHA-256") as e:
        _ask(handler, "bad")
    assert str(store.root) not in str(e.value)
    with pytest.raises(Exception, match="does not match its SHA-256"):  # the in-process codec path too
        read_h264(store, "bad", [0])
    handler.close()
