"""builder/triton/collection_prefix.py, task side: a collection's decoder prefix and its shared adapter as one ONNX
graph (TaskPrefix), the lookup step in task mode (selection -> clips, frame indices; a re-fitted adapter refused)
and the generic gather. The ONNX features of a member's frames equal the in-process NVP path's adapted features.
Tiny D-NeRV on two real clips, real EfficientNet-Lite0 weights."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from builder.api import load_inr
from builder.entry import INR_FILE, adapter_file
from builder.inr import decode_inr
from builder.nvp.path import inr_features
from builder.nvp.shared import adapt_collection
from builder.nvp.storage import load_adapter
from builder.tasks import get_task
from builder.triton.collection_prefix import (CLIP_POS, CLIP_ROW, PREFIX_INPUTS, GatherHandler, LookupHandler,
                                              PrefixInputs, clip_name, export_task_prefix, gather_frames)
from builder.triton.serving import RequestError, VideoUnavailableError
from conftest import tiny_collection

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TASK = "effnet_lite0"


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    store = tiny_collection(tmp_path_factory.mktemp("store"), frames=12)
    r = adapt_collection(store, "col", TASK, exits=[1, 2], layers=["blocks.6"], top_k=2, repeats=1, progress=False)
    return store, r


def lookup(store, **extra):
    entry = store.video("col")
    k = min(entry.adapters(TASK))
    params = {"store_root": str(store.root), "collection": "col", "decoder_sha256": entry.files[INR_FILE].sha256,
              "task": TASK, "adapter_file": adapter_file(TASK, k),
              "adapter_sha256": entry.files[adapter_file(TASK, k)].sha256, "max_frames": "16", **extra}
    return LookupHandler(params)


@pytest.mark.parametrize("member", ["col-0", "col-1"])
def test_onnx_task_prefix_gives_the_adapted_features_of_every_member(adapted, tmp_path, member):
    store, r = adapted
    k = r["exit_block"]
    adapters, _ = load_adapter(store, "col", TASK, k)
    model = decode_inr(store.get("col", INR_FILE)).model
    err = export_task_prefix(model, k, adapters, [clip_name("features")], tmp_path / "p.onnx")
    assert err < 1e-3
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    x = lookup(store).handle({"video_id": np.array([member.encode()], dtype=object),
                              "frame_selection": np.array([b"11,0,4"], dtype=object)})
    assert x["frame_indices"].tolist() == [11, 0, 4]
    (clip_feats,) = sess.run(None, {n: x[n] for n in PREFIX_INPUTS})
    assert clip_feats.shape[:2] == (2, 8)  # clips 1 and 0, each once: [B, T, C, h, w]
    got = GatherHandler({clip_name("features"): "features"}, 1).handle(
        {clip_name("features"): clip_feats, CLIP_ROW: x[CLIP_ROW], CLIP_POS: x[CLIP_POS]})["features"]
    with torch.no_grad():
        (want,) = adapters(inr_features(load_inr(store, member).model, [11, 0, 4], k, False))
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-3 * float(want.abs().max()))


def test_the_task_lookup_resolves_the_protocol_and_refuses_what_it_cannot_serve(adapted):
    store, _ = adapted
    h = lookup(store)
    auto = h.handle({"video_id": np.array([b"col-1"], dtype=object), "frame_selection": np.array([b"auto"],
                                                                                                  dtype=object)})
    assert len(auto["frame_indices"]) == 8 and auto["frame_indices"].max() < 12  # the 2-D protocol: 8 spread frames
    assert auto["t"].shape[0] == len(set(auto["frame_indices"] // 8))  # each clip once
    with pytest.raises(RequestError, match="not a member"):
        h.handle({"video_id": np.array([b"col"], dtype=object), "frame_selection": np.array([b"0"], dtype=object)})
    with pytest.raises(RequestError, match="out of range"):
        h.handle({"video_id": np.array([b"col-0"], dtype=object), "frame_selection": np.array([b"12"],
                                                                                               dtype=object)})
    stale = lookup(store, adapter_sha256="0" * 64)  # the adapter baked into the ONNX graph, re-fitted since
    with pytest.raises(VideoUnavailableError, match="adapted for effnet_lite0 again.*rebuild"):
        stale.handle({"video_id": np.array([b"col-0"], dtype=object), "frame_selection": np.array([b"0"],
                                                                                                   dtype=object)})


def test_gather_picks_frames_on_either_time_axis_and_refuses_bad_places():
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 8, 4, 5), dtype=np.float32)  # the decoder's [B, 3, T, H, W]
    where = PrefixInputs(None, None, None, np.array([1, 0]), np.array([7, 2]))
    np.testing.assert_array_equal(gather_frames(rgb, where), np.stack([rgb[1, :, 7], rgb[0, :, 2]]))
    feats = rgb.transpose(0, 2, 1, 3, 4)  # a task prefix's [B, T, C, h, w]
    np.testing.assert_array_equal(gather_frames(feats, where, 1), gather_frames(rgb, where, 2))
    g = GatherHandler({"clip_x": "x"}, 1)
    with pytest.raises(RequestError, match="out of range"):
        g.handle({"clip_x": feats, CLIP_ROW: np.array([2]), CLIP_POS: np.array([0])})
    with pytest.raises(RequestError, match="gather takes clip_x"):
        g.handle({"clip_x": feats, CLIP_ROW: np.array([0, 1]), CLIP_POS: np.array([0])})


# the other kinds, on random small backbones: a video task (3-D adapter after the gather step) and detection (the
# cut carries features + a derived mask; the post step reads the frame size)
SMALL = {"i3d_r50": ({"input_size": (8, 64, 64)}, "blocks.3"),
         "detr_r50": ({"small": True, "shortest_edge": 64, "longest_edge": 160, "backbone": "resnet18"},
                      "detr.model.input_projection")}


@pytest.fixture(scope="module")
def store32(tmp_path_factory):
    return tiny_collection(tmp_path_factory.mktemp("store32"), frames=32)


@pytest.mark.parametrize("task", list(SMALL))
def test_the_collection_ensemble_answers_as_the_task_ensemble_for_every_kind(store32, tmp_path, task):
    from builder.triton.chain import StepChain
    from builder.triton.pipelines import RepoConfig, build_repository
    from training.config import AdapterTrainConfig

    config, layer = SMALL[task]
    adapt_collection(store32, "col", task, exits=[1], layers=[layer], top_k=1, repeats=1, random_init=True,
                     backbone_config=config, train=AdapterTrainConfig(epochs=1), progress=False)
    out = tmp_path / "repo"
    summary = build_repository(RepoConfig(store=store32.root, tasks=(task,), collections=("col",), out=out,
                                          weights={task: "random"}, backbone_config={task: config},
                                          baselines=False, score_threshold=0.0), progress=False)
    static = summary["collections"]["col"]["tasks"][task]
    assert static["parity"] < 1e-3 and static["exit_block"] == 1
    assert (out / f"col_{task}_adapter").is_dir() == get_task(task).video  # 3-D adapters: their own ONNX model
    request = {"video_id": np.array([b"col-1"], dtype=object), "frame_selection": np.array([b"auto"], dtype=object)}
    own, static_chain = StepChain.from_repository(out, task), StepChain.from_repository(out, f"col_{task}")
    try:
        want, got = own.handle(request), static_chain.handle(request)
    finally:
        own.close()
        static_chain.close()
    assert want.keys() == got.keys()
    # random weights score many answers alike: near-ties may swap places between the two prefixes' float paths,
    # so each output is compared as a sorted multiset (column-wise), not row by row
    for name, w in want.items():
        g, w = np.atleast_1d(got[name]), np.atleast_1d(w)
        assert g.shape == w.shape and g.dtype == w.dtype, name
        if w.dtype.kind == "f":
            np.testing.assert_allclose(np.sort(g, axis=0), np.sort(w, axis=0), rtol=1e-3,
                                       atol=1e-3 * max(1.0, float(np.abs(w).max())), err_msg=name)
        else:
            assert sorted(g.reshape(len(g), -1).tolist()) == sorted(w.reshape(len(w), -1).tolist()), name
