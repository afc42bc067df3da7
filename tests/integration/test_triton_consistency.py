"""No silent mismatch, on the REAL tritonserver over real gRPC: while a client thread holds a load on the NVP path,
a forced re-encode and then a joint re-adapt land in the store; every answer must equal what one version of the
entry gives in-process, or be a clear error. A corrupt H.264 copy is refused through the server, which stays
healthy. And ``encode --force`` landing while ``adapt`` trains makes adapt's write fail, writing nothing."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builder.api import encode_video, load_bound_inr
from builder.backbones import get_backbone
from builder.entry import H264_FILE
from builder.nvp.path import NVPPath
from builder.nvp.search import adapt_video
from builder.nvp.storage import load_adapter, load_pairing, nvp_files
from builder.samples import sample_path
from builder.store import EntryChanged, VideoStore
from builder.tasks import get_task
from builder.triton.pipelines import RepoConfig, build_repository
from builder.triton.server import TritonServer
from test_triton_tasks import adapt, ask, encode
from training.config import AdapterTrainConfig, TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TASK = "effnet_lite0"
FRAMES = "0-3"
# what a request may be told while the entry changes under it: every one names the state and the fix
CLEAR = re.compile(r"has no effnet_lite0 adapter|trained on another INR|is being rewritten.*try again")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> VideoStore:
    s = VideoStore(tmp_path_factory.mktemp("store"))
    encode(s, "car")
    adapt(s, "car", TASK)
    return s


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    cfg = RepoConfig(store=store.root, tasks=(TASK,), out=tmp_path_factory.mktemp("r") / "repo", max_frames=8)
    build_repository(cfg, progress=False)
    with TritonServer(cfg.out, startup_timeout=240, exit_timeout=60) as srv:
        yield srv


def reencode(store: VideoStore, video_id: str) -> None:
    """``encode --force`` of the other sample clip than the stored one, so the INR surely changes (test_triton_tasks'
    tiny settings)."""
    clip = "carphone" if "bikes" in store.video(video_id).source.path else "bikes"
    encode_video(sample_path(clip), video_id, store=store, arch="nerv", count=32, step=2, size=(64, 48),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=3), progress=False,
                 overwrite=True)


@pytest.fixture(scope="module")
def backbone():
    task = get_task(TASK)
    bb = get_backbone(task.backbone)
    return bb, bb.load_for(task, "default")


def in_process(store: VideoStore, backbone) -> np.ndarray:
    """The NVP logits of 'car' as stored now (INR, pairing and the adapter bound to that INR), computed here."""
    bb, model = backbone
    decoded, bound = load_bound_inr(store, "car")
    k = load_pairing(store, "car", TASK)["exit_block"]
    adapters, meta = load_adapter(store, "car", TASK, k, inr_sha256=bound)
    with torch.no_grad():
        return NVPPath(decoded.model, k, adapters, bb.split(meta["layer"], model=model).tail, False)(
            [0, 1, 2, 3]).numpy()


def same(got: np.ndarray, ref: np.ndarray) -> bool:
    """onnxruntime vs PyTorch: the tolerance of test_triton_tasks."""
    return got.shape == ref.shape and np.allclose(got, ref, rtol=1e-3, atol=2e-3 * float(np.abs(ref).max()))


class HeldLoad(threading.Thread):
    """One client asking for the NVP answer of 'car' back to back, recording every answer or error."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.answers = url, threading.Event(), []

    def run(self) -> None:
        c = grpcclient.InferenceServerClient(self.url)
        try:
            while not self.stop.is_set():
                try:
                    self.answers.append(ask(c, TASK, "car", FRAMES, outputs=("logits",))["logits"])
                except InferenceServerException as e:
                    self.answers.append(str(e))
                self.stop.wait(0.05)  # held, not flooding: the 2 shared cores also run adapt and encode
        finally:
            c.close()


