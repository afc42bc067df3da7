"""Shared test helpers (pytest puts this directory on sys.path, so tests import them from ``conftest``)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def client(server):
    """A gRPC client of the requesting module's ``server`` fixture (a running TritonServer)."""
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the workspace's 2 cores are shared, and two threads per op oversubscribe
    them (20x slower D-NeRV steps measured)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_mean_onnx(path: Path) -> Path:
    """A real ONNX graph: frames (N, 3, H, W) -> per-frame channel means (N, 3)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["frames"], ["channel_mean"], axes=[2, 3], keepdims=0)], "frame_mean",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("channel_mean", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def decode_mean_repository(store_root: Path, tmp: Path) -> Path:
    """A built repository over ``store_root``: the ``decode`` model, ``frame_mean`` (an ONNX graph run with
    onnxruntime in the Python backend) and their ensemble ``decode_mean`` (video_id, frame_indices -> channel_mean)."""
    from builder.tensor_spec import TensorSpec
    from builder.triton.decode import decode_model_kwargs
    from builder.triton.repository import RepositoryBuilder
    from builder.triton.specs import EnsembleStep

    mean_t = TensorSpec("channel_mean", "TYPE_FP32", (-1, 3))
    repo = RepositoryBuilder(tmp / "model_repository")
    repo.add_python(**decode_model_kwargs(store_root, "local", cache_size=2))
    repo.add_onnx("frame_mean", make_mean_onnx(tmp / "mean.onnx"),
                  [TensorSpec("frames", "TYPE_FP32", (-1, 3, -1, -1))], [mean_t], runtime="python")
    video_t, indices_t = repo.models["decode"].inputs
    repo.add_ensemble("decode_mean", [
        EnsembleStep("decode", {"video_id": "video_id", "frame_indices": "frame_indices"}, {"frames": "frames"}),
        EnsembleStep("frame_mean", {"frames": "frames"}, {"channel_mean": "channel_mean"}),
    ], [video_t, indices_t], [mean_t])
    return repo.build()


TINY_DNERV = ["--size", "48x32", "--epochs", "2", "--stem-dim", "16", "--enc-dim", "8", "--lower-width", "8",
              "--mlp-dim", "32", "--blocks", "3", "--no-progress"]


def tiny_collection(root: Path, frames: int):
    """A stored 2-member D-NeRV collection 'col' (carphone and bikes, ``frames`` each at 48x32, tiny widths, 2
    epochs) made through the CLI; returns its ``VideoStore``."""
    import contextlib
    import io

    from builder.cli import main
    from builder.samples import sample_path
    from builder.store import VideoStore

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["encode-collection", str(sample_path("carphone")), str(sample_path("bikes")), "--id", "col",
                   "--store", str(root), "--frames", str(frames), *TINY_DNERV])
    assert rc == 0
    return VideoStore(root)
