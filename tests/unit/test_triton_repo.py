"""builder.triton without a server: specs, config.pbtxt round trips, ensemble wiring checks, repository layout,
the decode model's request handling (pure functions over a real store entry), the ONNX runner, server command
lines and the client's argument parsing."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from builder.api import INR_FILE, load_inr
from builder.inr import build_inr, encode_inr, inr_config
from builder.store import VideoStore
from builder.triton import serving
from builder.triton.pbtxt import io_specs, parse_pbtxt, read_config, to_model_config, to_pbtxt
from builder.tensor_spec import TensorSpec
from builder.triton.decode import DecodeHandler, DecodeSettings, build_decode_repository, decode_model_kwargs
from builder.triton.install import locate_tritonserver, prepare_python_backend, server_env
from builder.triton.repository import ONNX_PYTHON_RUNNER, PYTHON_MODELS, RepositoryBuilder, RepositoryError
from builder.triton.server import ADMIN_KEY, TritonServer
from builder.triton.serving import (
    OnnxRunner,
    RequestError,
    VideoNotFoundError,
    VideoUnavailableError,
    error_info,
    parse_frame_indices,
    parse_video_id,
)
from builder.triton.specs import (
    DynamicBatching,
    EnsembleSpec,
    EnsembleStep,
    OnnxModelSpec,
    PythonModelSpec,
    TensorRTOptions,
)
from builder.triton.wire import FRAME_INDICES, FRAME_SELECTION, VIDEO_ID
from conftest import make_mean_onnx

DECODE_PY = PYTHON_MODELS / "decode" / "model.py"
FRAMES_T = TensorSpec("frames", "TYPE_FP32", (-1, 3, -1, -1))
VIDEO_T = TensorSpec("video_id", "TYPE_STRING", (1,))
INDICES_T = TensorSpec("frame_indices", "TYPE_INT64", (-1,))
MEAN_T = TensorSpec("channel_mean", "TYPE_FP32", (-1, 3))


def decode_ensemble_repo(tmp_path: Path, store: Path, **step_overrides) -> RepositoryBuilder:
    """decode -> frame_mean (ONNX), wired into 'decode_mean'; overrides break the wiring on purpose."""
    repo = RepositoryBuilder(tmp_path / "repo")
    repo.add_python("decode", DECODE_PY, [VIDEO_T, INDICES_T], [FRAMES_T], parameters={"store_root": str(store)})
    repo.add_onnx("frame_mean", make_mean_onnx(tmp_path / "mean.onnx"), [FRAMES_T], [MEAN_T], runtime="python")
    steps = [
        EnsembleStep("decode", {"video_id": "video_id", "frame_indices": "frame_indices"}, {"frames": "frames"}),
        EnsembleStep("frame_mean", {"frames": "frames"}, {"channel_mean": "channel_mean"}),
    ]
    for i, kw in step_overrides.items():
        steps[int(i[1:])] = EnsembleStep(**{**steps[int(i[1:])].__dict__, **kw})
    repo.add_ensemble("decode_mean", steps, [VIDEO_T, INDICES_T], [MEAN_T])
    return repo


# --- specs and pbtxt --------------------------------------------------------------------------------------------


def test_tensor_spec_normalises_and_validates():
    assert TensorSpec("x", "FP32", [2, -1]).dtype == "TYPE_FP32"
    assert TensorSpec("x", "BYTES", [1]).dtype == "TYPE_STRING"
    assert TensorSpec("x", "TYPE_STRING", [1]).datatype == "BYTES"
    assert TensorSpec.from_dict(TensorSpec("x", "INT64", (-1,)).to_dict()) == TensorSpec("x", "TYPE_INT64", (-1,))
    with pytest.raises(ValueError, match="unknown dtype"):
        TensorSpec("x", "TYPE_FLOAT", (1,))
    with pytest.raises(ValueError, match="positive or -1"):
        TensorSpec("x", "FP32", (0,))
    with pytest.raises(ValueError, match="invalid tensor name"):
        TensorSpec("input.1 ", "FP32", (1,))


def test_model_spec_rejects_inconsistent_options(tmp_path):
    kw = dict(name="m", inputs=(FRAMES_T,), outputs=(MEAN_T,), source=DECODE_PY)
    with pytest.raises(ValueError, match="dynamic batching needs max_batch_size"):
        PythonModelSpec(**kw, dynamic_batching=DynamicBatching())
    with pytest.raises(ValueError, match="exceed"):
        PythonModelSpec(**kw, max_batch_size=4, dynamic_batching=DynamicBatching((8,)))
    with pytest.raises(ValueError, match="invalid model name"):
        PythonModelSpec(**{**kw, "name": "../m"})
    with pytest.raises(TypeError, match="must be a string"):
        PythonModelSpec(**kw, parameters={"cache_size": 3})
    repo = RepositoryBuilder(tmp_path)
    with pytest.raises(ValueError, match="TensorRT accelerator needs KIND_GPU"):
        repo.add_onnx("o", tmp_path / "x.onnx", [FRAMES_T], [MEAN_T], tensorrt=True)
    repo.add_python("m", DECODE_PY, [FRAMES_T], [MEAN_T])
    with pytest.raises(ValueError, match="already registered"):
        repo.add_python("m", DECODE_PY, [FRAMES_T], [MEAN_T])


def test_python_config_round_trips_through_pbtxt():
    spec = PythonModelSpec(name="adapter", inputs=(FRAMES_T,), outputs=(MEAN_T,), source=DECODE_PY,
                           parameters={"store_root": "/data/store", "cache_size": "8"}, max_batch_size=16,
                           instances=2, dynamic_batching=DynamicBatching((4, 8), 500))
    text = to_pbtxt(spec)
    cfg = parse_pbtxt(text)
    assert cfg == to_model_config(spec)
    assert cfg.name == "adapter" and cfg.backend == "python" and cfg.max_batch_size == 16
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("frames", "TYPE_FP32", [-1, 3, -1, -1])]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and cfg.instance_group[0].count == 2
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.parameters["store_root"].string_value == "/data/store"
    assert io_specs(cfg) == ([FRAMES_T], [MEAN_T])
    # dynamic batching with every field at its default still appears in the file
    plain = PythonModelSpec(name="b", inputs=(FRAMES_T,), outputs=(MEAN_T,), source=DECODE_PY, max_batch_size=4,
                            dynamic_batching=DynamicBatching())
    assert parse_pbtxt(to_pbtxt(plain)).HasField("dynamic_batching")


def test_onnx_config_with_tensorrt_accelerator(tmp_path):
    repo = RepositoryBuilder(tmp_path / "repo")
    spec = repo.add_onnx("tail", make_mean_onnx(tmp_path / "m.onnx"), [FRAMES_T], [MEAN_T], max_batch_size=8,
                         kind="KIND_GPU", dynamic_batching=True, tensorrt=TensorRTOptions("FP16", 1 << 28))
    repo.build()
    cfg = read_config(tmp_path / "repo" / "tail")
    assert cfg == to_model_config(spec)
    assert cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.onnx"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt"
    assert dict(acc.parameters) == {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 28)}
    assert (tmp_path / "repo" / "tail" / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


GOLDEN = Path(__file__).resolve().parents[1] / "data" / "triton"


def golden_specs() -> dict:
    """Fixed specs of one model of each sort served: the decode model (Python backend), a task's ONNX tail (with
    TensorRT and dynamic batching) and a task's NVP ensemble."""
    decode = RepositoryBuilder("unused").add_python(**decode_model_kwargs("/data/store", "ngc", cache_size=8,
                                                                          max_frames=64))
    tail = OnnxModelSpec(name="effnet_lite0_tail", inputs=(TensorSpec("features", "float32", (40, -1, -1)),),
                         outputs=(TensorSpec("logits", "float32", (1000,)),), onnx_path=Path("tail.onnx"),
                         tensorrt=TensorRTOptions(), max_batch_size=64, kind="KIND_GPU", gpus=(0,),
                         dynamic_batching=DynamicBatching(max_queue_delay_microseconds=2000))
    ensemble = EnsembleSpec(
        name="effnet_lite0",
        steps=(EnsembleStep("effnet_lite0_nvp_input", {VIDEO_ID: VIDEO_ID, FRAME_SELECTION: FRAME_SELECTION},
                            {"features": "features", FRAME_INDICES: "selected_frames"}),
               EnsembleStep("effnet_lite0_tail", {"features": "features"}, {"logits": "tail_logits"}),
               EnsembleStep("effnet_lite0_post", {"tail_logits": "tail_logits", "selected_frames": "selected_frames"},
                            {"labels": "labels", "scores": "scores"})),
        inputs=(TensorSpec(VIDEO_ID, "BYTES", (1,)), TensorSpec(FRAME_SELECTION, "BYTES", (1,))),
        outputs=(TensorSpec("labels", "BYTES", (-1,)), TensorSpec("scores", "FP32", (-1,))))
    return {"decode": decode, "onnx_tensorrt": tail, "ensemble": ensemble}


