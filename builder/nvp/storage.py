"""Adapters and pairings in the video store: one adapter file per (task, exit block), one pairing JSON per task
(``adapt``'s ranking, measurements and choice)."""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

from ..cliutil import finite_json
from ..codec import decode_tensors, encode_tensors
from ..config import QuantConfig
from ..store import VideoStore
from .path import AdapterSet

__all__ = ["adapter_file", "pairing_file", "stored_exits", "nvp_files", "save_adapter", "load_adapter",
           "load_pairing"]

_ADAPTER_RE = re.compile(r"adapter-(?P<task>.+)-e(?P<exit>\d+)\.nvp")
_PAIRING_RE = re.compile(r"pairing-(?P<task>.+)\.json")


def adapter_file(task: str, exit_block: int) -> str:
    return f"adapter-{task}-e{exit_block}.nvp"


def pairing_file(task: str) -> str:
    return f"pairing-{task}.json"


def stored_exits(files: Iterable[str], task: str) -> list[int]:
    """Exit blocks with a stored ``task`` adapter, from a store entry's file names."""
    return sorted(int(m["exit"]) for m in map(_ADAPTER_RE.fullmatch, files) if m and m["task"] == task)


def nvp_files(files: Iterable[str], task: str | None = None) -> list[str]:
    """The adapter and pairing files among ``files`` (of ``task`` only, when given), sorted."""
    out = []
    for name in files:
        m = _ADAPTER_RE.fullmatch(name) or _PAIRING_RE.fullmatch(name)
        if m and (task is None or m["task"] == task):
            out.append(name)
    return sorted(out)


def save_adapter(store: VideoStore, video_id: str, task: str, exit_block: int, layer: str, adapters: AdapterSet,
                 extra: dict[str, Any]) -> None:
    tensors = {k: v.detach().float().cpu() for k, v in adapters.state_dict().items()}
    # strict JSON in the bitstream: an undefined score (mAP of frames without detections) is stored as null
    meta = finite_json({"task": task, "exit_block": exit_block, "layer": layer, "adapters": adapters.configs(),
                        **extra})
    blob = encode_tensors(tensors, quant=QuantConfig(), meta=meta, raw=set(tensors))  # fp32, lossless
    store.add_file(video_id, adapter_file(task, exit_block), blob)


def load_adapter(store: VideoStore, video_id: str, task: str, exit_block: int) -> tuple[AdapterSet, dict[str, Any]]:
    dec = decode_tensors(store.get(video_id, adapter_file(task, exit_block)))
    adapters = AdapterSet.from_configs(dec.meta["adapters"])
    adapters.load_state_dict(dec.tensors)
    return adapters.eval(), dec.meta


def load_pairing(store: VideoStore, video_id: str, task: str) -> dict[str, Any]:
    """``adapt``'s pairing JSON for ``task``; ``KeyError`` (the store's ``MissingFile``) when never adapted."""
    return json.loads(store.get(video_id, pairing_file(task)))
