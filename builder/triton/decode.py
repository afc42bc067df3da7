"""The ``decode`` model: video ID + frame indices -> RGB frames, from the video store.

::

    inputs   video_id       TYPE_STRING [1]    a store ID (UTF-8)
             frame_indices  TYPE_INT64  [-1]   frame numbers, 0-based, any order, repeats allowed
    outputs  frames         TYPE_FP32   [-1, 3, -1, -1]   RGB in [0, 1], NCHW: exactly ``load_inr(...).model(idx)``

Its request handling (:class:`DecodeSettings` from the config parameters, :class:`DecodeHandler`, pure numpy/torch:
unit-tested without a server), its repository entry (:func:`decode_model_kwargs`) and a decode-only repository
(:func:`build_decode_repository`). ``python_models/decode/model.py`` is the thin Triton shell around the handler.

FP32 NCHW is the INR's native output and what downstream adapters/backbones consume, so an ensemble can feed it on
without conversion; clients that want images convert with ``builder.video.to_uint8``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np

from ..tensor_spec import TensorSpec
from .serving import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_SIZE,
    DEFAULT_MAX_FRAMES,
    RequestError,
    StoreCache,
    VideoUnavailableError,
    _int_param,
    check_frame_range,
    model_device,
    parse_frame_indices,
    parse_video_id,
)
from .wire import DECODE_MODEL, FRAME_INDICES, FRAMES, VIDEO_ID

__all__ = [
    "DECODE_INPUTS",
    "DECODE_OUTPUTS",
    "DEFAULT_MAX_RESPONSE_MB",
    "DecodeHandler",
    "DecodeSettings",
    "build_decode_repository",
    "decode_model_kwargs",
]

DEFAULT_MAX_RESPONSE_MB = 256
DECODE_INPUTS = (TensorSpec(VIDEO_ID, "TYPE_STRING", (1,)), TensorSpec(FRAME_INDICES, "TYPE_INT64", (-1,)))
DECODE_OUTPUTS = (TensorSpec(FRAMES, "TYPE_FP32", (-1, 3, -1, -1)),)


@dataclass(frozen=True)
class DecodeSettings:
    """What the ``decode`` model reads from its config parameters."""

    store_root: Path
    cache_size: int = DEFAULT_CACHE_SIZE  # decoded INRs kept in memory (LRU)
    max_frames: int = DEFAULT_MAX_FRAMES  # frames per request (bounds the response size)
    batch_size: int = DEFAULT_BATCH_SIZE  # frames per forward pass (bounds activation memory)
    device: str = "cpu"
    num_threads: int = 0  # torch intra-op threads of the instance (set_instance_threads); 0 keeps torch's default
    max_response_mb: int = DEFAULT_MAX_RESPONSE_MB  # bounds the response size whatever the frame size

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, instance_kind: str = "CPU",
                        device_id: str | int = 0) -> DecodeSettings:
        """Parse model parameters. ``device`` ``auto`` (default) means ``cuda:<device_id>`` for a GPU instance with
        CUDA available, else ``cpu``."""
        root = params.get("store_root", "").strip()
        if not root:
            raise ValueError("model parameter 'store_root' (the video store directory) is required")
        device = model_device(params, instance_kind, device_id)
        return cls(
            store_root=Path(root).expanduser(),
            cache_size=_int_param(params, "cache_size", DEFAULT_CACHE_SIZE, 1),
            max_frames=_int_param(params, "max_frames", DEFAULT_MAX_FRAMES, 1),
            batch_size=_int_param(params, "batch_size", DEFAULT_BATCH_SIZE, 1),
            device=device,
            num_threads=_int_param(params, "num_threads", 0, 0),
            max_response_mb=_int_param(params, "max_response_mb", DEFAULT_MAX_RESPONSE_MB, 1),
        )


class DecodeHandler:
    """The ``decode`` model without Triton: ``handle({"video_id": ..., "frame_indices": ...}) -> {"frames": ...}``."""

    def __init__(self, settings: DecodeSettings, log: Callable[[str], None] | None = None) -> None:
        import torch

        self.settings = settings
        self.log = log or (lambda msg: None)
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {settings.device!r} requested but CUDA is not available")
        self.cache = StoreCache(settings.store_root, settings.cache_size, device=settings.device)
        from .. import api  # noqa: F401 - import the decoder stack at model load, not on the first request

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        video_id = parse_video_id(inputs.get(VIDEO_ID))
        indices = parse_frame_indices(inputs.get(FRAME_INDICES), max_frames=self.settings.max_frames)
        t0 = time.perf_counter()
        decoded = self.cache.get(video_id)
        model = decoded.model
        cfg = model.config
        check_frame_range(indices, int(cfg.frames), video_id)
        frame_bytes = 3 * int(cfg.out_height) * int(cfg.out_width) * 4
        if len(indices) * frame_bytes > self.settings.max_response_mb * 2**20:
            most = max(1, self.settings.max_response_mb * 2**20 // frame_bytes)
            raise RequestError(f"{len(indices)} frames of video '{video_id}' ({cfg.out_width}x{cfg.out_height}) "
                               f"exceed the {self.settings.max_response_mb} MB response limit; ask for at most "
                               f"{most} per request")
        device = next(model.parameters()).device
        bs = self.settings.batch_size
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(indices), bs):
                idx = torch.from_numpy(indices[i:i + bs]).to(device)
                chunks.append(model(idx).float().cpu())
        frames = torch.cat(chunks).numpy()
        self.log(f"decoded {len(indices)} frame(s) of '{video_id}' in {1000 * (time.perf_counter() - t0):.1f} ms")
        if not np.isfinite(frames).all():  # a decoder that produces NaN is a damaged entry, not a result
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: its decoder produced non-finite values")
        return {FRAMES: np.ascontiguousarray(frames, dtype=np.float32)}

    def close(self) -> None:
        self.cache.clear()


# --- the model in a repository --------------------------------------------------------------------------------


def decode_model_kwargs(store_root: str | Path, target: Literal["local", "ngc"] = "local", *, cache_size: int = 32,
                        instances: int = 1, max_frames: int | None = None) -> dict:
    """Keyword arguments of :meth:`builder.triton.repository.RepositoryBuilder.add_python` for the ``decode`` model.

    ``local``: CPU instances and a store path resolved on this machine. ``ngc``: GPU instances (device ``auto`` picks
    ``cuda:<instance gpu>``) and ``store_root`` kept as given: it is a path inside the container.
    """
    from .repository import PYTHON_MODELS, TARGETS  # build time only: the served model imports this module too

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if cache_size < 1 or instances < 1:
        raise ValueError("cache_size and instances must be >= 1")
    root = str(Path(store_root).expanduser().resolve()) if target == "local" else str(store_root)
    params = {"store_root": root, "cache_size": str(cache_size), "device": "auto"}
    if max_frames is not None:
        params["max_frames"] = str(max_frames)
    return {
        "name": DECODE_MODEL,
        "source": PYTHON_MODELS / "decode" / "model.py",
        "inputs": DECODE_INPUTS,
        "outputs": DECODE_OUTPUTS,
        "parameters": params,
        "max_batch_size": 0,  # one request = one video and any number of frames: nothing to batch across requests
        "instances": instances,
        "kind": "KIND_GPU" if target == "ngc" else "KIND_CPU",
    }


def build_decode_repository(out: str | Path, store_root: str | Path, target: Literal["local", "ngc"] = "local", *,
                            cache_size: int = 32, instances: int = 1, clean: bool = True) -> Path:
    """Write a decode-only repository: the ``decode`` model over the video store at ``store_root``."""
    from .repository import RepositoryBuilder

    repo = RepositoryBuilder(out)
    repo.add_python(**decode_model_kwargs(store_root, target, cache_size=cache_size, instances=instances))
    return repo.build(clean=clean)
