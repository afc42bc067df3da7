"""Adapters and pairings in the video store: one adapter file per (task, exit block), one pairing JSON per task
(``adapt``'s ranking, measurements and choice)."""
from __future__ import annotations

import json
from typing import Any

from ..cliutil import finite_json
from ..codec import decode_tensors, encode_tensors
from ..config import QuantConfig
from ..entry import ADAPTER, INR_BINDING, PAIRING, VideoEntry, adapter_file, check_binding, pairing_file
from ..store import VideoStore
from .path import AdapterSet

__all__ = ["adapter_file", "pairing_file", "stored_exits", "nvp_files", "save_adapter", "load_adapter",
           "load_pairing"]


def stored_exits(entry: VideoEntry, task: str) -> list[int]:
    """Exit blocks with a stored ``task`` adapter, from the entry's file list (the role table parses the names)."""
    return list(entry.adapters(task))


def nvp_files(entry: VideoEntry, task: str | None = None) -> list[str]:
    """The entry's adapter and pairing files (of ``task`` only, when given), sorted."""
    return sorted(f.name for f in entry.stored() if f.role in (ADAPTER, PAIRING)
                  and (task is None or f.keys["task"] == task))


def save_adapter(store: VideoStore, video_id: str, task: str, exit_block: int, layer: str, adapters: AdapterSet,
                 extra: dict[str, Any], *, inr_sha256: str) -> None:
    """Store the adapter bound to the decoder it was trained on (``inr_sha256``: ``store.inr_digest`` read with
    it); refused (``EntryChanged``, nothing written) if the stored decoder is no longer that one."""
    tensors = {k: v.detach().float().cpu() for k, v in adapters.state_dict().items()}
    # strict JSON in the bitstream: an undefined score (mAP of frames without detections) is stored as null
    meta = finite_json({"task": task, "exit_block": exit_block, "layer": layer, "adapters": adapters.configs(),
                        **extra, INR_BINDING: inr_sha256})
    blob = encode_tensors(tensors, quant=QuantConfig(), meta=meta, raw=set(tensors))  # fp32, lossless
    store.add_file(video_id, adapter_file(task, exit_block), blob, if_inr=inr_sha256)


def load_adapter(store: VideoStore, video_id: str, task: str, exit_block: int, *,
                 inr_sha256: str | None = None) -> tuple[AdapterSet, dict[str, Any]]:
    """The stored adapter and its metadata; given ``inr_sha256`` (the decoder it will run with), one trained on
    another decoder is refused (``StaleAdapter``)."""
    dec = decode_tensors(store.get(video_id, adapter_file(task, exit_block)))
    if inr_sha256 is not None:
        check_binding(dec.meta.get(INR_BINDING), inr_sha256, video_id, task)
    adapters = AdapterSet.from_configs(dec.meta["adapters"])
    adapters.load_state_dict(dec.tensors)
    return adapters.eval(), dec.meta


def load_pairing(store: VideoStore, video_id: str, task: str) -> dict[str, Any]:
    """``adapt``'s pairing JSON for ``task``; ``KeyError`` (the store's ``MissingFile``) when never adapted."""
    return json.loads(store.get(video_id, pairing_file(task)))
