"""Two REAL tritonserver replicas on one store behind one client (``--url a,b``: gRPC's round-robin balancer):
a held load answers with zero failures from both replicas, and a video stored during the load is served by both."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from builder.api import encode_video
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.server import TritonServer
from clients.common import ClientError, connect, infer, replica_target
from conftest import decode_mean_repository
from training.config import TrainConfig

pytestmark = pytest.mark.integration


def encode(store: VideoStore, video_id: str, clip: str) -> None:
    encode_video(sample_path(clip), video_id, store=store, arch="nerv", count=4, size=(48, 32),
                 model={"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}, train=TrainConfig(epochs=2), progress=False)


def decode(client, url: str, video_id: str) -> np.ndarray:
    return infer(client, url, "decode", [("video_id", np.array([video_id.encode()], dtype=object), "BYTES"),
                                         ("frame_indices", np.array([0, 3], dtype=np.int64), "INT64")],
                 ["frames"], timeout=30)["frames"]


def successes(server: TritonServer) -> int:
    c = connect(server.grpc_url)
    try:
        stats = c.get_inference_statistics("decode", as_json=True)["model_stats"][0]["inference_stats"]
        return int(stats.get("success", {}).get("count", 0))
    finally:
        c.close()


def test_a_held_load_spreads_over_both_replicas_and_a_new_video_is_served_by_both(tmp_path):
    store = VideoStore(tmp_path / "store")
    encode(store, "first", "carphone")
    repo = decode_mean_repository(store.root, tmp_path)
    with TritonServer(repo, restricted=(), startup_timeout=180) as a, \
            TritonServer(repo, restricted=(), startup_timeout=180) as b:
        url = f"{a.grpc_url},{b.grpc_url}"
        assert replica_target(url).startswith("ipv4:127.0.0.1:")
        client = connect(url)
        failures, answered, stop = [], [0], threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    assert decode(client, url, "first").shape == (2, 3, 32, 48)
                    answered[0] += 1
                except (ClientError, AssertionError) as e:
                    failures.append(e)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(2.0)
            encode(store, "added", "bikes")  # stored while both replicas serve the load
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not failures, failures[:3]
        assert answered[0] >= 10
        assert successes(a) > 0 and successes(b) > 0  # the balancer used both
        for server in (a, b):  # each replica, asked alone, serves the new video
            direct = connect(server.grpc_url)
            assert decode(direct, server.grpc_url, "added").shape == (2, 3, 32, 48)
            direct.close()
        before = successes(a) + successes(b)
        frames = [decode(client, url, "added") for _ in range(6)]
        assert successes(a) + successes(b) == before + 6
        np.testing.assert_array_equal(frames[0], frames[-1])  # the same stored video, whichever replica answered
        client.close()


def test_bad_replica_addresses_are_clear_errors():
    with pytest.raises(ClientError, match="give host:port,host:port"):
        connect("127.0.0.1:8001,nohost")
