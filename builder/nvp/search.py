"""Pair search for ``adapt``: rank (exit block, injection layer) pairs by CKA, fit an adapter per kept pair,
measure each on the task's protocol frames, select by measurement; then store the adapters and the pairing.

Each step is a function returning a typed result (:class:`Candidate`, :class:`Fit`, :class:`PairMeasurement`,
:class:`Selection`); :func:`adapt_video` runs them in order and writes the pairing JSON (``adapt --json``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from training.adapters import fit_adapter
from training.config import ADAPTER_RECIPES, DEFAULT_ADAPTER_RECIPE, AdapterTrainConfig
from training.joint import fit_joint
from training.recipes import RECIPES

from ..adapters import build_adapter
from ..api import load_bound_inr, read_source, replace_inr_entry
from ..backbones import Backbone, SplitModel, get_backbone
from ..cka import linear_cka
from ..cliutil import finite_json
from ..entry import INR_BINDING
from ..inr import INR
from ..selection import uniform_frames
from ..store import VideoStore
from ..tasks import Scorer, Task, get_task
from .measure import codec_measurement, measure_path, nvp_gflops
from .path import AdapterSet, DerivedMask, NVPPath, inr_features
from .storage import adapter_blob, adapter_file, nvp_files, pairing_file, save_adapter, served_layer

__all__ = ["Candidate", "TrainingData", "Fit", "PairMeasurement", "Selection", "adapt_video", "training_data",
           "rank_pairs", "shortlist", "fit_pair", "measure_pair", "select_pairs", "pareto_front", "select_pair",
           "FEATURE_BUDGET", "adapter_recipe", "classifier_only", "candidate_splits", "validation_frames"]

FEATURE_BUDGET = 2 << 30  # bytes of INR features + backbone targets adapt may hold for training (all exits, layers)
FRONT_KEYS = ("exit_block", "layer", "adapter_kind", "video_accuracy", "accuracy", "top5", "kl", "ms_per_frame",
              "gflops", "adapter_share")


# --- typed results -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A ranked pair: CKA of the INR's features at the exit with the backbone's at the layer (None: too few
    samples to compute it)."""

    exit_block: int
    layer: str
    cka: float | None
    cka_debiased: float | None


@dataclass
class TrainingData:
    """What the adapters train on, one row per sample: INR features per exit block, the backbone front's outputs
    per layer (one tensor per cut tensor), and the raw frames' logits when a loss needs them."""

    samples: list[list[int]]
    inputs: dict[int, Tensor]
    targets: dict[str, list[Tensor]]
    teacher: Tensor | None


@dataclass
class Fit:
    candidate: Candidate
    adapters: AdapterSet
    rel_mse: float
    epochs: int


@dataclass
class PairMeasurement:
    """A fitted pair measured on the protocol frames against the raw frames' output."""

    fit: Fit
    scores: dict[str, float]
    gflops: float
    ms_per_frame: float
    adapter_share: float

    @property
    def exit_block(self) -> int:
        return self.fit.candidate.exit_block

    def row(self) -> dict[str, Any]:
        """As the pairing JSON's ``measured`` rows (and :func:`pareto_front`'s input)."""
        c, a = self.fit.candidate, self.fit.adapters
        return {"exit_block": c.exit_block, "layer": c.layer, "cka": c.cka, "cka_debiased": c.cka_debiased,
                "rel_mse": self.fit.rel_mse, "epochs": self.fit.epochs, "adapter_kind": a[0].kind,
                "adapter_params": a.num_params(), "adapter_share": self.adapter_share, "gflops": self.gflops,
                "ms_per_frame": self.ms_per_frame, **self.scores}


@dataclass
class Selection:
    """The chosen pair, whether it met the agreement budget, the adapter kept per exit block (the same rule
    within each exit), and the Pareto front of the pairs within the parameter budget."""

    chosen: PairMeasurement
    met_budget: bool
    per_exit: dict[int, PairMeasurement]
    front: list[dict[str, Any]]


# --- selection on measured rows ------------------------------------------------------------------------------

