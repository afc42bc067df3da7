"""``adapt COLLECTION``: one adapter per (collection, task, exit block) for every video of a D-NeRV collection.

The members share one decoder, so their features at an exit block live in one space: an adapter fitted on some
members' frames can answer for the others. :func:`adapt_collection` trains the adapters on the training frames of
some members and measures and chooses the pair on the members it did not train on, so the agreement it reports is
on videos the adapter never saw. The adapters and the pairing are stored once, on the collection entry (bound to
the shared decoder); a member without adapters of its own reads them from there (:mod:`.storage`).
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from training.config import AdapterTrainConfig

from ..api import load_inr, read_source
from ..backbones import get_backbone
from ..cliutil import finite_json
from ..entry import INR_BINDING
from ..store import VideoStore
from ..tasks import get_task
from ..tasks.base import cat_outputs
from .measure import codec_measurement
from .search import (PairMeasurement, TrainingData, adapter_recipe, candidate_splits, fit_pair, measure_pair,
                     rank_pairs, select_pairs, shortlist, training_data, validation_frames)
from .storage import pairing_file, save_adapter

__all__ = ["adapt_collection", "split_members"]


def split_members(members: Sequence[str], train_videos: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(training members, held-out members): ``train_videos`` as given, else every other member from the first
    (half of them, rounded up). At least one member must be held out: it is what the agreement is measured on."""
    members = list(members)
    if len(members) < 2:
        raise ValueError("adapting a collection needs at least 2 videos: the adapter trains on some and is "
                         "measured on the others (adapt a single video by its own ID)")
    if train_videos is None:
        train = members[::2]
    else:
        unknown = [v for v in train_videos if v not in members]
        if unknown:
            raise ValueError(f"--train-videos names videos that are not in the collection: {', '.join(unknown)} "
                             f"(its videos: {', '.join(members)})")
        train = [m for m in members if m in set(train_videos)]
    held = [m for m in members if m not in train]
    if not train or not held:
        raise ValueError("--train-videos must leave at least one video to train on and one to measure on")
    return train, held


def _concat(parts: Sequence[TrainingData]) -> TrainingData:
    """Several members' training data as one set (same decoder, same size: the features stack)."""
    first = parts[0]
    return TrainingData(
        [s for p in parts for s in p.samples],
        {k: torch.cat([p.inputs[k] for p in parts]) for k in first.inputs},
        {l: [torch.cat([p.targets[l][j] for p in parts]) for j in range(len(first.targets[l]))]
         for l in first.targets},
        None if first.teacher is None else torch.cat([p.teacher for p in parts]))


def _mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) for r in rows)]
    return {k: statistics.fmean(float(r[k]) for r in rows) if all(math.isfinite(float(r[k])) for r in rows)
            else float("nan") for k in keys}


