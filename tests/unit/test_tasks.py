"""Task kinds and tasks as registered objects; the served outputs each kind declares; adapters listed from a store
entry's files; the typed path results evaluate averages."""
from __future__ import annotations

import subprocess
import sys

import pytest

from builder.tasks import TASKS, TaskKind, get_kind, get_task, list_kinds, register_kind, register_task


def test_every_task_is_a_backbone_read_as_a_registered_kind():
    from builder.backbones import list_backbones

    assert list_kinds() == ["classification", "action", "detection", "captioning"]
    assert list(TASKS) == ["effnet_lite0", "mobilenet_v2", "resnet50", "clip_rn50", "vit_b16", "i3d_r50", "slowfast_r50",
                           "detr_r50", "blip"]
    for task in TASKS.values():
        assert task.kind is get_kind(task.kind.name) and task.backbone in list_backbones()
    assert get_task("i3d_r50").clip == 32 and get_task("i3d_r50").video
    assert get_task("effnet_lite0").clip == 8 and not get_task("effnet_lite0").video


def test_registries_refuse_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):

        @register_kind
        class Again(TaskKind):  # noqa: F841
            name = "detection"

    with pytest.raises(ValueError, match="already registered"):
        register_task("resnet50", "classification", "conv1x1")
    with pytest.raises(ValueError, match="unknown task kind"):
        get_kind("segmentation")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("siren")


def test_served_outputs_per_kind():
    """The post step passes the answer, the frame indices and the raw outputs on, in this order (the ensembles'
    outputs and the clients rely on these names)."""
    assert get_kind("classification").post_outputs() == (
        "labels", "scores", "frame_labels", "frame_scores", "frame_indices", "logits")
    assert get_kind("action").post_outputs() == get_kind("classification").post_outputs()
    assert get_kind("detection").post_outputs() == (
        "boxes", "labels", "scores", "box_frames", "frame_indices", "logits", "pred_boxes")
    assert get_kind("captioning").post_outputs() == ("caption", "captions", "frame_indices", "embeddings")
    assert [k for k in list_kinds() if get_kind(k).frame_size] == ["detection"]
    assert [k for k in list_kinds() if get_kind(k).has_logits] == ["classification", "action"]


def test_frame_protocol_and_training_samples():
    from builder.selection import consecutive_frames, uniform_frames

    eff, i3d = get_task("effnet_lite0"), get_task("i3d_r50")
    assert eff.protocol_frames(50, seed=3) == uniform_frames(50, 8, 3)
    assert i3d.protocol_frames(50, seed=3) == consecutive_frames(50, 32, 3)
    assert eff.samples(10, None) == [[i] for i in range(10)] and eff.samples(10, 4) == [[0], [3], [6], [9]]
    assert i3d.samples(48, None) == [list(range(s, s + 32)) for s in (0, 8, 16)]
    assert i3d.samples(48, 1) == [list(range(32))]
    with pytest.raises(ValueError, match="32 consecutive frames"):
        i3d.samples(20, None)


def test_classification_logits_are_read_from_any_output_shape():
    import torch

    kind, t = get_kind("classification"), torch.ones(2, 3)
    assert kind.logits(t) is t and kind.logits({"logits": t}) is t and kind.logits((t, None)) is t
    with pytest.raises(ValueError, match="no class logits"):
        get_kind("detection").logits((t, t))


def test_the_task_table_loads_without_torch():
    """The thin clients read the task table: importing it must not pull in torch."""
    code = "import sys, builder.tasks, clients.classify; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _inr_info():
    from builder.entry import INRInfo

    return INRInfo({"arch": "nerv"}, {}, {}, 1)


def test_adapters_are_listed_from_the_entry_files():
    from builder.entry import FileRecord, VideoEntry
    from builder.nvp.storage import adapter_file, nvp_files, pairing_file, stored_exits

    files = ["inr.nvp", "h264.mp4", adapter_file("resnet50", 12), adapter_file("resnet50", 3), pairing_file("resnet50"),
             adapter_file("effnet_lite0", 2), "adapter-resnet50-x.nvp"]
    entry = VideoEntry("v", kind="collection", inr=_inr_info(), files={n: FileRecord("0" * 64, 1) for n in files})
    assert stored_exits(entry, "resnet50") == [3, 12]  # any exit number, not only a probed range
    assert stored_exits(entry, "effnet_lite0") == [2] and stored_exits(entry, "vit_b16") == []
    assert nvp_files(entry, "resnet50") == sorted([adapter_file("resnet50", 12), adapter_file("resnet50", 3),
                                                   pairing_file("resnet50")])
    assert len(nvp_files(entry)) == 4


def test_path_results_average_every_number():
    from builder.nvp.measure import AdapterInfo, PathResult

    a = PathResult({"accuracy": 1.0, "pseudo_gt": 3}, 2.0, gflops=1.0, setup_ms=4.0,
                   adapter=AdapterInfo("layer2", "conv1x1", 10, 0.001))
    b = PathResult({"accuracy": 0.5, "pseudo_gt": 1}, 4.0, gflops=3.0, setup_ms=2.0,
                   adapter=AdapterInfo("layer3", "conv1x1", 20, 0.003))
    m = PathResult.mean([a, b]).to_dict()
    assert m == {"accuracy": 0.75, "pseudo_gt": 2.0, "gflops": 2.0, "ms_per_frame": 3.0, "setup_ms": 3.0,
                 "layer": "layer2", "adapter_kind": "conv1x1", "adapter_params": 15.0, "adapter_share": 0.002}
    assert PathResult({"accuracy": 1.0}, 1.0).to_dict() == {"accuracy": 1.0, "ms_per_frame": 1.0}