def _quality(row: Mapping[str, Any]) -> tuple[float, float]:
    """Pareto quality of a measured pair: video-level agreement first (frame-level is noisy on unstable clips), then
    frame-level agreement. Rows without a video-level score (non-classification tasks) use ``accuracy`` twice."""
    acc = float(row["accuracy"])
    acc = -math.inf if math.isnan(acc) else acc  # undefined (mAP without reference boxes) ranks last
    return float(row.get("video_accuracy", acc)), acc


def pareto_front(rows: Sequence[Mapping[str, Any]], cost: str = "ms_per_frame") -> list[Mapping[str, Any]]:
    """The rows no other row beats: none is at most as costly and at least as good (:func:`_quality`, compared
    lexicographically) and strictly better in one. Sorted by cost, so quality strictly rises along the front; of
    rows tied in cost and quality, the first is kept."""
    front: list[Mapping[str, Any]] = []
    for r in sorted(rows, key=lambda r: (r[cost], tuple(-q for q in _quality(r)))):
        if not front or _quality(r) > _quality(front[-1]):
            front.append(r)
    return front


def select_pair(rows: Sequence[Mapping[str, Any]], min_agreement: float,
                cost: str = "ms_per_frame") -> tuple[Mapping[str, Any], bool]:
    """The pair to use, and whether it met the budget: the cheapest row whose frame-level and video-level
    agreement both reach ``min_agreement`` (the first point of the Pareto front of those rows); when none does, the
    best-quality row (the front's last point: ties in quality go to the cheaper one)."""
    if not rows:
        raise ValueError("no measured pairs to select from")
    ok = [r for r in rows if min(_quality(r)) >= min_agreement]
    if ok:
        return pareto_front(ok, cost)[0], True
    return pareto_front(rows, cost)[-1], False


# --- the steps -----------------------------------------------------------------------------------------------