def adapt_collection(
    store: VideoStore,
    collection_id: str,
    task_name: str,
    *,
    train_videos: Sequence[str] | None = None,
    exits: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    top_k: int = 10,
    min_agreement: float = 0.95,
    max_adapter_share: float = 0.01,
    train: AdapterTrainConfig | None = None,
    train_frames: str | None = None,
    max_samples: int | None = None,
    weights: str | None = "default",
    random_init: bool = False,
    backbone_config: dict[str, Any] | None = None,
    progress: bool = True,
    repeats: int = 3,
) -> dict[str, Any]:
    """Fit one adapter per exit block for every video of ``collection_id``: train on ``train_frames`` (the task's
    default: a quarter of the frames) of the training members (:func:`split_members`), rank pairs by CKA and
    shortlist them as ``adapt`` does, then measure each pair on up to 16 frames of every held-out member and
    choose by the same rule on the mean of their scores. Also measured on the held-out members: the codec path
    (each member's H.264 twin) and the constant answer (the training frames' majority answer). Stores the
    adapters and the pairing on the collection entry; returns the summary (``adapt``'s fields, plus
    ``train_videos``, ``heldout_videos`` and ``per_video``: the chosen pair's scores on each held-out member)."""
    task = get_task(task_name)
    train = train or adapter_recipe(task)
    if store.video(collection_id).kind != "collection":
        raise ValueError(f"'{collection_id}' is not a collection; adapt a single video with 'adapt {collection_id}'")
    members = [m.id for m in store.members(collection_id)]
    train_ids, held_ids = split_members(members, train_videos)
    bb = get_backbone(task.backbone)
    model = bb.load_for(task, weights, random_init=random_init, config=backbone_config)
    scorer = task.kind.scorer(task, model, random_init)
    bound = store.inr_digest(collection_id)  # the shared decoder: what the adapters are bound to
    inrs = {m: load_inr(store, m).model for m in members}
    frames = {m: read_source(store.meta(m)).frames for m in members}
    splits, served = candidate_splits(store, task, bb, model, layers)
    exits = list(exits or range(1, inrs[members[0]].num_blocks + 1))
    t0 = time.perf_counter()
    train_idx = {m: task.train_frames(frames[m].shape[0], train_frames) for m in train_ids}
    per = max_samples and max(1, max_samples // len(train_ids))
    data = _concat([training_data(task, inrs[m], bb, model, splits, frames[m], exits, train, per,
                                  allowed=train_idx[m]) for m in train_ids])
    ranking = rank_pairs(data, exits, list(splits))
    # every frame of a held-out member is out of sample: up to 16 of them, spread
    eval_idx = {m: validation_frames(task, frames[m].shape[0], [])[0] for m in held_ids}
    with torch.no_grad():
        raw = {m: model(bb.preprocess(frames[m][eval_idx[m]])) for m in held_ids}
        teacher_raw = [model(bb.preprocess(frames[m][s])) for m in train_ids for s in task.samples(train_idx[m], None)]
    backbone_params = bb.num_params(model)
    measured, per_video = [], {}
    for c in tqdm(shortlist(ranking, top_k), desc=f"adapt {collection_id} {task.name}", file=sys.stderr,
                  disable=not progress):
        fit = fit_pair(task, c, data, splits[c.layer], train)
        each = {m: measure_pair(task, fit, inrs[m], splits[c.layer], data, eval_idx[m], raw[m], scorer,
                                backbone_params, repeats) for m in held_ids}
        measured.append(PairMeasurement(fit, _mean_scores([e.scores for e in each.values()]),
                                        statistics.fmean(e.gflops for e in each.values()),
                                        statistics.fmean(e.ms_per_frame for e in each.values()),
                                        fit.adapters.num_params() / backbone_params))
        per_video[id(measured[-1])] = {m: e.scores for m, e in each.items()}
    sel = select_pairs(measured, min_agreement, max_adapter_share)
    for k, m in sel.per_exit.items():
        save_adapter(store, collection_id, task.name, k, m.fit.candidate.layer, m.fit.adapters,
                     {"accuracy": m.scores["accuracy"], "train": train.to_dict()}, inr_sha256=bound)
    codec = [codec_measurement(store, m, store.meta(m), model, bb, eval_idx[m], raw[m], scorer, repeats)
             for m in held_ids]
    constant = [scorer(task.kind.constant_output(cat_outputs(teacher_raw), len(eval_idx[m])), raw[m])
                for m in held_ids]
    chosen = sel.chosen.row()
    summary = {
        "id": collection_id, "task": task.name, "collection": True,
        "exit_block": chosen["exit_block"], "layer": chosen["layer"], "adapter_kind": chosen["adapter_kind"],
        "adapter_params": chosen["adapter_params"], "backbone_params": backbone_params,
        "adapter_share": chosen["adapter_share"], "accuracy": chosen["accuracy"],
        "video_accuracy": chosen.get("video_accuracy", chosen["accuracy"]), "ms_per_frame": chosen["ms_per_frame"],
        "gflops": chosen["gflops"], "met_budget": sel.met_budget, "min_agreement": min_agreement,
        "max_adapter_share": max_adapter_share, "stored_exits": list(sel.per_exit), "served_layer": served,
        "pareto_front": sel.front,
        "codec": None if None in codec else _mean_scores([c.scores for c in codec])
        | {"ms_per_frame": statistics.fmean(c.ms_per_frame for c in codec)},
        "constant_baseline": _mean_scores(constant),
        "train_videos": train_ids, "heldout_videos": held_ids,
        "train_selection": train_frames or task.kind.default_train_frames, "train_frames": train_idx,
        "validation_frames": eval_idx, "chosen_out_of_sample": True,
        "per_video": per_video[id(sel.chosen)],
        "backbone_passes": sum(len({i for s in task.samples(train_idx[m], None) for i in s}) for m in train_ids)
        + sum(len(v) for v in eval_idx.values()),
        "weights": "random" if random_init else str(weights), "seconds": round(time.perf_counter() - t0, 2),
        "ranking": [r.__dict__ for r in ranking], "measured": [m.row() for m in measured],
        INR_BINDING: bound,
    }
    store.add_file(collection_id, pairing_file(task.name), json.dumps(finite_json(summary), indent=1).encode(),
                   if_inr=bound)
    return summary
