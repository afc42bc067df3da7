"""Adapters and pairings in the video store: one adapter file per (task, exit block), one pairing JSON per task
(``adapt``'s ranking, measurements and choice)."""
from __future__ import annotations

import json
from typing import Any

from ..cliutil import finite_json
from ..codec import decode_tensors, encode_tensors
from ..config import QuantConfig
from ..entry import (ADAPTER, INR_BINDING, MEMBER, PAIRING, VideoEntry, adapter_file, check_binding, entry_kind,
                     pairing_file, parse_file)
from ..store import VideoStore
from .path import AdapterSet

__all__ = ["SERVED_DIR", "record_served_layers", "served_layer", "adapter_file", "pairing_file", "stored_exits",
           "adapter_holder", "nvp_files", "adapter_blob", "save_adapter", "load_adapter", "load_pairing"]


def stored_exits(entry: VideoEntry, task: str) -> list[int]:
    """Exit blocks with a stored ``task`` adapter, from the entry's file list (the role table parses the names)."""
    return list(entry.adapters(task))


def adapter_holder(store: VideoStore, video_id: str, task: str) -> str:
    """The entry whose ``task`` adapters answer ``video_id``: its own, or for a collection member without any, its
    collection's when ``adapt COLLECTION`` fitted them (one adapter for every member)."""
    def has_adapters(entry: dict[str, Any]) -> bool:
        return any((f := parse_file(n)) is not None and f.role == ADAPTER and f.keys["task"] == task
                   for n in entry["files"])

    # one read of entry.json, the raw meta's kind fields only: loosely written entries are videos
    own = store.entry(video_id)
    kind, collection, _ = entry_kind(own["meta"])
    if kind != MEMBER or has_adapters(own):
        return video_id
    return collection if has_adapters(store.entry(collection)) else video_id


def nvp_files(entry: VideoEntry, task: str | None = None) -> list[str]:
    """The entry's adapter and pairing files (of ``task`` only, when given), sorted."""
    return sorted(f.name for f in entry.stored() if f.role in (ADAPTER, PAIRING)
                  and (task is None or f.keys["task"] == task))


def adapter_blob(task: str, exit_block: int, layer: str, adapters: AdapterSet, extra: dict[str, Any], *,
                 inr_sha256: str) -> bytes:
    """The adapter file's bytes: fp32 tensors (lossless) and metadata, bound to the decoder ``inr_sha256``."""
    tensors = {k: v.detach().float().cpu() for k, v in adapters.state_dict().items()}
    # strict JSON in the bitstream: an undefined score (mAP of frames without detections) is stored as null
    meta = finite_json({"task": task, "exit_block": exit_block, "layer": layer, "adapters": adapters.configs(),
                        **extra, INR_BINDING: inr_sha256})
    return encode_tensors(tensors, quant=QuantConfig(), meta=meta, raw=set(tensors))


def save_adapter(store: VideoStore, video_id: str, task: str, exit_block: int, layer: str, adapters: AdapterSet,
                 extra: dict[str, Any], *, inr_sha256: str) -> None:
    """Store the adapter bound to the decoder it was trained on (``inr_sha256``: ``store.inr_digest`` read with
    it); refused (``EntryChanged``, nothing written) if the stored decoder is no longer that one."""
    store.add_file(video_id, adapter_file(task, exit_block),
                   adapter_blob(task, exit_block, layer, adapters, extra, inr_sha256=inr_sha256), if_inr=inr_sha256)


def load_adapter(store: VideoStore, video_id: str, task: str, exit_block: int, *,
                 inr_sha256: str | None = None) -> tuple[AdapterSet, dict[str, Any]]:
    """The stored adapter (:func:`adapter_holder`'s) and its metadata; given ``inr_sha256`` (the decoder it will
    run with), one trained on another decoder is refused (``StaleAdapter``). A collection's adapter is bound to
    the shared decoder, whatever the member's own keyframes."""
    holder = adapter_holder(store, video_id, task)
    dec = decode_tensors(store.get(holder, adapter_file(task, exit_block)))
    if inr_sha256 is not None:
        check_binding(dec.meta.get(INR_BINDING), inr_sha256 if holder == video_id else store.inr_digest(holder),
                      video_id, task)
    adapters = AdapterSet.from_configs(dec.meta["adapters"])
    adapters.load_state_dict(dec.tensors)
    return adapters.eval(), dec.meta


def load_pairing(store: VideoStore, video_id: str, task: str) -> dict[str, Any]:
    """``adapt``'s pairing JSON for ``task``; ``KeyError`` (the store's ``MissingFile``) when never adapted. A
    member answered by its collection's adapters gets the collection's pairing with its own training and
    validation frames (none when it was held out) and ``"collection"``: the collection's ID."""
    holder = adapter_holder(store, video_id, task)
    pairing = json.loads(store.get(holder, pairing_file(task)))
    if holder == video_id:
        return pairing
    return {**pairing, "collection": holder, "train_frames": pairing["train_frames"].get(video_id, []),
            "validation_frames": pairing["validation_frames"].get(video_id, [])}


# build-repo records each task's injection layer here, so that adapt fits a video added later at the layer a
# running server's tail starts from (hot-add: the new video is answered without rebuilding the repository)
SERVED_DIR = ".served"


def record_served_layers(store: VideoStore, layers: dict[str, str]) -> None:
    """Record ``task -> injection layer`` of a repository built from ``store`` (the last build wins); a store
    this process may not write (a server's read-only mount) keeps no record, with a warning."""
    import os

    import sys

    d = store.root / SERVED_DIR
    try:
        d.mkdir(parents=True, exist_ok=True)
        for task, layer in layers.items():
            tmp = d / f".{task}.json.tmp"
            tmp.write_text(json.dumps({"task": task, "layer": layer}), encoding="utf-8")
            os.replace(tmp, d / f"{task}.json")  # atomic: a reader sees the old record or the new one
    except OSError as e:  # a server's store is mounted read-only (docker/compose.yaml, deploy/k8s)
        print(f"build-repo: the served layers are not recorded in {d} ({e.strerror}): videos adapted later choose "
              "their own layer unless adapt is given --layers " + " ".join(sorted(set(layers.values()))),
              file=sys.stderr)


def served_layer(store: VideoStore, task: str) -> str | None:
    """The injection layer the last ``build-repo`` serves ``task`` from, or None."""
    try:
        return str(json.loads((store.root / SERVED_DIR / f"{task}.json").read_text(encoding="utf-8"))["layer"])
    except (OSError, ValueError, KeyError):
        return None