def _affordable_samples(task: Task, allowed: Sequence[int], inr: INR, bb: Backbone, splits: Mapping[str, SplitModel],
                        exits: Sequence[int], src: Tensor, budget: int = FEATURE_BUDGET) -> int | None:
    """None when the training features of every sample (INR features at every exit + backbone targets at every
    layer) fit in ``budget`` bytes, else how many samples do (measured on one sample)."""
    one = task.samples(allowed, 1)[0]
    with torch.no_grad():
        per = sum(inr_features(inr, one, k, task.video).nbytes for k in exits)
        per += sum(t.nbytes for sm in splits.values() for t in sm.front(bb.preprocess(src[one])))
    fit = max(1, budget // max(per, 1))
    total = len(task.samples(allowed, None))
    if total <= fit:
        return None
    print(f"adapt: training on {fit} of {total} samples (features of all would exceed {budget / 2**30:.1f} GiB)",
          file=sys.stderr)
    return fit


def training_data(task: Task, inr: INR, bb: Backbone, model: nn.Module, splits: Mapping[str, SplitModel],
                  frames: Tensor, exits: Sequence[int], train: AdapterTrainConfig,
                  max_samples: int | None, allowed: Sequence[int] | None = None) -> TrainingData:
    """Features of the training samples, taken from the ``allowed`` frames (None: all): ``max_samples`` None means
    every sample whose features fit in :data:`FEATURE_BUDGET` bytes (evenly spread). Targets come from the raw (or
    INR-decoded) frames."""
    allowed = list(range(frames.shape[0])) if allowed is None else list(allowed)
    src = frames if train.target == "raw" else inr.decode_all()
    if max_samples is None:
        max_samples = _affordable_samples(task, allowed, inr, bb, splits, exits, src)
    samples = task.samples(allowed, max_samples)
    with torch.no_grad():
        inputs = {k: torch.cat([inr_features(inr, s, k, task.video) for s in samples]) for k in exits}
        targets: dict[str, list[Tensor]] = {}
        for l, sm in splits.items():
            outs = [sm.front(bb.preprocess(src[s])) for s in samples]  # a tuple per sample, one entry per cut tensor
            targets[l] = [torch.cat([o[j] for o in outs]) for j in range(len(outs[0]))]
        # the raw frames' answers, one row per training sample (the task loss's target)
        needs_teacher = train.task_loss > 0 or (train.joint and train.joint_task > 0)
        teacher = (torch.cat([task.kind.logits(model(bb.preprocess(frames[s]))) for s in samples])
                   if task.kind.has_logits and needs_teacher else None)
    return TrainingData(samples, inputs, targets, teacher)


def rank_pairs(data: TrainingData, exits: Sequence[int], layers: Sequence[str]) -> list[Candidate]:
    """Every (exit, layer) pair by debiased linear CKA, best first (a pre-filter only); unrankable pairs (None)
    keep their exit/layer order after the ranked ones."""
    cands = []
    for k in exits:
        for l in layers:
            x, ys = data.inputs[k], [y for y in data.targets[l] if y.is_floating_point()]  # not masks
            m = x.shape[0]  # CKA needs samples: >= 2 (plain), >= 5 (debiased); one 32-frame window has none
            plain = sum(linear_cka(x, y) for y in ys) / len(ys) if m >= 2 else None
            deb = sum(linear_cka(x, y, debiased=True) for y in ys) / len(ys) if m >= 5 else plain
            cands.append(Candidate(k, l, plain, deb))
    cands.sort(key=lambda c: -math.inf if c.cka_debiased is None else c.cka_debiased, reverse=True)
    return cands


def shortlist(ranking: Sequence[Candidate], top_k: int) -> list[Candidate]:
    """The ``top_k`` pairs to train and measure: first each injection layer's best-ranked pair (layers in the order
    of their best pair), then the rest by rank. CKA alone favours early layers (their features look most like any
    image's), and measured out of sample those often lose to deep injections (docs/BENCHMARKS.md): every layer
    gets measured once before any layer twice."""
    firsts: dict[str, Candidate] = {}
    for c in ranking:
        firsts.setdefault(c.layer, c)
    head = list(firsts.values())[:top_k]
    rest = [c for c in ranking if all(c is not h for h in head)]
    return head + rest[:max(0, top_k - len(head))]


def _adapter_kind(task: Task, target: Tensor, override: str | None) -> str:
    """The task's seed adapter (the 1x1 conv where the cut's tensor has the rank of a CNN stage, e.g. in a
    transformer pipeline), or ``override`` (a capacity ablation) where the seed's is the 1x1 conv."""
    kind = "conv1x1" if task.adapter == "patch_embed" and target.ndim - 1 == 3 else task.adapter
    if override is None or override == kind:
        return kind
    if kind != "conv1x1":
        raise ValueError(f"adapter {override!r} replaces the seed's conv1x1 at (C, H, W) cuts; this {task.name} "
                         f"cut takes {kind!r} adapters")
    return override


def _cut_piece(task: Task, x: Tensor, target: Tensor, adapter: str | None) -> nn.Module:
    """What produces one cut tensor from INR features ``x``: a trained adapter, or for a non-float tensor (DETR's
    padding mask) a :class:`DerivedMask` of the target's size."""
    if not target.is_floating_point():
        return DerivedMask(target.shape[1:], str(target.dtype).removeprefix("torch."))
    return build_adapter(_adapter_kind(task, target, adapter), tuple(x.shape[1:]), tuple(target.shape[1:]))


def fit_pair(task: Task, c: Candidate, data: TrainingData, split: SplitModel, train: AdapterTrainConfig) -> Fit:
    """Train the pair's adapters (INR and backbone frozen); the task loss runs through the tail where the cut is
    one tensor."""
    x, ys = data.inputs[c.exit_block], data.targets[c.layer]
    adapters = AdapterSet([_cut_piece(task, x, y, train.adapter) for y in ys])
    if train.task_loss > 0 and len(adapters) == 1:
        fits = [fit_adapter(adapters[0], x, ys[0], train, tail=split.tail, teacher=data.teacher, progress=False)]
    else:  # the task loss needs the whole cut: multi-tensor cuts (SlowFast) train on features alone
        feat_only = dataclasses.replace(train, task_loss=0.0)
        fits = [fit_adapter(a, x, y, feat_only, progress=False) for a, y in zip(adapters, ys)
                if not isinstance(a, DerivedMask)]
    return Fit(c, adapters, max(f.rel_mse for f in fits), max(f.epochs for f in fits))


def measure_pair(task: Task, fit: Fit, inr: INR, split: SplitModel, data: TrainingData, eval_idx: list[int],
                 raw_out: Any, scorer: Scorer, backbone_params: int, repeats: int) -> PairMeasurement:
    """Score the fitted pair on the protocol frames against the raw frames' output, and time it."""
    k = fit.candidate.exit_block
    path = NVPPath(inr, k, fit.adapters, split.tail, task.video)
    run = lambda: path(eval_idx)  # noqa: E731
    m = measure_path(run, run(), raw_out, scorer, len(eval_idx), repeats)
    gflops = nvp_gflops(inr, k, fit.adapters, split.tail, task.video, data.inputs[k][:1])
    return PairMeasurement(fit, m.scores, gflops, m.ms_per_frame, fit.adapters.num_params() / backbone_params)


def select_pairs(measured: Sequence[PairMeasurement], min_agreement: float, max_adapter_share: float) -> Selection:
    """Adapters must stay tiny: pairs over the parameter budget are measured and reported, never chosen (e.g. a
    1x1 from a wide INR block into a 1280-channel last stage is a classifier of its own, not an adapter). Of the
    rest, :func:`select_pair`'s rule picks the pair, and within each exit block the adapter stored for it."""
    small = [m for m in measured if m.adapter_share <= max_adapter_share]
    if not small:
        raise ValueError(f"every measured adapter exceeds --max-adapter-share {max_adapter_share:.2%} of the "
                         f"backbone (smallest {min(m.adapter_share for m in measured):.2%}); try earlier layers "
                         "(--layers) or a larger budget")
    rows = [m.row() for m in small]
    by_row = {id(r): m for r, m in zip(rows, small)}
    row, met = select_pair(rows, min_agreement)
    chosen = by_row[id(row)]
    per_exit = {}
    for k in sorted({m.exit_block for m in small}):
        per_exit[k] = chosen if k == chosen.exit_block else by_row[id(select_pair(
            [r for r in rows if r["exit_block"] == k], min_agreement)[0])]
    front = [{k: r.get(k) for k in FRONT_KEYS} for r in pareto_front(rows)]
    return Selection(chosen, met, per_exit, front)


# --- adapt ---------------------------------------------------------------------------------------------------

def adapter_recipe(task: Task, name: str = DEFAULT_ADAPTER_RECIPE) -> AdapterTrainConfig:
    """A named recipe (``training.config.ADAPTER_RECIPES``) as it applies to ``task``: the task loss only where the
    kind has class logits, the adapter kind only where the task's seed adapter is the 1x1 conv."""
    if name not in ADAPTER_RECIPES:
        raise ValueError(f"unknown adapter recipe {name!r}; choose one of {', '.join(ADAPTER_RECIPES)}")
    cfg = ADAPTER_RECIPES[name]
    if cfg.task_loss and not task.kind.has_logits:
        cfg = dataclasses.replace(cfg, task_loss=0.0)
    if task.adapter != "conv1x1":  # patch embeddings and 3-D adapters: their seed adapter, which has no LS fit
        cfg = dataclasses.replace(cfg, adapter=None, init="default")
    return cfg


def classifier_only(tail: nn.Module) -> bool:
    """A tail that is at most one learned layer (pooling, norms and the classifier): injecting there re-learns the
    classifier's input rather than adapting features for the rest of the network."""
    layers = [m for m in tail.modules() if isinstance(getattr(m, "weight", None), Tensor) and m.weight.ndim >= 2]
    return len(layers) <= 1


def candidate_splits(store: VideoStore, task: Task, bb: Backbone, model: nn.Module,
                     layers: Sequence[str] | None) -> tuple[dict[str, SplitModel], str | None]:
    """The injection layers adapt tries, split, and the served layer that pinned them (None if none did):
    ``layers`` as given; else the layer a repository built from this store serves the task from (a video adapted
    elsewhere would be refused by the running server); else the backbone's split points whose tail is more than
    pooling and the classifier."""
    served = served_layer(store, task.name) if layers is None else None
    if served is not None:
        print(f"adapt: trying only {served}, the layer a repository built from this store serves {task.name} from "
              "(--layers LAYER ... chooses freely; then run build-repo again)", file=sys.stderr)
        return {served: bb.split(served, model=model)}, served
    if layers is None:
        splits = {l: bb.split(l, model=model) for l in bb.split_points()}
        return {l: sm for l, sm in splits.items() if not classifier_only(sm.tail)}, None
    return {l: bb.split(l, model=model) for l in layers}, None


def validation_frames(task: Task, n: int, train_idx: Sequence[int], count: int = 16) -> tuple[list[int], bool]:
    """Frames ``adapt`` measures pairs on: up to ``count`` frames outside the training frames, evenly spread (video
    tasks: one clip outside them), and whether that is out of sample; the protocol frames when every frame trains."""
    units = task.units(sorted(set(range(n)) - set(train_idx)))
    if not units:
        return task.protocol_frames(n), False
    if task.video:
        return units[len(units) // 2], True
    pick = uniform_frames(len(units), min(count, len(units)))
    return [units[i][0] for i in pick], True


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
    train: AdapterTrainConfig | None = None,
    train_frames: str | None = None,
    max_samples: int | None = None,
    weights: str | None = "default",
    random_init: bool = False,
    backbone_config: dict[str, Any] | None = None,
    progress: bool = True,
    repeats: int = 3,
) -> dict[str, Any]:
    """Rank (exit block, injection layer) pairs by debiased CKA (a pre-filter only), train adapters for ``top_k``
    of them (:func:`shortlist`: each layer's best pair first, then the next by rank), and measure each one on the protocol frames: agreement with the raw frames' answers and wall-clock
    ms per frame (median of ``repeats``). The chosen pair is the fastest one whose frame-level and video-level
    agreement both reach ``min_agreement``, i.e. the fastest point of the Pareto front (quality = video-level, then
    frame-level agreement, vs ms per frame) of the pairs meeting the budget; when none does, the most accurate
    (then fastest) pair. The same rule picks the adapter stored for every other exit block. The pairing JSON keeps
    the ranking, every measured pair, the Pareto front and the codec path's measurement (the honest baseline).

    ``train`` None is the measured-best recipe (:func:`adapter_recipe`). Adapters train on ``train_frames`` (the
    frame-selection grammar; default the task kind's ``default_train_frames``: a quarter of the frames, evenly
    spread; action tasks the first half) and pairs are measured and chosen on frames outside them (up to 16,
    spread; action: one clip), so the choice is made out of sample. ``max_samples`` None trains on every training
    frame (action tasks: every 32-frame window at stride 8 inside them), unless their features would not fit in
    :data:`FEATURE_BUDGET` bytes; then as many as fit, evenly spread. Layers whose tail is only pooling and the
    classifier are not tried unless named in ``layers``: such a "pair" is the classifier's input re-learned, not an
    adapter. With ``layers`` None and a repository built from this store serving the task (``build-repo`` records
    its layer: :func:`~builder.nvp.storage.served_layer`), only that layer is tried, so the running server answers
    the video (``summary["served_layer"]``).

    ``train.joint``: then fine-tune the INR with the chosen pair's adapter (:func:`_joint`); the re-quantised INR
    replaces the stored one, and every adapter trained on the old one is dropped. ``summary["joint"]`` holds PSNR,
    bpp and accuracy before/after; ``summary["accuracy"]`` is then the after value, while ``measured`` keeps the
    frozen-INR measurements that chose the pair."""
    task = get_task(task_name)
    train = train or adapter_recipe(task)
    if train.task_loss > 0 and not task.kind.has_logits:  # task_loss is a KL over class logits
        raise ValueError(f"--task-loss needs class logits; {task.name} ({task.kind.name}) trains on features only")
    bb = backbone or get_backbone(task.backbone)
    model = bb.load_for(task, weights, random_init=random_init, config=backbone_config)
    scorer = task.kind.scorer(task, model, random_init)
    meta = store.meta(video_id)
    decoded, bound = load_bound_inr(store, video_id)  # every write below is refused if this INR is replaced
    inr = decoded.model
    frames = read_source(meta).frames
    n = frames.shape[0]
    train_idx = task.train_frames(n, train_frames)
    task.samples(train_idx, max_samples)  # too few (consecutive) training frames fail before any work
    exits = list(exits or range(1, inr.num_blocks + 1))
    splits, served = candidate_splits(store, task, bb, model, layers)
    layers = list(splits)
    t0 = time.perf_counter()
    data = training_data(task, inr, bb, model, splits, frames, exits, train, max_samples, allowed=train_idx)
    ranking = rank_pairs(data, exits, layers)

    eval_idx, out_of_sample = validation_frames(task, n, train_idx)
    if not out_of_sample:
        warnings.warn(f"adapt: every frame of '{video_id}' is a training frame: pairs are chosen on frames they "
                      "trained on (in-sample)", stacklevel=2)
    with torch.no_grad():
        raw_out = model(bb.preprocess(frames[eval_idx]))
    backbone_params = bb.num_params(model)
    measured = [measure_pair(task, fit_pair(task, c, data, splits[c.layer], train), inr, splits[c.layer], data,
                             eval_idx, raw_out, scorer, backbone_params, repeats)
                for c in tqdm(shortlist(ranking, top_k), desc=f"adapt {task.name}", file=sys.stderr, disable=not progress)]
    sel = select_pairs(measured, min_agreement, max_adapter_share)
    for k, m in sel.per_exit.items():
        save_adapter(store, video_id, task.name, k, m.fit.candidate.layer, m.fit.adapters,
                     {"accuracy": m.scores["accuracy"], "train": train.to_dict()}, inr_sha256=bound)
    codec = codec_measurement(store, video_id, meta, model, bb, eval_idx, raw_out, scorer, repeats)
    chosen = sel.chosen.row()
    summary = {
        "id": video_id, "task": task.name, "exit_block": chosen["exit_block"], "layer": chosen["layer"],
        "adapter_params": chosen["adapter_params"], "backbone_params": backbone_params,
        "adapter_share": chosen["adapter_params"] / backbone_params, "accuracy": chosen["accuracy"],
        "video_accuracy": chosen.get("video_accuracy", chosen["accuracy"]), "ms_per_frame": chosen["ms_per_frame"],
        "gflops": chosen["gflops"], "met_budget": sel.met_budget, "min_agreement": min_agreement,
        "max_adapter_share": max_adapter_share,
        "adapter_kind": chosen["adapter_kind"], "stored_exits": list(sel.per_exit), "served_layer": served,
        "pareto_front": sel.front,
        "codec": None if codec is None else codec.to_dict(),
        "faster_than_codec": None if codec is None else chosen["ms_per_frame"] < codec.ms_per_frame,
        "repeats": repeats, "samples": len(data.samples),
        "train_selection": train_frames or task.kind.default_train_frames, "train_frames": train_idx,
        "validation_frames": eval_idx, "chosen_out_of_sample": out_of_sample,
        # ingest cost: frames the backbone ran on (training targets, validation answers; the codec check re-runs
        # the validation frames)
        "backbone_passes": len({i for smp in data.samples for i in smp} | set(eval_idx)),
        "weights": "random" if random_init else str(weights), "seconds": round(time.perf_counter() - t0, 2),
        "ranking": [dataclasses.asdict(c) for c in ranking], "measured": [m.row() for m in measured],
    }
    if train.joint:  # the new INR, its adapter and the pairing land in one atomic write
        _joint(store, video_id, task, inr, frames, data, sel.chosen.fit, splits[sel.chosen.fit.candidate.layer],
               train, eval_idx=eval_idx, raw_out=raw_out, scorer=scorer, progress=progress, bound=bound,
               summary=summary)
        return summary
    summary[INR_BINDING] = bound
    store.add_file(video_id, pairing_file(task.name), _pairing_json(summary), if_inr=bound)
    return summary


def _pairing_json(summary: Mapping[str, Any]) -> bytes:
    return json.dumps(finite_json(summary), indent=1).encode()


def _joint(store: VideoStore, video_id: str, task: Task, inr: INR, frames: Tensor, data: TrainingData, fit: Fit,
           split: SplitModel, train: AdapterTrainConfig, *, eval_idx: list[int], raw_out: Any, scorer: Scorer,
           progress: bool, bound: str, summary: dict[str, Any]) -> None:
    """Joint mode: fine-tune the INR with the chosen pair's adapter (``training.joint``), re-measure the pair on
    the re-quantised INR, and store that INR, the adapter and the pairing (``summary`` completed with
    ``summary["joint"]``, whose ``accuracy_after`` becomes ``summary["accuracy"]``) in one atomic write: a reader
    sees the old INR with its adapters or the new one with its adapter, never a mix. Refused (``EntryChanged``,
    nothing written) if the stored INR is no longer ``bound``.

    Every other adapter of the video (other exits of this task, all other tasks) was fitted to the old INR's
    features and is now stale: it is deleted in the same write, with a warning, and those tasks need ``adapt``
    again.
    """
    exit_block, adapters, video = fit.candidate.exit_block, fit.adapters, task.video
    meta = store.meta(video_id)
    before = {"psnr": meta["psnr"], "bpp": meta["bpp"], "bytes": meta["bytes"]}
    accuracy_before = scorer(NVPPath(inr, exit_block, adapters, split.tail, video)(eval_idx), raw_out)["accuracy"]
    use_task = data.teacher is not None and train.joint_task > 0
    if train.joint_task > 0 and not use_task:
        warnings.warn(f"joint mode: {task.name} ({task.kind.name}) has no class logits, so the task term "
                      f"(weight {train.joint_task}) is left out", stacklevel=3)
    t0 = time.perf_counter()
    result = fit_joint(inr, adapters, split.tail, frames, data.samples, exit_block, data.targets[split.at], train,
                       recon_loss=RECIPES[inr.recipe].loss, video=video,
                       teacher=data.teacher if use_task else None, progress=progress)
    entry = store.video(video_id)
    stale = [n for n in nvp_files(entry) if n != pairing_file(task.name)]
    own = set(nvp_files(entry, task.name))
    others = [n for n in stale if n not in own]

    def with_adapter(stored: INR, checksum: str, measured: dict[str, Any]) -> dict[str, bytes]:
        # measured on what is stored: the quantised INR
        after = scorer(NVPPath(stored, exit_block, adapters, split.tail, video)(eval_idx), raw_out)
        summary["joint"] = {
            "epochs": result.epochs, "seconds": round(time.perf_counter() - t0, 2),
            "weights": {"recon": train.joint_recon, "feature": train.joint_feature,
                        "task": train.joint_task if use_task else 0.0},
            "psnr_before": before["psnr"], "psnr_after": measured["psnr"], "train_psnr": result.psnr,
            "bpp_before": before["bpp"], "bpp_after": measured["bpp"], "bytes_before": before["bytes"],
            "bytes_after": measured["bytes"], "accuracy_before": accuracy_before, "accuracy_after": after["accuracy"],
            "scores_after": after, "dropped": [n for n in stale if n != adapter_file(task.name, exit_block)],
            INR_BINDING: checksum, "history": result.history,
        }
        summary["accuracy"] = after["accuracy"]
        summary[INR_BINDING] = checksum
        return {adapter_file(task.name, exit_block): adapter_blob(
                    task.name, exit_block, split.at, adapters,
                    {"accuracy": after["accuracy"], "train": train.to_dict(), "joint": True}, inr_sha256=checksum),
                pairing_file(task.name): _pairing_json(summary)}

    replace_inr_entry(store, video_id, inr, frames, drop=stale, if_inr=bound, extra=with_adapter, meta={"joint": {
        "task": task.name, "exit_block": exit_block, "epochs": result.epochs, "psnr_before": before["psnr"],
        "bpp_before": before["bpp"]}})
    if others:
        warnings.warn(f"joint mode changed the INR of '{video_id}': deleted the stale adapters {others}; run "
                      f"adapt again for those tasks", stacklevel=3)
