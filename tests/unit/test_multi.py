"""Multi-task requests without a server: ``--multi`` parsing and checks, the shared-exit rule, the repository
config, the group's input step (one prefix, every task's adapter) and the client's reading of the outputs."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from builder.triton.multi import TaskGroup, shared_exit
from builder.triton.serving import RequestError

PAIR = "effnet_lite0,mobilenet_v2"


def test_multi_flag_parses_into_typed_groups_and_adds_their_tasks():
    from builder.cli import _repo_config, build_parser

    args = build_parser().parse_args(["build-repo", "--store", "/tmp/none", "--tasks", "effnet_lite0",
                                      "--multi", f"both={PAIR}", "--multi", "again = mobilenet_v2 , effnet_lite0"])
    assert args.groups == [TaskGroup("both", ("effnet_lite0", "mobilenet_v2")),
                           TaskGroup("again", ("mobilenet_v2", "effnet_lite0"))]
    cfg = _repo_config(args)
    assert cfg.tasks == ("effnet_lite0", "mobilenet_v2")  # a group's tasks are built: it runs their models
    assert [g.name for g in cfg.groups] == ["both", "again"] and cfg.to_dict()["groups"][0]["name"] == "both"


@pytest.mark.parametrize("text,message", [
    ("both", "expects NAME=TASK1,TASK2"),
    ("=effnet_lite0,mobilenet_v2", "expects NAME=TASK1,TASK2"),
    ("both=effnet_lite0", "at least two tasks"),
    ("both=effnet_lite0,effnet_lite0", "named twice"),
    ("both=effnet_lite0,nope", "unknown task 'nope'"),
    ("../x=effnet_lite0,mobilenet_v2", "group name '../x' must be"),
    ("both=effnet_lite0,i3d_r50", "effnet_lite0: 8 frames; i3d_r50: clips of 32 consecutive frames.*separate groups"),
])
def test_bad_groups_are_refused_with_a_clear_message(text, message, capsys):
    from builder.cli import build_parser

    with pytest.raises(ValueError, match=message):
        TaskGroup.parse(text)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["build-repo", "--multi", text])
    assert e.value.code == 2 and "--multi" in capsys.readouterr().err


def test_repo_config_checks_groups():
    from builder.triton.pipelines import RepoConfig

    g = TaskGroup("both", ("effnet_lite0", "mobilenet_v2"))
    with pytest.raises(ValueError, match=r"needs task\(s\) \['mobilenet_v2'\] built too"):
        RepoConfig(store="/tmp/s", tasks=("effnet_lite0",), groups=(g,))
    with pytest.raises(ValueError, match="name is taken"):
        RepoConfig(store="/tmp/s", tasks=("effnet_lite0", "mobilenet_v2"), groups=(g, g))
    with pytest.raises(ValueError, match="name is taken"):
        RepoConfig(store="/tmp/s", tasks=("effnet_lite0", "mobilenet_v2"),
                   groups=(TaskGroup("effnet_lite0", ("effnet_lite0", "mobilenet_v2")),))


LAYERS = {"a": "l1", "b": "l2"}


def _metas(**exits):
    """task -> {exit: meta} from ``task=[(exit, layer, accuracy), ...]``."""
    return {t: {k: {"layer": layer, "accuracy": acc} for k, layer, acc in rows} for t, rows in exits.items()}


def test_shared_exit_is_the_tasks_own_exit_when_they_agree():
    metas = _metas(a=[(1, "l1", 0.9), (2, "l1", 0.5)], b=[(1, "l2", 0.2), (2, "l2", 0.99)])
    # both pairings chose exit 2 (and have an adapter for their layer there): their own ensembles serve exit 2
    assert shared_exit("v", LAYERS, {"a": {"exit_block": 2}, "b": {"exit_block": 2}}, metas) == 2


def test_shared_exit_otherwise_maximises_the_worst_task_then_is_cheapest():
    metas = _metas(a=[(1, "l1", 0.9), (2, "l1", 0.8), (3, "l1", 0.8)],
                   b=[(1, "l2", 0.1), (2, "l2", 0.9), (3, "l2", 0.95), (4, "l2", 1.0)])
    pairings = {"a": {"exit_block": 1}, "b": {"exit_block": 4}}  # they disagree; exit 4 is not shared
    assert shared_exit("v", LAYERS, pairings, metas) == 2  # min accuracy 0.8 at 2 and 3: the cheaper
    # an adapter for another layer does not count
    metas["a"][2]["layer"] = "l9"
    assert shared_exit("v", LAYERS, pairings, metas) == 3


def test_no_shared_exit_names_the_adapt_command_to_run():
    metas = _metas(a=[(1, "l1", 0.9)], b=[(2, "l2", 0.9), (3, "l1", 1.0)])
    with pytest.raises(RequestError, match=r"video 'v' has no exit block where every task \(a, b\) has an adapter "
                                           r"for the layer it is served from \(a: exit\(s\) 1 for l1; b: exit\(s\) 2 "
                                           r"for l2\); run 'python -m builder adapt v --task b --layers l2 --exits 1'"):
        shared_exit("v", LAYERS, {"a": {"exit_block": 1}, "b": {"exit_block": 2}}, metas)
    # a task with no adapter for its layer at all gets its own ensemble's message
    with pytest.raises(RequestError, match="no b adapter for layer 'l2'.*--layers l2"):
        shared_exit("v", LAYERS, {"a": {"exit_block": 1}, "b": {"exit_block": 3}},
                    _metas(a=[(1, "l1", 0.9)], b=[(3, "l1", 1.0)]))


def test_one_input_model_serves_each_task_alone_and_a_group_from_one_prefix(tmp_path, monkeypatch):
    """``nvp_input`` on a tiny stored INR. Asked for both tasks' outputs (a group): one prefix, each task's
    features its own adapter on it. Asked for one task's (that task's own ensemble): only that task, from the same
    INR cache; a video adapted for that task alone is served, and refused for the group naming what to run."""
    import test_task_serving as single  # its tiny stored INR and adapter helpers

    from builder.nvp import path
    from builder.store import VideoStore
    from builder.tasks import get_task
    from builder.triton.task_serving import InputHandler, InputSettings

    def adapt(video_id, inr, task, seed):
        with monkeypatch.context() as m:
            m.setattr(single, "EFF", get_task(task))  # the helper stores an adapter for its module's task
            return single._adapt(store, video_id, inr, seed)

    store = VideoStore(tmp_path / "store")
    inr = single._put_inr(store, "car", seed=0)
    adapters = {t: adapt("car", inr, t, i) for i, t in enumerate(("effnet_lite0", "mobilenet_v2"))}
    adapt("half", single._put_inr(store, "half", seed=1), "effnet_lite0", 0)
    settings = InputSettings.from_parameters({"store_root": str(store.root), "mode": "nvp", "tasks": json.dumps(
        {"effnet_lite0": {"layer": "blocks.5"}, "mobilenet_v2": {"layer": "blocks.5"}})})
    handler = InputHandler(settings)
    calls = []
    features = path.inr_features
    monkeypatch.setattr(path, "inr_features", lambda *a: calls.append(a[2]) or features(*a))
    got = single._ask(handler, "car")
    assert calls == [single.EXIT]  # one prefix, to the shared exit, for both tasks
    with torch.no_grad():
        prefix = features(inr, [0, 1, 2, 3], single.EXIT, False)
        for t, a in adapters.items():
            np.testing.assert_allclose(got[f"{t}.features"], a(prefix)[0].numpy(), rtol=1e-5)
    assert got["effnet_lite0.frame_indices"].tolist() == [0, 1, 2, 3] and len(handler.inrs) == 1
    one = single._ask(handler, "car", requested=["mobilenet_v2.features", "mobilenet_v2.frame_indices"])
    assert sorted(one) == ["mobilenet_v2.features", "mobilenet_v2.frame_indices"]
    np.testing.assert_array_equal(one["mobilenet_v2.features"], got["mobilenet_v2.features"])
    half = single._ask(handler, "half", requested=["effnet_lite0.features"])
    assert sorted(half) == ["effnet_lite0.features"]
    assert len(handler.inrs) == 2 and len(calls) == 3  # one cache for both tasks; each request one prefix
    with pytest.raises(RequestError, match="video 'half' has no mobilenet_v2 adapters; run 'python -m builder "
                                           "adapt half --task mobilenet_v2'"):
        single._ask(handler, "half")
    with pytest.raises(RequestError, match="none of the requested outputs belongs to a task"):
        single._ask(handler, "car", requested=["resnet50.features"])
    handler.close()


def test_client_reads_the_groups_tasks_from_the_output_names():
    from clients.common import ClientError
    from clients.multi import group_outputs

    assert group_outputs(["effnet_lite0.labels", "effnet_lite0.scores", "mobilenet_v2.labels"], "g") == {
        "effnet_lite0": ["labels", "scores"], "mobilenet_v2": ["labels"]}
    with pytest.raises(ClientError, match="'effnet_lite0' is not a multi-task ensemble"):
        group_outputs(["labels"], "effnet_lite0")


@pytest.mark.parametrize("command", ["multi", "effnet_lite0"])
def test_client_help_prints(command, capsys):
    """Every task command's --help (the frame grammar's "P%" once broke argparse's help formatting)."""
    from clients.__main__ import build_parser, main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "--frames SELECTION" in capsys.readouterr().out
    args = build_parser().parse_args(["multi", "both", "--video", "car", "--frames", "0-3"])
    assert (args.task, args.group, args.video, args.frames) == ("multi", "both", "car", "0-3")