@pytest.mark.parametrize("name", ["decode", "onnx_tensorrt", "ensemble"])
def test_generated_config_equals_the_golden_file(name):
    """A change to the generated config.pbtxt is a deliberate act: regenerate with NVP_UPDATE_GOLDEN=1 and commit."""
    data = to_pbtxt(golden_specs()[name]).encode("utf-8")  # what RepositoryBuilder writes as config.pbtxt
    path = GOLDEN / f"{name}.config.pbtxt"
    if os.environ.get("NVP_UPDATE_GOLDEN"):
        path.write_bytes(data)
    assert data == path.read_bytes(), f"config.pbtxt of {name} changed"


def test_unknown_config_fields_are_refused():
    with pytest.raises(text_format.ParseError):
        parse_pbtxt('name: "x"\nbackend: "python"\nmax_batchsize: 3\n')


# --- ensembles and the repository ---------------------------------------------------------------------------------


def test_fused_ensemble_runs_its_steps_in_one_process_with_their_handlers_and_limits(tmp_path):
    """fuse(): the ensemble becomes one Python model whose 1/steps/ holds the ensemble and its step models as the
    split layout writes them; StepChain answers a request from there exactly as the steps do one after another,
    and each step's own limits still apply. A step model another ensemble uses stays in the repository."""
    from builder.triton.chain import StepChain
    from builder.triton.repository import FUSED_MODEL

    store = VideoStore(tmp_path / "store")
    put_video(store, "car", frames=4)
    repo = decode_ensemble_repo(tmp_path, store.root)
    repo.add_ensemble("decode_again", [EnsembleStep("decode", {"video_id": "video_id",
                                                               "frame_indices": "frame_indices"},
                                                    {"frames": "frames"})], [VIDEO_T, INDICES_T], [FRAMES_T])
    fused = repo.fuse("decode_mean", instances=2)
    assert [m.name for m in fused.steps] == ["decode_mean", "decode", "frame_mean"] and fused.instances == 2
    assert sorted(repo.models) == ["decode", "decode_again", "decode_mean"]  # frame_mean was only decode_mean's
    root = repo.build()
    assert (root / "decode_mean" / "1" / "model.py").read_bytes() == FUSED_MODEL.read_bytes()
    cfg = read_config(root / "decode_mean")
    assert cfg.backend == "python" and [t.name for t in cfg.input] == ["video_id", "frame_indices"]
    nested = root / "decode_mean" / "1" / "steps"
    assert sorted(p.name for p in nested.iterdir()) == ["decode", "decode_mean", "frame_mean"]
    chain = StepChain.from_repository(nested, "decode_mean")
    got = chain.handle(request(b"car", [0, 3]))
    with torch.no_grad():
        want = load_inr(store, "car").model(torch.tensor([0, 3])).mean(dim=(2, 3)).numpy()  # as stored
    np.testing.assert_allclose(got["channel_mean"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(VideoNotFoundError, match="unknown video ID 'bus'"):
        chain.handle(request(b"bus", [0]))
    with pytest.raises(RequestError, match="rows"):  # the decode step's max_rows, checked before it decodes
        chain.handle(request(b"car", list(range(300))))
    chain.close()
    with pytest.raises(ValueError, match="no ensemble named 'decode'"):
        repo.fuse("decode")


def test_valid_ensemble_builds_and_parses_back(tmp_path):
    repo = decode_ensemble_repo(tmp_path, tmp_path / "store")
    assert repo.validate() == []
    root = repo.build()
    assert sorted(p.name for p in root.iterdir()) == ["decode", "decode_mean", "frame_mean"]
    ens = read_config(root / "decode_mean")
    assert ens.platform == "ensemble"
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["decode", "frame_mean"]
    assert dict(steps[0].input_map) == {"video_id": "video_id", "frame_indices": "frame_indices"}
    assert dict(steps[1].output_map) == {"channel_mean": "channel_mean"}
    assert list((root / "decode_mean" / "1").iterdir()) == []  # ensembles get an empty version directory
    # Python models: the real model.py, byte for byte; the ONNX runner gets its model.onnx beside it
    assert (root / "decode" / "1" / "model.py").read_bytes() == DECODE_PY.read_bytes()
    assert (root / "frame_mean" / "1" / "model.py").read_bytes() == ONNX_PYTHON_RUNNER.read_bytes()
    assert (root / "frame_mean" / "1" / "model.onnx").is_file()
    mean_cfg = read_config(root / "frame_mean")
    assert mean_cfg.backend == "python" and mean_cfg.parameters["onnx_file"].string_value == "model.onnx"
    for d in root.iterdir():
        assert parse_pbtxt((d / "config.pbtxt").read_text()).name == d.name


@pytest.mark.parametrize("override, message", [
    ({"s1": {"input_map": {"frame": "frames"}}},
     "input_map names 'frame', which is not an input of 'frame_mean'"),
    ({"s1": {"input_map": {"frames": "pixels"}}},
     "reads ensemble tensor 'pixels', which is neither an ensemble input nor an output of any step"),
    ({"s0": {"input_map": {"video_id": "frame_indices", "frame_indices": "frame_indices"}}},
     "input 'video_id' is TYPE_STRING but tensor 'frame_indices' (an ensemble input) is TYPE_INT64"),
    ({"s0": {"output_map": {"frame": "frames"}}},
     "output_map names 'frame', which is not an output of 'decode'"),
    ({"s0": {"input_map": {"video_id": "video_id"}}}, "input(s) frame_indices of 'decode' are not mapped"),
    ({"s1": {"model": "frame_means"}}, "no model named 'frame_means'"),
    ({"s1": {"output_map": {"channel_mean": "frames"}}}, "ensemble tensor 'frames' is already output 'frames'"),
])
def test_validate_catches_miswired_ensembles(tmp_path, override, message):
    repo = decode_ensemble_repo(tmp_path, tmp_path / "store", **override)
    errors = repo.validate()
    assert any(message in e for e in errors), errors
    with pytest.raises(RepositoryError, match="invalid model repository"):
        repo.build()
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_validate_checks_dims_and_declared_outputs(tmp_path):
    repo = RepositoryBuilder(tmp_path / "repo")
    repo.add_python("decode", DECODE_PY, [VIDEO_T, INDICES_T], [FRAMES_T])
    repo.add_python("flat", DECODE_PY, [TensorSpec("x", "FP32", (-1, 3))], [MEAN_T])
    repo.add_ensemble("e", [
        EnsembleStep("decode", {"video_id": "video_id", "frame_indices": "frame_indices"}, {"frames": "frames"}),
        EnsembleStep("flat", {"x": "frames"}, {"channel_mean": "m"}),
    ], [VIDEO_T, INDICES_T], [TensorSpec("m", "TYPE_FP16", (-1, 3)), TensorSpec("extra", "FP32", (1,))])
    errors = repo.validate()
    assert any("input 'x' has dims [-1, 3] but tensor 'frames'" in e for e in errors), errors
    assert any("output 'm' is declared TYPE_FP16" in e for e in errors), errors
    assert any("output 'extra' is not produced" in e for e in errors), errors


def test_validate_checks_files_and_batching(tmp_path):
    repo = RepositoryBuilder(tmp_path / "repo")
    repo.add_python("a", tmp_path / "missing.py", [FRAMES_T], [MEAN_T])
    repo.add_onnx("b", tmp_path / "missing.onnx", [FRAMES_T], [MEAN_T])
    repo.add_ensemble("e", [EnsembleStep("b", {"frames": "frames"}, {"channel_mean": "channel_mean"})],
                      [FRAMES_T], [MEAN_T], max_batch_size=4)
    errors = "\n".join(repo.validate())
    assert "missing.py does not exist" in errors and "missing.onnx does not exist" in errors
    assert "max_batch_size 4 exceeds that of 'b' (0)" in errors


def test_build_clean_replaces_models_and_keeps_other_files(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text("keep me")
    (root / "stale" / "1").mkdir(parents=True)
    (root / "stale" / "config.pbtxt").write_text('name: "stale"')
    (root / "decode" / "1").mkdir(parents=True)
    (root / "decode" / "1" / "leftover.py").write_text("")
    build_decode_repository(root, tmp_path / "store")
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "decode"]
    assert sorted(p.name for p in (root / "decode" / "1").iterdir()) == ["model.py"]
    build_decode_repository(root, tmp_path / "store", clean=False)  # rebuilding in place is fine
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_decode_repository_targets(tmp_path):
    local = read_config(build_decode_repository(tmp_path / "l", tmp_path / "s" / ".." / "store") / "decode")
    assert local.backend == "python" and local.max_batch_size == 0
    assert local.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert local.parameters["store_root"].string_value == str((tmp_path / "store").resolve())
    assert local.parameters["cache_size"].string_value == "32"
    assert io_specs(local) == ([VIDEO_T, INDICES_T], [FRAMES_T])
    ngc = read_config(build_decode_repository(tmp_path / "n", "/data/store", "ngc", cache_size=8) / "decode")
    assert ngc.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert ngc.parameters["store_root"].string_value == "/data/store"  # a container path, kept as given
    assert ngc.parameters["cache_size"].string_value == "8"
    with pytest.raises(ValueError, match="target must be one of"):
        build_decode_repository(tmp_path / "x", "/s", "cloud")


# --- decode request handling (pure) -----------------------------------------------------------------------------


def put_video(store: VideoStore, video_id: str, frames: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_inr(inr_config("nerv", frames, 24, 32, stem_dim=8, lower_width=8, mlp_dim=16))
    store.put(video_id, {INR_FILE: encode_inr(model)}, {"frames": frames}, overwrite=True)
    return model


@pytest.fixture()
def store(tmp_path) -> VideoStore:
    s = VideoStore(tmp_path / "store")
    put_video(s, "car")
    return s


@pytest.fixture()
def handler(store) -> DecodeHandler:
    return DecodeHandler(DecodeSettings(store.root, cache_size=2, max_frames=16, batch_size=3))


def request(video_id, indices) -> dict:
    vid = video_id if isinstance(video_id, np.ndarray) else np.array([video_id], dtype=object)
    return {"video_id": vid, "frame_indices": np.asarray(indices, dtype=np.int64)}


def test_decode_matches_the_stored_inr(store, handler):
    idx = [3, 0, 0, 2, 1]  # any order, repeats, more than one forward batch
    frames = handler.handle(request(b"car", idx))["frames"]
    assert frames.dtype == np.float32 and frames.shape == (5, 3, 24, 32)
    with torch.no_grad():
        expected = load_inr(store, "car").model(torch.tensor(idx)).numpy()
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-6)  # batched in 3s: float rounding only


@pytest.mark.parametrize("value, message", [
    (b"../etc", "invalid video ID '../etc'"),
    (b"a/b", "invalid video ID 'a/b'"),
    (b"", "invalid video ID ''"),
    (b"\xff\xfecar", "'video_id' is not valid UTF-8"),
    (np.array([b"car", b"car"], dtype=object), "exactly one ID, got 2"),
    (np.array([], dtype=object), "exactly one ID, got 0"),
    (np.array([3], dtype=object), "must be a string"),
    (None, "missing input 'video_id'"),
])
def test_bad_video_ids_are_refused(value, message):
    arr = value if value is None or isinstance(value, np.ndarray) else np.array([value], dtype=object)
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        parse_video_id(arr)
    assert error_info(e.value) == ("INVALID_ARG", str(e.value))


def test_string_ids_are_accepted():
    assert parse_video_id(np.array(["car"])) == "car"
    assert parse_video_id(np.array([[b"car-2"]], dtype=object)) == "car-2"


@pytest.mark.parametrize("value, message", [
    (np.array([0.0, 1.0], dtype=np.float32), "must be integers (INT64), got float32"),
    (np.array([True]), "must be integers (INT64), got bool"),
    (np.array([[0, 1], [2, 3]]), "must be a 1-D list of frame numbers, got shape [2, 2]"),
    (np.array(3), "must be a 1-D list of frame numbers, got shape []"),
    (np.array([], dtype=np.int64), "is empty"),
    (np.arange(17), "too many frames in one request: 17 > 16"),
    (None, "missing input 'frame_indices'"),
])
def test_bad_frame_indices_are_refused(value, message):
    with pytest.raises(RequestError) as e:
        parse_frame_indices(value, max_frames=16)
    assert message in str(e.value)


@pytest.mark.parametrize("idx, message", [
    ([4], "frame 4 out of range for video 'car': it has 4 frames (0..3)"),
    ([0, -1], "frame -1 out of range"),
])
def test_out_of_range_frames(handler, idx, message):
    with pytest.raises(RequestError) as e:
        handler.handle(request(b"car", idx))
    assert message in str(e.value)


def test_response_size_is_bounded(store):
    small = DecodeHandler(DecodeSettings(store.root, max_response_mb=1))  # 32x24 frames: 9216 B each
    assert small.handle(request(b"car", [0, 1]))["frames"].shape[0] == 2
    with pytest.raises(RequestError, match="114 frames of video 'car' .32x24. exceed the 1 MB response limit; "
                                           "ask for at most 113 per request"):
        small.handle(request(b"car", [0] * 114))


def test_unknown_video_is_not_found(handler):
    with pytest.raises(VideoNotFoundError, match="unknown video ID 'nope'") as e:
        handler.handle(request(b"nope", [0]))
    assert error_info(e.value)[0] == "NOT_FOUND"


def test_damaged_entries_give_clear_errors_without_server_paths(store, handler):
    # a byte flipped on disk: the checksum catches it
    path = store.root / "car" / INR_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(VideoUnavailableError, match="video 'car' cannot be served: .*SHA-256") as e:
        handler.handle(request(b"car", [0]))
    assert str(store.root) not in str(e.value) and error_info(e.value)[0] == "INTERNAL"
    # checksummed but not a bitstream
    store.put("junk", {INR_FILE: b"not an INR at all"}, {})
    with pytest.raises(VideoUnavailableError, match="video 'junk' cannot be served: its stored INR is damaged"):
        handler.handle(request(b"junk", [0]))
    # an entry without the INR file
    store.put("empty", {"other.bin": b"x"}, {})
    with pytest.raises(VideoUnavailableError, match="video 'empty' cannot be served: .*has no file 'inr.nvp'"):
        handler.handle(request(b"empty", [0]))
    # entry.json that is not JSON
    (store.root / "empty" / "entry.json").write_text("{")
    with pytest.raises(VideoUnavailableError, match="is not valid JSON"):
        handler.handle(request(b"empty", [0]))


def test_cache_sees_new_overwritten_and_deleted_videos(store, handler):
    handler.handle(request(b"car", [0]))
    before = handler.handle(request(b"car", [2]))["frames"]
    assert handler.cache.hits == 1 and handler.cache.misses == 1
    put_video(store, "late", frames=6)  # stored after the handler started
    assert handler.handle(request(b"late", [5]))["frames"].shape == (1, 3, 24, 32)
    put_video(store, "car", frames=4, seed=1)  # re-encoded: the cached decoder is stale
    got = handler.handle(request(b"car", [2]))["frames"]
    with torch.no_grad():
        expected = load_inr(store, "car").model(torch.tensor([2])).numpy()
    np.testing.assert_array_equal(got, expected)
    assert not np.allclose(got, before)
    put_video(store, "third")
    handler.handle(request(b"third", [0]))
    assert len(handler.cache) == 2 and "late" not in handler.cache  # LRU bound
    store.remove("car")
    with pytest.raises(VideoNotFoundError):
        handler.handle(request(b"car", [0]))
    assert "car" not in handler.cache


def test_settings_from_model_parameters(tmp_path):
    config = {"parameters": {"store_root": {"string_value": str(tmp_path)}, "cache_size": {"string_value": "4"}}}
    s = DecodeSettings.from_parameters(serving.model_parameters(config))
    assert (s.store_root, s.cache_size, s.device, s.max_frames) == (tmp_path, 4, "cpu", serving.DEFAULT_MAX_FRAMES)
    with pytest.raises(ValueError, match="'store_root' .* is required"):
        DecodeSettings.from_parameters({})
    with pytest.raises(ValueError, match="'cache_size' must be an integer"):
        DecodeSettings.from_parameters({"store_root": "/s", "cache_size": "many"})
    with pytest.raises(ValueError, match="'cache_size' must be >= 1"):
        DecodeSettings.from_parameters({"store_root": "/s", "cache_size": "0"})
    with pytest.raises(ValueError, match="'device' must be"):
        DecodeSettings.from_parameters({"store_root": "/s", "device": "tpu"})


def test_one_device_rule_for_every_served_model(tmp_path):
    """``auto`` means the instance's GPU when its runtime has CUDA; torch models and onnxruntime ask their own."""
    assert serving.model_device({}, "GPU", 1, cuda_available=lambda: True) == "cuda:1"
    assert serving.model_device({}, "GPU", 1, cuda_available=lambda: False) == "cpu"
    assert serving.model_device({}, "CPU", 1, cuda_available=lambda: True) == "cpu"
    assert serving.model_device({"device": "cuda:2"}, "CPU", cuda_available=lambda: False) == "cuda:2"
    make_mean_onnx(tmp_path / "model.onnx")
    config = {"name": "m", "input": [{"name": "frames", "data_type": "TYPE_FP32"}],
              "output": [{"name": "channel_mean"}], "parameters": {"device": {"string_value": "cpu"}}}
    runner = OnnxRunner.from_model_config(config, tmp_path, instance_kind="GPU")  # the parameter wins
    assert runner.session.get_providers() == ["CPUExecutionProvider"]
    assert runner.inputs == {"frames": np.float32}


def test_handlers_leave_the_process_thread_count_alone(store):
    """Torch's thread count is process-wide: only a model instance's initialize sets it (its own stub process)."""
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    DecodeHandler(DecodeSettings(store.root, num_threads=want))
    assert torch.get_num_threads() == before
    try:
        serving.set_instance_threads(want)
        assert torch.get_num_threads() == want
        serving.set_instance_threads(0)  # 0: torch's default, untouched
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


def test_unexpected_errors_become_internal_errors():
    code, message = error_info(ZeroDivisionError("division by zero\nsecond line"), "decode")
    assert code == "INTERNAL"
    assert message == "internal error in model 'decode': ZeroDivisionError: division by zero second line"


def test_onnx_runner(tmp_path):
    onnx_path = make_mean_onnx(tmp_path / "m.onnx")
    runner = OnnxRunner(onnx_path, {"frames": "TYPE_FP32"}, ["channel_mean"])
    x = np.random.default_rng(0).random((2, 3, 4, 5), dtype=np.float32)
    np.testing.assert_allclose(runner.handle({"frames": x})["channel_mean"], x.mean(axis=(2, 3)), rtol=1e-6)
    with pytest.raises(RequestError, match="rejected the input"):
        runner.handle({"frames": np.zeros((2, 3), np.float32)})
    with pytest.raises(RequestError, match="missing input 'frames'"):
        runner.handle({})
    with pytest.raises(ValueError, match=r"has no tensor\(s\) \['pixels'\]"):
        OnnxRunner(onnx_path, {"pixels": "TYPE_FP32"}, ["channel_mean"])
    # no busy-waiting by default (it starves the torch steps beside it); the model parameter turns it back on
    spin = "session.intra_op.allow_spinning"
    assert runner.session.get_session_options().get_session_config_entry(spin) == "0"
    config = {"name": "m", "input": [{"name": "frames", "data_type": "TYPE_FP32"}],
              "output": [{"name": "channel_mean"}], "parameters": {"onnx_file": {"string_value": "m.onnx"},
                                                                   "ort_spinning": {"string_value": "1"}}}
    busy = OnnxRunner.from_model_config(config, tmp_path)
    assert busy.session.get_session_options().get_session_config_entry(spin) == "1"


# --- server plumbing and clients (no server started) ----------------------------------------------------------------


def test_server_command_line_and_environment(tmp_path):
    install = locate_tritonserver()
    assert install.binary.name == "tritonserver" and os.access(install.binary, os.X_OK)
    backends = prepare_python_backend(install)
    assert (backends / "python" / "triton_python_backend_stub").is_file()
    assert prepare_python_backend(install) == backends  # idempotent
    env = server_env(install, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # the stubs' OpenMP workers sleep between requests...
    assert server_env(install, {"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"  # ...unless told
    assert all(str(p) in env["LD_LIBRARY_PATH"] for p in install.lib_dirs)
    server = TritonServer(tmp_path, grpc_port=9001, http_port=None, metrics_port=9002, admin_token="tok")
    cmd = server.command()
    assert f"--model-repository={tmp_path.resolve()}" in cmd and "--model-control-mode=none" in cmd
    rule = f"model-repository,model-config,shared-memory,trace,logging:{ADMIN_KEY}=tok"
    assert f"--grpc-restricted-protocol={rule}" in cmd
    assert "--allow-http=false" in cmd and not any(c.startswith("--http-restricted-api") for c in cmd)
    assert server.admin_headers() == {f"triton-grpc-protocol-{ADMIN_KEY}": "tok"}
    open_server = TritonServer(tmp_path, restricted=())
    assert not any("restricted" in c for c in open_server.command())
    with pytest.raises(ValueError, match="unknown protocol"):
        TritonServer(tmp_path, restricted=("everything",))


def test_python_backend_falls_back_to_a_private_directory(tmp_path, monkeypatch):
    """Read-only site-packages: the stub goes into a private backend directory that links the rest."""
    from builder.triton import install as install_module
    from builder.triton.install import TritonInstall

    tag = f"{sys.version_info.major}.{sys.version_info.minor}"
    pkg = tmp_path / "pytriton" / "tritonserver"
    (pkg / "python_backend_stubs" / tag).mkdir(parents=True)
    (pkg / "python_backend_stubs" / tag / "triton_python_backend_stub").write_bytes(b"stub")
    (pkg / "backends" / "python").mkdir(parents=True)
    (pkg / "backends" / "python" / "libtriton_python.so").write_bytes(b"lib")
    (pkg / "backends" / "python" / "triton_python_backend_utils.py").write_text("")
    install = TritonInstall(pkg / "bin" / "tritonserver", pkg / "backends", (), pkg)
    real_copy = install_module._install_copy

    def read_only(src, dst):
        if pkg in dst.parents:
            raise PermissionError(13, "read-only file system", str(dst))
        real_copy(src, dst)

    monkeypatch.setattr(install_module, "_install_copy", read_only)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backends = prepare_python_backend(install)
    assert tmp_path / "cache" in backends.parents
    python_dir = backends / "python"
    assert (python_dir / "triton_python_backend_stub").read_bytes() == b"stub"
    assert (python_dir / "libtriton_python.so").resolve() == (pkg / "backends" / "python" / "libtriton_python.so")
    assert prepare_python_backend(install) == backends  # idempotent
    assert not (pkg / "backends" / "python" / "triton_python_backend_stub").exists()


def test_client_frame_lists_and_errors(capsys):
    from clients.__main__ import main
    from clients.common import parse_frames

    assert parse_frames("0,1,2") == [0, 1, 2]
    assert parse_frames("0-3") == [0, 1, 2, 3]
    assert parse_frames("5, 0-1,9") == [5, 0, 1, 9]
    for bad in ("", "a", "3-1", "-1", "1,,2"):
        with pytest.raises(Exception):
            parse_frames(bad)
    with pytest.raises(SystemExit) as e:
        main(["decode", "--help"])
    assert e.value.code == 0 and "--frames" in capsys.readouterr().out
    # nothing listens on port 1: one line on stderr, exit 1, and {"error": ...} with --json
    assert main(["decode", "--video", "car", "--frames", "0", "--url", "127.0.0.1:1", "--json"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "error" in json.loads(out.strip().splitlines()[-1])


def test_build_repo_flags_make_the_typed_config(tmp_path):
    from builder.cli import _repo_config, build_parser
    from builder.tasks import TASKS

    parser = build_parser()
    args = parser.parse_args(["build-repo", "--store", str(tmp_path), "--tasks", "effnet_lite0", "detr_r50",
                              "--random-weights", "--weights", "detr_r50=/w/detr.pt", "--layer", "effnet_lite0=blocks.5",
                              "--no-baselines", "--target", "ngc", "--no-tensorrt", "--max-frames", "16"])
    cfg = _repo_config(args)
    assert cfg.store == tmp_path and cfg.tasks == ("effnet_lite0", "detr_r50") and cfg.target == "ngc"
    assert cfg.weights == {"effnet_lite0": "random", "detr_r50": "/w/detr.pt"}
    assert cfg.layers == {"effnet_lite0": "blocks.5"}
    assert (cfg.baselines, cfg.tensorrt, cfg.max_frames, cfg.top_k) == (False, False, 16, 5)
    assert _repo_config(parser.parse_args(["build-repo", "--store", str(tmp_path)])).tasks == ()  # nothing adapted
    with pytest.raises(ValueError, match="--layer names task"):
        _repo_config(parser.parse_args(["build-repo", "--store", str(tmp_path), "--tasks", "resnet50",
                                        "--layer", "blip=x"]))
    adapt = next(a for a in parser._subparsers._group_actions[0].choices["adapt"]._actions if a.dest == "task")
    assert list(adapt.choices) == list(TASKS)  # the task registry, not a copy
    serve = parser.parse_args(["serve", "--grpc-port", "0", "--no-http", "--unrestricted"])
    assert (serve.grpc_port, serve.no_http, serve.unrestricted, serve.repo) == (0, True, True, Path("model_repository"))
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--grpc-port", "70000"])
