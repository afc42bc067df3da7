"""The neural-centric path: INR decoder prefix (exit block k) -> adapter -> backbone tail (after layer l).

``adapt`` pairs exit blocks with injection layers (CKA pre-filter, then measured agreement), trains one adapter per
candidate pair, and stores the adapters and the ranking with the video. ``evaluate`` compares three paths per task
on the seed's protocol frames: raw frames + full backbone, full INR decode + full backbone, and NVP.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .adapters import adapter_from_config, build_adapter
from .api import load_inr, read_source
from .backbones import Backbone, get_backbone
from .cka import linear_cka
from .cliutil import finite_json
from .codec import decode_tensors, encode_tensors
from .config import AdapterTrainConfig, QuantConfig
from .inr import INR
from .protocols import METRICS, CaptionScorer, classification_scores, detection_scores, gflops_of
from .selection import consecutive_frames, uniform_frames
from .store import VideoStore
from .tasks import TaskSpec, get_task

__all__ = ["AdapterSet", "DerivedMask", "NVPPath", "adapt_video", "evaluate_task", "plot_exits", "load_task_model",
           "load_adapter", "save_adapter", "adapter_file", "pairing_file", "pareto_front", "select_pair", "TIMING"]


def adapter_file(task: str, exit_block: int) -> str:
    return f"adapter-{task}-e{exit_block}.nvp"


def pairing_file(task: str) -> str:
    return f"pairing-{task}.json"


# --- feature plumbing ---------------------------------------------------------------------------------------

def _samples(task: TaskSpec, num_frames: int, max_samples: int | None) -> list[list[int]]:
    """Training samples: single frames for image tasks, 32-frame windows (stride 8) for action tasks; all of them
    when ``max_samples`` is None, else at most that many, evenly spread."""
    if task.kind == "action":
        if num_frames < task.clip:
            raise ValueError(f"{task.name} needs {task.clip} consecutive frames; this video has {num_frames}")
        starts = list(range(0, num_frames - task.clip + 1, 8))[:max_samples]
        return [list(range(s, s + task.clip)) for s in starts]
    step = 1 if max_samples is None else max(1, math.ceil(num_frames / max_samples))
    return [[i] for i in range(0, num_frames, step)]


@torch.no_grad()
def inr_features(inr: INR, frames: Sequence[int], exit_block: int, video: bool) -> Tensor:
    """Features after ``exit_block`` for the given frames: (N, C, h, w), or (1, C, T, h, w) for a clip."""
    f = torch.cat([inr.features(list(frames[i:i + 8]), exit_block) for i in range(0, len(frames), 8)])
    return f.permute(1, 0, 2, 3).unsqueeze(0) if video else f


class DerivedMask(nn.Module):
    """A cut's padding mask, made rather than learned (DETR's cut carries features + mask): all-valid, at the
    shape and dtype the head produces. Frames of one video share one size, so DETR never pads them and the head's
    own mask is all ones too."""

    kind = "mask"

    def __init__(self, shape: Sequence[int], dtype: str) -> None:
        super().__init__()
        self.shape, self.dtype = tuple(int(s) for s in shape), dtype

    def forward(self, f: Tensor) -> Tensor:
        return torch.ones((f.shape[0], *self.shape), dtype=getattr(torch, self.dtype), device=f.device)

    def num_params(self) -> int:
        return 0

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "out_shape": list(self.shape), "dtype": self.dtype}


def _piece_from_config(cfg: dict[str, Any]) -> nn.Module:
    return DerivedMask(cfg["out_shape"], cfg["dtype"]) if cfg["kind"] == DerivedMask.kind else adapter_from_config(cfg)


class AdapterSet(nn.ModuleList):
    """One adapter per tensor crossing the cut (one for most backbones; SlowFast's cut carries two pathways;
    DETR's carries features + a :class:`DerivedMask`)."""

    def forward(self, f: Tensor) -> tuple[Tensor, ...]:
        return tuple(a(f) for a in self)

    def num_params(self) -> int:
        return sum(a.num_params() for a in self)

    def configs(self) -> list[dict[str, Any]]:
        return [a.config() for a in self]


class NVPPath(nn.Module):
    """prefix (INR up to ``exit_block``) -> adapters -> tail; ``forward(frame_indices)`` returns the task output."""

    def __init__(self, inr: INR, exit_block: int, adapters: AdapterSet, tail: nn.Module, video: bool) -> None:
        super().__init__()
        self.inr, self.exit_block, self.adapters, self.tail, self.video = inr, exit_block, adapters, tail, video

    @torch.no_grad()
    def forward(self, frames: Sequence[int]) -> Any:
        return self.tail(*self.adapters(inr_features(self.inr, frames, self.exit_block, self.video)))


# --- adapters in the store -----------------------------------------------------------------------------------

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
    adapters = AdapterSet([_piece_from_config(c) for c in dec.meta["adapters"]])
    adapters.load_state_dict(dec.tensors)
    return adapters.eval(), dec.meta


# --- adapt ---------------------------------------------------------------------------------------------------

@dataclass
class _Candidate:
    exit_block: int
    layer: str
    cka: float | None
    cka_debiased: float | None


def _score(task: TaskSpec, out: Any, raw: Any, captioner: CaptionScorer | None = None) -> dict[str, float]:
    """The path's output against the raw frames' (builder.protocols); ``accuracy`` is the task's metric."""
    if task.kind in ("classification", "action"):
        return classification_scores(_logits(out), _logits(raw))
    if task.kind == "detection":
        return detection_scores(out, raw)
    if task.kind == "captioning":
        if captioner is None:
            raise ValueError(f"{task.name} scores need a caption scorer (see _caption_scorer)")
        return captioner(out, raw)
    raise NotImplementedError(f"scoring for {task.kind} tasks ({task.name}) is not implemented")


def _caption_scorer(task: TaskSpec, model: nn.Module, random_init: bool) -> CaptionScorer | None:
    """Captioning: BLIP captions each path's image embeddings; CLIP-RN50's text tower (its real weights, or a
    small random CLIP with ``random_init``) scores them against the raw frames' captions."""
    if task.kind != "captioning":
        return None
    from .weights import WeightsNotFound

    clip_bb = get_backbone("clip_rn50")
    try:
        clip = clip_bb.load(None, random_init=True, small=True) if random_init else clip_bb.load()
    except WeightsNotFound as e:
        raise WeightsNotFound(f"{task.name} captions are scored with CLIP-RN50's text tower, whose weights are "
                              f"missing: {e}") from None

    def caption(embeds: Tensor) -> list[str]:
        # random weights come without a tokenizer: caption token ids as text (plumbing only)
        return model.captions(embeds, ids_without_tokenizer=random_init)

    return CaptionScorer(caption, clip.encode_texts)


def _logits(out: Any) -> Tensor:
    return out if isinstance(out, Tensor) else out["logits"] if isinstance(out, dict) else out[0]


def adapt_video(
    store: VideoStore,
    video_id: str,
    task_name: str,
    *,
    backbone: Backbone | None = None,
    exits: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    top_k: int = 10,
    min_agreement: float = 0.95,
    max_adapter_share: float = 0.01,
    train: AdapterTrainConfig = AdapterTrainConfig(),
    max_samples: int | None = None,
    weights: str | None = "default",
    random_init: bool = False,
    backbone_config: dict[str, Any] | None = None,
    progress: bool = True,
    repeats: int = 3,
) -> dict[str, Any]:
    """Rank (exit block, injection layer) pairs by debiased CKA (a pre-filter only), train adapters for the top
    ``top_k``, and measure each one on the protocol frames: agreement with the raw frames' answers and wall-clock
    ms per frame (median of ``repeats``). The chosen pair is the fastest one whose frame-level and video-level
    agreement both reach ``min_agreement``, i.e. the fastest point of the Pareto front (quality = video-level, then
    frame-level agreement, vs ms per frame) of the pairs meeting the budget; when none does, the most accurate
    (then fastest) pair. The same rule picks the adapter stored for every other exit block. The pairing JSON keeps
    the ranking, every measured pair, the Pareto front and the codec path's measurement (the honest baseline).

    ``max_samples`` None trains on every frame (action tasks: every 32-frame window at stride 8), unless their
    features would not fit in :data:`FEATURE_BUDGET` bytes; then as many as fit, evenly spread.

    ``train.joint``: then fine-tune the INR with the chosen pair's adapter (:func:`_joint`); the re-quantised INR
    replaces the stored one, and every adapter trained on the old one is dropped. ``summary["joint"]`` holds PSNR,
    bpp and accuracy before/after; ``summary["accuracy"]`` is then the after value, while ``measured`` keeps the
    frozen-INR measurements that chose the pair."""
    from training.adapters import fit_adapter

    from .protocols import ms_per_frame

    task = get_task(task_name)
    video = task.kind == "action"
    has_logits = task.kind in ("classification", "action")
    if train.task_loss > 0 and not has_logits:  # task_loss is a KL over class logits
        raise ValueError(f"--task-loss needs class logits; {task.name} ({task.kind}) trains on features only")
    bb = backbone or get_backbone(task.name)
    model = load_task_model(bb, task, weights, random_init, backbone_config)
    captioner = _caption_scorer(task, model, random_init)
    meta = store.meta(video_id)
    inr = load_inr(store, video_id).model
    frames = read_source(meta).frames
    n = frames.shape[0]
    samples = _samples(task, n, max_samples)
    exits = list(exits or range(1, inr.num_blocks + 1))
    layers = list(layers or bb.split_points())
    splits = {l: bb.split(l, model=model) for l in layers}

    # targets: backbone features at each layer, from the raw (or INR-decoded) frames
    src = frames if train.target == "raw" else inr.decode_all()
    if max_samples is None:  # every frame, as far as their features fit in memory
        samples = _samples(task, n, _affordable_samples(task, n, inr, bb, splits, exits, src, video))
    t0 = time.perf_counter()
    with torch.no_grad():
        inputs_by_exit = {k: torch.cat([inr_features(inr, s, k, video) for s in samples]) for k in exits}
        targets: dict[str, list[Tensor]] = {}
        for l, sm in splits.items():
            outs = [sm.head(bb.preprocess(src[s])) for s in samples]  # a tuple per sample, one entry per cut tensor
            targets[l] = [torch.cat([o[j] for o in outs]) for j in range(len(outs[0]))]
        # the raw frames' answers, one row per training sample (the task loss's target)
        teacher = (torch.cat([_logits(model(bb.preprocess(frames[s]))) for s in samples])
                   if has_logits and (train.task_loss > 0 or (train.joint and train.joint_task > 0)) else None)
    # CKA pre-filter (debiased when there are enough samples)
    cands = []
    for k in exits:
        for l in layers:
            x, ys = inputs_by_exit[k], [y for y in targets[l] if y.is_floating_point()]  # not masks
            m = x.shape[0]  # CKA needs samples: >= 2 (plain), >= 5 (debiased); one 32-frame window has none
            plain = sum(linear_cka(x, y) for y in ys) / len(ys) if m >= 2 else None
            deb = sum(linear_cka(x, y, debiased=True) for y in ys) / len(ys) if m >= 5 else plain
            cands.append(_Candidate(k, l, plain, deb))
    # unrankable pairs (None) keep their exit/layer order after the ranked ones
    cands.sort(key=lambda c: -math.inf if c.cka_debiased is None else c.cka_debiased, reverse=True)
    kept = cands[:top_k]

    # measure: train an adapter per kept pair, score it on the protocol frames against the raw-frame output
    eval_idx = (consecutive_frames(n, task.clip) if video else uniform_frames(n, task.clip))
    with torch.no_grad():
        raw_out = model(bb.preprocess(frames[eval_idx]))
    results, trained = [], []
    for c in tqdm(kept, desc=f"adapt {task.name}", file=sys.stderr, disable=not progress):
        sm = splits[c.layer]
        x = inputs_by_exit[c.exit_block]
        adapters = AdapterSet([_cut_piece(task, x, y, train.adapter) for y in targets[c.layer]])
        if train.task_loss > 0 and len(adapters) == 1:
            fits = [fit_adapter(adapters[0], x, targets[c.layer][0], train, tail=sm.tail, teacher=teacher,
                                progress=False)]
        else:  # the task loss needs the whole cut: multi-tensor cuts (SlowFast) train on features alone
            feat_only = dataclasses.replace(train, task_loss=0.0)
            fits = [fit_adapter(a, x, y, feat_only, progress=False) for a, y in zip(adapters, targets[c.layer])
                    if not isinstance(a, DerivedMask)]
        path = NVPPath(inr, c.exit_block, adapters, sm.tail, video)
        scores = _score(task, path(eval_idx), raw_out, captioner)
        gf = _nvp_gflops(inr, c.exit_block, adapters, sm.tail, video, x[:1])
        row = {"exit_block": c.exit_block, "layer": c.layer, "cka": c.cka, "cka_debiased": c.cka_debiased,
               "rel_mse": max(f.rel_mse for f in fits), "epochs": max(f.epochs for f in fits),
               "adapter_kind": adapters[0].kind, "adapter_params": adapters.num_params(),
               "adapter_share": adapters.num_params() / bb.num_params(model), "gflops": gf,
               "ms_per_frame": ms_per_frame(lambda: path(eval_idx), len(eval_idx), repeats), **scores}
        results.append(row)
        trained.append((row, adapters))
    # adapters must stay tiny: pairs over the parameter budget are measured and reported, never chosen (e.g. a
    # 1x1 from a wide INR block into a 1280-channel last stage is a classifier of its own, not an adapter)
    small = [r for r in results if r["adapter_share"] <= max_adapter_share]
    if not small:
        raise ValueError(f"every measured adapter exceeds --max-adapter-share {max_adapter_share:.2%} of the "
                         f"backbone (smallest {min(r['adapter_share'] for r in results):.2%}); try earlier layers "
                         "(--layers) or a larger budget")
    chosen, met = select_pair(small, min_agreement)
    stored = []
    for k in sorted({r["exit_block"] for r in small}):
        row = chosen if k == chosen["exit_block"] else select_pair(
            [r for r in small if r["exit_block"] == k], min_agreement)[0]
        adapters = next(a for r, a in trained if r is row)
        save_adapter(store, video_id, task.name, k, row["layer"], adapters,
                     {"accuracy": row["accuracy"], "train": train.to_dict()})
        stored.append(k)
    codec = _codec_measurement(store, video_id, meta, task, model, bb, eval_idx, raw_out, repeats, captioner)
    front_keys = ("exit_block", "layer", "adapter_kind", "video_accuracy", "accuracy", "top5", "kl", "ms_per_frame",
                  "gflops", "adapter_share")
    summary = {
        "id": video_id, "task": task.name, "exit_block": chosen["exit_block"], "layer": chosen["layer"],
        "adapter_params": chosen["adapter_params"], "backbone_params": bb.num_params(model),
        "adapter_share": chosen["adapter_params"] / bb.num_params(model), "accuracy": chosen["accuracy"],
        "video_accuracy": chosen.get("video_accuracy", chosen["accuracy"]), "ms_per_frame": chosen["ms_per_frame"],
        "gflops": chosen["gflops"], "met_budget": met, "min_agreement": min_agreement,
        "max_adapter_share": max_adapter_share,
        "adapter_kind": chosen["adapter_kind"], "stored_exits": stored,
        "pareto_front": [{k: r.get(k) for k in front_keys} for r in pareto_front(small)],
        "codec": codec, "faster_than_codec": None if codec is None else chosen["ms_per_frame"] < codec["ms_per_frame"],
        "repeats": repeats, "samples": len(samples),
        "weights": "random" if random_init else str(weights), "seconds": round(time.perf_counter() - t0, 2),
        "ranking": [c.__dict__ for c in cands], "measured": results,
    }
    if train.joint:
        k, layer = chosen["exit_block"], chosen["layer"]
        summary["joint"] = _joint(store, video_id, task, inr, frames, samples, k,
                                  next(a for r, a in trained if r is chosen),
                                  splits[layer], targets[layer], train, teacher=teacher, video=video,
                                  eval_idx=eval_idx, raw_out=raw_out, captioner=captioner, progress=progress)
        summary["accuracy"] = summary["joint"]["accuracy_after"]
    store.add_file(video_id, pairing_file(task.name), json.dumps(finite_json(summary), indent=1).encode())
    return summary


def _joint(store: VideoStore, video_id: str, task: TaskSpec, inr: INR, frames: Tensor, samples: list[list[int]],
           exit_block: int, adapters: AdapterSet, split: Any, targets: list[Tensor], train: AdapterTrainConfig, *,
           teacher: Tensor | None, video: bool, eval_idx: list[int], raw_out: Any,
           captioner: CaptionScorer | None, progress: bool) -> dict[str, Any]:
    """Joint mode: fine-tune the INR with the chosen pair's adapter (``training.joint``), store the re-quantised
    INR in place of the old one, re-measure the pair on the decoded (stored) INR and keep only its adapter.

    Every other adapter of the video (other exits of this task, all other tasks) was fitted to the old INR's
    features and is now stale: it is deleted with a warning, and those tasks need ``adapt`` again.
    """
    import warnings

    from training.joint import fit_joint
    from training.recipes import RECIPES

    from .api import replace_inr

    meta = store.meta(video_id)
    before = {"psnr": meta["psnr"], "bpp": meta["bpp"], "bytes": meta["bytes"]}
    accuracy_before = _score(task, NVPPath(inr, exit_block, adapters, split.tail, video)(eval_idx), raw_out,
                             captioner)["accuracy"]
    use_task = teacher is not None and train.joint_task > 0
    if train.joint_task > 0 and not use_task:
        warnings.warn(f"joint mode: {task.name} ({task.kind}) has no class logits, so the task term "
                      f"(weight {train.joint_task}) is left out", stacklevel=3)
    t0 = time.perf_counter()
    fit = fit_joint(inr, adapters, split.tail, frames, samples, exit_block, targets, train,
                    recon_loss=RECIPES[meta["arch"]].loss, video=video, teacher=teacher if use_task else None,
                    progress=progress)
    stale = sorted(n for n in store.entry(video_id)["files"]
                   if n.startswith(("adapter-", "pairing-")) and n != pairing_file(task.name))
    others = [n for n in stale if not n.startswith((f"adapter-{task.name}-", f"pairing-{task.name}."))]
    new = replace_inr(store, video_id, inr, frames, drop=stale, meta={"joint": {
        "task": task.name, "exit_block": exit_block, "epochs": fit.epochs, "psnr_before": before["psnr"],
        "bpp_before": before["bpp"]}})
    if others:
        warnings.warn(f"joint mode changed the INR of '{video_id}': deleted the stale adapters {others}; run "
                      f"adapt again for those tasks", stacklevel=3)
    stored = load_inr(store, video_id).model  # measure what is stored: the quantised INR
    after = _score(task, NVPPath(stored, exit_block, adapters, split.tail, video)(eval_idx), raw_out, captioner)
    save_adapter(store, video_id, task.name, exit_block, split.at, adapters,
                 {"accuracy": after["accuracy"], "train": train.to_dict(), "joint": True})
    return {
        "epochs": fit.epochs, "seconds": round(time.perf_counter() - t0, 2),
        "weights": {"recon": train.joint_recon, "feature": train.joint_feature,
                    "task": train.joint_task if use_task else 0.0},
        "psnr_before": before["psnr"], "psnr_after": new["psnr"], "train_psnr": fit.psnr,
        "bpp_before": before["bpp"], "bpp_after": new["bpp"], "bytes_before": before["bytes"],
        "bytes_after": new["bytes"], "accuracy_before": accuracy_before, "accuracy_after": after["accuracy"],
        "scores_after": after, "dropped": [n for n in stale if n != adapter_file(task.name, exit_block)],
        "history": fit.history,
    }


def load_task_model(bb: Backbone, task: TaskSpec, weights: str | None, random_init: bool,
                    config: dict[str, Any] | None = None) -> nn.Module:
    """The backbone ready for its task: CLIP-RN50 classifies zero-shot over the ImageNet class names (its text
    tower embeds them once), so its logits are comparable to the other classifiers'."""
    model = bb.load(weights, random_init=random_init, **(config or {}))
    if task.name == "clip_rn50":
        from torchvision.models import ResNet50_Weights  # class names ship in torchvision; nothing is downloaded

        with torch.no_grad():
            model.set_classifier(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return model.eval()


def _adapter_kind(task: TaskSpec, target: Tensor) -> str:
    """The seed's adapter for the task, unless the cut's tensor has another rank (e.g. a CNN stage of a
    transformer pipeline, where the 1x1 conv adapter fits)."""
    rank = target.ndim - 1
    if task.adapter == "patch_embed" and rank == 3:
        return "conv1x1"
    return task.adapter


def _cut_piece(task: TaskSpec, x: Tensor, target: Tensor, adapter: str | None = None) -> nn.Module:
    """What produces one cut tensor from INR features ``x``: a trained adapter, or for a non-float tensor (DETR's
    padding mask) a :class:`DerivedMask` of the target's size."""
    if not target.is_floating_point():
        return DerivedMask(target.shape[1:], str(target.dtype).removeprefix("torch."))
    return build_adapter(_ablation_kind(task, target, adapter), tuple(x.shape[1:]), tuple(target.shape[1:]))


def _nvp_gflops(inr: INR, exit_block: int, adapters: AdapterSet, tail: nn.Module, video: bool,
                feat: Tensor) -> float:
    """GFLOPs per frame of prefix + adapters + tail."""
    prefix = sum(b.gflops for b in inr.block_info
                 if b.name == "stem" or (b.name.startswith("block") and int(b.name[5:]) <= exit_block))
    per = feat.shape[2] if video else feat.shape[0]
    rest = gflops_of(lambda f: tail(*adapters(f)), feat, per=per)
    return prefix + rest


# --- pair selection by measurement ---------------------------------------------------------------------------

FEATURE_BUDGET = 2 << 30  # bytes of INR features + backbone targets adapt may hold for training (all exits, layers)


def _ablation_kind(task: TaskSpec, target: Tensor, override: str | None) -> str:
    """The task's seed adapter, or ``override`` (a capacity ablation) where the seed's is the 1x1 conv."""
    kind = _adapter_kind(task, target)
    if override is None or override == kind:
        return kind
    if kind != "conv1x1":
        raise ValueError(f"adapter {override!r} replaces the seed's conv1x1 at (C, H, W) cuts; this {task.name} "
                         f"cut takes {kind!r} adapters")
    return override


def _affordable_samples(task: TaskSpec, n: int, inr: INR, bb: Backbone, splits: dict[str, Any],
                        exits: Sequence[int], src: Tensor, video: bool, budget: int = FEATURE_BUDGET) -> int | None:
    """None when the training features of every sample (INR features at every exit + backbone targets at every
    layer) fit in ``budget`` bytes, else how many samples do (measured on one sample)."""
    one = _samples(task, n, 1)[0]
    with torch.no_grad():
        per = sum(inr_features(inr, one, k, video).nbytes for k in exits)
        per += sum(t.nbytes for sm in splits.values() for t in sm.head(bb.preprocess(src[one])))
    fit = max(1, budget // max(per, 1))
    total = len(_samples(task, n, None))
    if total <= fit:
        return None
    print(f"adapt: training on {fit} of {total} samples (features of all would exceed {budget / 2**30:.1f} GiB)",
          file=sys.stderr)
    return fit


def _quality(row: dict[str, Any]) -> tuple[float, float]:
    """Pareto quality of a measured pair: video-level agreement first (frame-level is noisy on unstable clips), then
    frame-level agreement. Rows without a video-level score (non-classification tasks) use ``accuracy`` twice."""
    acc = float(row["accuracy"])
    acc = -math.inf if math.isnan(acc) else acc  # undefined (mAP without reference boxes) ranks last
    return float(row.get("video_accuracy", acc)), acc


def pareto_front(rows: Sequence[dict[str, Any]], cost: str = "ms_per_frame") -> list[dict[str, Any]]:
    """The rows no other row beats: none is at most as costly and at least as good (:func:`_quality`, compared
    lexicographically) and strictly better in one. Sorted by cost, so quality strictly rises along the front; of
    rows tied in cost and quality, the first is kept."""
    front: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: (r[cost], tuple(-q for q in _quality(r)))):
        if not front or _quality(r) > _quality(front[-1]):
            front.append(r)
    return front


def select_pair(rows: Sequence[dict[str, Any]], min_agreement: float,
                cost: str = "ms_per_frame") -> tuple[dict[str, Any], bool]:
    """The pair to use, and whether it met the budget: the cheapest row whose frame-level and video-level
    agreement both reach ``min_agreement`` (the first point of the Pareto front of those rows); when none does, the
    best-quality row (the front's last point: ties in quality go to the cheaper one)."""
    if not rows:
        raise ValueError("no measured pairs to select from")
    ok = [r for r in rows if min(_quality(r)) >= min_agreement]
    if ok:
        return pareto_front(ok, cost)[0], True
    return pareto_front(rows, cost)[-1], False


def _codec_measurement(store: VideoStore, video_id: str, meta: dict[str, Any], task: TaskSpec, model: nn.Module,
                       bb: Backbone, idx: Sequence[int], raw: Any, repeats: int,
                       captioner: Any = None) -> dict[str, Any] | None:
    """Scores and ms per frame of the codec path (stored H.264 copy -> PyAV -> backbone); None without a copy."""
    from .protocols import ms_per_frame

    from .api import h264_frames

    h264 = _codec_file(store, video_id)
    if h264 is None:
        return None
    # file and metadata resolved once: the timed run is decode + preprocess + backbone, no store lookups
    run = lambda: model(bb.preprocess(h264_frames(h264, meta, idx)))  # noqa: E731
    with torch.no_grad():
        out = run()
    return {**_score(task, out, raw, captioner), "ms_per_frame": ms_per_frame(run, len(idx), repeats)}


# --- evaluate ------------------------------------------------------------------------------------------------

TIMING = {
    "raw": "preprocess + full backbone on frames already decoded in memory (no decoding counted)",
    "codec": "PyAV decode of the stored H.264 copy up to the last protocol frame (RGB conversion of the protocol "
             "frames only) + resize + full backbone",
    "fulldecode": "INR decode of the protocol frames (all blocks + RGB head) + resize + full backbone",
    "nvp": "INR prefix up to the exit block + adapter + backbone tail",
}


def _codec_file(store: VideoStore, vid: str) -> Path | None:
    """The stored H.264 copy of ``vid`` (None for entries encoded before the store kept one)."""
    from .api import H264_FILE
    from .store import MissingFile

    try:
        return store.path(vid, H264_FILE)
    except MissingFile:
        return None


def evaluate_task(
    store: VideoStore,
    video_ids: Sequence[str],
    task_name: str,
    *,
    exit_block: int | None = None,
    weights: str | None = "default",
    random_init: bool = False,
    backbone: Backbone | None = None,
    backbone_config: dict[str, Any] | None = None,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, Any]:
    """Accuracy, GFLOPs and wall-clock ms per frame of the raw, codec, fulldecode and NVP paths, averaged over
    ``video_ids``; plus the same for every exit block that has a stored adapter (for the accuracy-vs-exit plot).

    Accuracy is agreement with the raw frames' answers (pseudo ground truth) on the task's protocol frames.
    ``ms_per_frame`` is measured here, in this process: the protocol sample (8 frames, or one 32-frame clip) as one
    batch, one warm-up call, median of ``repeats`` calls, divided by its frames; :data:`TIMING` says what each
    path's time covers. ``setup_ms`` is the one-off per-video cost of turning the stored INR bits into a decoder
    (entropy decoding + dequantisation), paid once per video, not per frame. The codec path is skipped for store
    entries without an H.264 copy.
    """
    from .protocols import ms_per_frame, prediction_stability

    task = get_task(task_name)
    video = task.kind == "action"
    bb = backbone or get_backbone(task.name)
    model = load_task_model(bb, task, weights, random_init, backbone_config)
    captioner = _caption_scorer(task, model, random_init)
    backbone_params = bb.num_params(model)
    per_video, per_exit_all = [], {}
    for vid in video_ids:
        meta = store.meta(vid)
        t_setup = time.perf_counter()
        inr = load_inr(store, vid).model
        setup_ms = 1000 * (time.perf_counter() - t_setup)
        frames = read_source(meta).frames
        n = frames.shape[0]
        idx = consecutive_frames(n, task.clip, seed) if video else uniform_frames(n, task.clip, seed)
        try:
            pairing = json.loads(store.get(vid, pairing_file(task.name)))
        except KeyError:  # MissingFile: never adapted for this task
            raise ValueError(f"video '{vid}' has no {task.name} adapters yet; run 'python -m builder adapt {vid} "
                             f"--task {task.name}' first") from None
        chosen = exit_block or pairing["exit_block"]
        # each path as a closure over its whole work, so the scored and the timed call run the same code; fresh
        # inputs per call: pytorchvideo's SlowFast overwrites its input list in place
        run_raw = lambda: model(bb.preprocess(frames[idx]))  # noqa: E731
        run_full = lambda: model(bb.preprocess(inr(torch.tensor(idx))))  # noqa: E731
        with torch.no_grad():
            raw, full = run_raw(), run_full()
        g_backbone = gflops_of(model, bb.preprocess(frames[idx]), per=len(idx))
        paths = {"raw": {**_score(task, raw, raw, captioner), "gflops": g_backbone,
                         "ms_per_frame": ms_per_frame(run_raw, len(idx), repeats)}}
        codec = _codec_measurement(store, vid, meta, task, model, bb, idx, raw, repeats, captioner)
        if codec is not None:  # GFLOPs: the backbone's; H.264 decoding is not conv/matmul work
            paths["codec"] = {**codec, "gflops": g_backbone}
        paths["fulldecode"] = {**_score(task, full, raw, captioner), "gflops": inr.total_gflops + g_backbone,
                               "ms_per_frame": ms_per_frame(run_full, len(idx), repeats), "setup_ms": setup_ms}
        # exits adapted by the last `adapt` (older pairings do not say: every exit with a stored adapter)
        for k in pairing.get("stored_exits", range(1, inr.num_blocks + 1)):
            try:
                adapters, ameta = load_adapter(store, vid, task.name, k)
            except KeyError:  # no adapter stored for this exit block
                continue
            sm = bb.split(ameta["layer"], model=model)
            path = NVPPath(inr, k, adapters, sm.tail, video)
            feat = inr_features(inr, idx[:1] if not video else idx, k, video)
            with torch.no_grad():
                out = path(idx)
            row = {**_score(task, out, raw, captioner), "gflops": _nvp_gflops(inr, k, adapters, sm.tail, video, feat),
                   "ms_per_frame": ms_per_frame(lambda: path(idx), len(idx), repeats), "setup_ms": setup_ms,
                   "layer": ameta["layer"], "adapter_kind": adapters[0].kind,
                   "adapter_params": adapters.num_params(),
                   "adapter_share": adapters.num_params() / backbone_params}
            per_exit_all.setdefault(k, []).append(row)
            if k == chosen:
                paths["nvp"] = row
        if "nvp" not in paths:
            raise ValueError(f"video '{vid}' has no {task.name} adapter for exit block {chosen}; run "
                             f"'python -m builder adapt {vid} --task {task.name}' first")
        entry = {"id": vid, "exit_block": chosen, "paths": paths, "inr_bytes": meta.get("bytes"),
                 "h264": meta.get("h264")}
        if task.kind == "classification":
            entry["raw_stability"] = prediction_stability(_logits(raw))
        per_video.append(entry)
    names = [p for p in ("raw", "codec", "fulldecode", "nvp") if any(p in v["paths"] for v in per_video)]
    result = {
        "task": task.name,
        "exit_block": per_video[0]["exit_block"],
        "weights": "random" if random_init else str(weights),
        "paths": {p: _mean([v["paths"][p] for v in per_video if p in v["paths"]]) for p in names},
        "per_exit": {str(k): _mean(rows) for k, rows in sorted(per_exit_all.items())},
        "timing": {"repeats": repeats, "frames_per_batch": len(idx), "threads": torch.get_num_threads(),
                   **{p: TIMING[p] for p in names}},
        "videos": per_video,
    }
    if "codec" in names:
        result["paths"]["codec"]["videos"] = sum("codec" in v["paths"] for v in per_video)
    return result


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    for k, v in rows[0].items():
        if k not in out:
            out[k] = v
    return out


def plot_exits(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy and GFLOPs per frame against the exit block, with the raw and full-decode paths as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = METRICS[get_task(result["task"]).kind]
    ks = [int(k) for k in result["per_exit"]]
    rows = [result["per_exit"][str(k)] for k in ks]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["accuracy"] for r in rows], "o-", color="C0", label=f"NVP {metric}")
    ax.axhline(result["paths"]["fulldecode"]["accuracy"], color="C0", ls="--", lw=1, label="full decode")
    ax.set_xlabel("INR exit block")
    ax.set_ylabel(f"{metric} (raw frames = 1)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(ks)
    ax2 = ax.twinx()
    ax2.plot(ks, [r["gflops"] for r in rows], "s-", color="C3", label="NVP GFLOPs/frame")
    ax2.axhline(result["paths"]["fulldecode"]["gflops"], color="C3", ls="--", lw=1, label="full decode GFLOPs")
    ax2.axhline(result["paths"]["raw"]["gflops"], color="C3", ls=":", lw=1, label="raw backbone GFLOPs")
    ax2.set_ylabel("GFLOPs per frame")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center left")
    ax.set_title(f"{result['task']}: accuracy and cost vs exit block")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