def test_every_answer_under_change_is_one_versions_or_a_clear_error(store, server, client, backbone):
    versions = {"adapted": in_process(store, backbone)}
    load = HeldLoad(server.grpc_url)
    load.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    reencode(store, "car")  # no adapters until adapt runs again: the NVP path must refuse, not guess
    time.sleep(0.5)
    # joint re-adapt: its frozen adapters, then a new INR replacing the encoded one, then its adapter and pairing
    adapt_video(store, "car", TASK, exits=[2], layers=["blocks.5"], top_k=1, max_samples=8, repeats=1,
                progress=False, train=AdapterTrainConfig(epochs=2, init="ls", joint=True, joint_epochs=1))
    versions["re-encoded, joint-adapted"] = in_process(store, backbone)
    time.sleep(1.0)
    load.stop.set()
    load.join(30)
    changes = time.perf_counter() - t0
    names = list(versions)
    assert not same(*versions.values())  # the versions answer apart, so a mixed one (old adapter, new INR) shows
    seen = {name: 0 for name in names}
    errors, wrong = [], []
    for answer in load.answers:
        if isinstance(answer, str):
            (errors if CLEAR.search(answer) else wrong).append(answer)
            continue
        match = [name for name in names if same(answer, versions[name])]
        if match:
            seen[match[0]] += 1
        else:
            wrong.append(f"logits matching no version (max {np.abs(answer).max():.3g})")
    assert not wrong, f"{len(wrong)} wrong answers of {len(load.answers)}, e.g. {wrong[:3]}"
    assert seen["adapted"] > 0 and seen["re-encoded, joint-adapted"] > 0, (seen, errors[:3])
    final = ask(client, TASK, "car", FRAMES, outputs=("logits",))["logits"]
    assert same(final, versions["re-encoded, joint-adapted"])
    print(f"{len(load.answers)} answers in {changes:.1f} s of changes: {seen}, {len(errors)} clear errors")


def test_a_corrupt_h264_copy_is_refused_and_the_server_stays_healthy(store, client):
    files = {n: store.get("car", n) for n in store.entry("car")["files"]}
    store.put("bad", files, store.meta("car"))
    path = store.root / "bad" / H264_FILE
    data = bytearray(path.read_bytes())
    for i in range(64):  # 64 flipped bytes: PyAV still decodes the stream into (wrong) frames
        data[len(data) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InferenceServerException, match=r"video 'bad' cannot be served: .*h264\.mp4 does not match "
                                                       r"its SHA-256.*re-encode it") as e:
        ask(client, f"{TASK}_codec", "bad", FRAMES, outputs=("logits",))
    assert str(store.root) not in str(e.value)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(f"{TASK}_codec")
    assert ask(client, f"{TASK}_codec", "car", FRAMES, outputs=("logits",))["logits"].shape == (4, 1000)


class EncodeMidway:
    """The task's real backbone; adapt splits it after reading the INR and before training: ``encode --force`` of
    the same ID lands exactly then, as a concurrent command would."""

    def __init__(self, store: VideoStore, video_id: str) -> None:
        self.bb, self.store, self.video_id, self.landed = get_backbone(get_task(TASK).backbone), store, video_id, None

    def __getattr__(self, name: str):
        return getattr(self.bb, name)

    def split(self, *args, **kwargs):
        if self.landed is None:
            reencode(self.store, self.video_id)
            self.landed = self.store.version(self.video_id)
        return self.bb.split(*args, **kwargs)


def test_adapt_refuses_to_store_adapters_for_an_inr_replaced_while_it_trained(store):
    bb = EncodeMidway(store, "car")
    with pytest.raises(EntryChanged, match="'car''s INR was replaced while this command ran.*nothing was written"):
        adapt_video(store, "car", TASK, backbone=bb, exits=[2], layers=["blocks.5"], top_k=1, max_samples=8,
                    repeats=1, train=AdapterTrainConfig(epochs=2, init="ls"), progress=False)
    assert bb.landed is not None and store.version("car") == bb.landed  # the re-encoded entry, untouched
    assert nvp_files(store.video("car")) == []
