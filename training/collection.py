"""Fitting one shared, keyframe-conditioned INR (D-NeRV) to a collection of videos; growing a fitted collection.

Like :func:`training.inr.fit_inr` (whose schedule, seeding and checkpoint helpers it reuses): warm-up + cosine
learning rate following the larger of the epoch and time fractions, stopping after ``cfg.epochs``, at
``cfg.time_budget`` seconds or at ``cfg.target_psnr`` (mean PSNR over the real frames of every video's watched
clips, :func:`watched_clips`: past 64 clips an eighth of them, so the per-epoch PSNR pass stays a small part of an
epoch),
a progress bar, checkpoints after every epoch and ``resume``, CPU or CUDA with bf16 autocast. The optimiser is the recipe's
(``"dnerv"``: AdamW). An epoch is one pass over every clip of every video.

Data-parallel: when ``torch.distributed`` is initialised with more than one process (``torchrun``, or
``torch.multiprocessing`` + ``init_process_group``; gloo on CPU, nccl on CUDA), the model is wrapped in
``DistributedDataParallel``, every rank takes its share of each epoch's shuffled clips (the same permutation on every
rank), the elapsed time that drives the schedule and the stopping rules is agreed across ranks (their maximum) so
the ranks stay in lock-step with identical weights, evaluation is sharded and summed, and only rank 0 writes the
checkpoint and shows progress.

The model is duck-typed (``training`` imports nothing from ``builder``): ``model.config.frames`` is the clip length,
``model.keyframe_positions(n)`` the keyframes of an ``n``-frame video, ``model.video_clips(keyframes, n)`` the
model's clip inputs for all clips of a video (a NamedTuple of tensors whose first dimension is the clip, with a
boolean ``mask`` of real frames), ``model(clips)`` the RGB clips ``[B, 3, T, H, W]``, and ``before_fit(frames)``.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .inr import _lr_factor, _save_checkpoint, _sync, median_step_seconds, seed_everything
from .metrics import psnr_per_frame
from .recipes import RECIPES

# per-frame PSNR cap (dB) in the per-video means
PSNR_CAP = 100.0

__all__ = ["PSNR_CAP", "WATCH_FRACTION", "WATCH_ALL_UP_TO", "CollectionFit", "AddResult", "fit_collection", "eval_collection",
           "add_videos", "collection_data", "collection_epoch_seconds", "watched_clips"]

# the share of each video's clips the per-epoch PSNR pass decodes: a full pass over a 1,051-frame collection took
# 13 minutes on this CPU after a 10-minute budget; the stored quality is measured on every frame anyway
WATCH_FRACTION, WATCH_ALL_UP_TO = 1 / 8, 64


@dataclass
class CollectionFit:
    epochs: int
    seconds: float
    psnr: float  # mean over the watched clips' real frames, after the last epoch (unquantised model)
    stopped_by: str  # "epochs" | "time_budget" | "target_psnr"
    video_psnr: list[float] = field(default_factory=list)  # per video, same order as the input
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, psnr, seconds


@dataclass
class AddResult:
    old_psnr_before: list[float]  # the old videos' PSNR under the collection as it was
    old_psnr_after: list[float]  # ... after fine-tuning on old + new
    new_psnr: list[float]  # the new videos' PSNR after fine-tuning
    fit: CollectionFit


@dataclass
class _Data:
    """Every clip of every video, stacked: the model's clip inputs, targets ``[n, 3, T, H, W]`` and the video
    each clip belongs to."""

    clips: Any  # the model's NamedTuple of tensors, first dim = clip
    target: Tensor
    video: Tensor
    num_videos: int

    def __len__(self) -> int:
        return self.target.shape[0]

    def batch(self, idx: Tensor) -> tuple[Any, Tensor]:
        return type(self.clips)(*(x[idx] for x in self.clips)), self.target[idx]


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def collection_data(model: nn.Module, videos: Sequence[Tensor], keyframes: Sequence[Tensor] | None = None,
                    device: torch.device | str = "cpu") -> _Data:
    """The clips of ``videos`` (each ``(N_v, 3, H, W)`` in [0, 1], same size) for ``model``. ``keyframes`` are
    what the decoder is conditioned on (each ``(K_v, 3, H, W)``: the frames at ``model.keyframe_positions(N_v)``,
    e.g. after a lossy keyframe codec); default: those frames of the source, uncompressed."""
    m = _unwrap(model)
    T = m.config.frames
    if not videos:
        raise ValueError("a collection needs at least one video")
    size = videos[0].shape[1:]
    clips, targets, vids = [], [], []
    for v, frames in enumerate(videos):
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[1:] != size:
            raise ValueError(f"video {v}: every video must be (N, 3, H, W) of one size {tuple(size)}, "
                             f"got {tuple(frames.shape)}")
        n = frames.shape[0]
        kf = frames[m.keyframe_positions(n)] if keyframes is None else keyframes[v]
        c = m.video_clips(kf.float(), n)
        n_clips = c.t.shape[0]
        fidx = (torch.arange(n_clips)[:, None] * T + torch.arange(T)[None]).clamp(max=n - 1)
        targets.append(frames.float()[fidx.reshape(-1)].reshape(n_clips, T, *size).transpose(1, 2))
        clips.append(c)
        vids.append(torch.full((n_clips,), v, dtype=torch.long))
    stacked = type(clips[0])(*(torch.cat(xs).to(device) for xs in zip(*clips)))
    return _Data(stacked, torch.cat(targets).to(device), torch.cat(vids).to(device), len(videos))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _agree_max(value: float, world: int, device: torch.device) -> float:
    """The maximum of ``value`` over the ranks (the value itself in a single process)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _masked(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Real frames of ``[B, 3, T, H, W]`` clips as ``(n, 3, H, W)`` frames."""
    fold = lambda x: x.transpose(1, 2).reshape(-1, *x.shape[1:2], *x.shape[3:])  # noqa: E731
    keep = mask.reshape(-1)
    return fold(pred)[keep], fold(target)[keep]


def watched_clips(data: _Data, fraction: float = WATCH_FRACTION, all_up_to: int = WATCH_ALL_UP_TO) -> Tensor:
    """Clip indices for the per-epoch PSNR pass: every clip of a collection of up to ``all_up_to`` clips, else
    ``fraction`` of each video's clips, evenly spread over it, at least one per video (so every video keeps a
    PSNR)."""
    if len(data) <= all_up_to:
        return torch.arange(len(data), device=data.video.device)
    video = data.video.cpu()
    out = []
    for v in range(data.num_videos):
        mine = torch.nonzero(video == v).flatten()
        k = max(1, math.ceil(fraction * mine.numel()))
        out.append(mine[torch.linspace(0, mine.numel() - 1, k).round().long()])
    return torch.cat(out).to(data.video.device)


@torch.no_grad()
def _eval(run: nn.Module, data: _Data, batch: int, device: torch.device, amp: bool,
          rank: int = 0, world: int = 1, clips: Tensor | None = None) -> list[float]:
    """Per-video mean PSNR over the real frames of ``clips`` (default: all); sharded over the ranks and summed."""
    was = run.training
    run.eval()
    sums = torch.zeros(data.num_videos, dtype=torch.float64, device=device)
    counts = torch.zeros(data.num_videos, dtype=torch.float64, device=device)
    order = (torch.arange(len(data), device=device) if clips is None else clips)[rank::world]
    model = _unwrap(run)  # no DDP hooks for evaluation
    for i in range(0, order.numel(), batch):
        idx = order[i:i + batch]
        clips, target = data.batch(idx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(clips)
        p = psnr_per_frame(pred.float().clamp(0, 1).transpose(1, 2).flatten(0, 1),
                           target.transpose(1, 2).flatten(0, 1)).double().reshape(idx.numel(), -1)
        p = p.clamp(max=PSNR_CAP)  # a keyframe given losslessly decodes exactly (inf dB): it must not swamp the mean
        m = clips.mask.to(p.dtype)
        sums.index_add_(0, data.video[idx], (p * m).sum(1))
        counts.index_add_(0, data.video[idx], m.sum(1))
    if world > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    run.train(was)
    return (sums / counts.clamp(min=1)).tolist()


def _mean_psnr(per_video: list[float], data: _Data, clips: Tensor) -> float:
    """Frame-weighted mean of per-video PSNRs (weights: each video's real frames among ``clips``)."""
    frames = torch.zeros(data.num_videos, dtype=torch.float64)
    frames.index_add_(0, data.video[clips].cpu(), data.clips.mask[clips].sum(1).double().cpu())
    return float((torch.tensor(per_video, dtype=torch.float64) * frames).sum() / frames.sum())


def eval_collection(model: nn.Module, videos: Sequence[Tensor], keyframes: Sequence[Tensor] | None = None,
                    batch: int = 4, device: str | torch.device | None = None) -> list[float]:
    """Per-video PSNR (dB, mean over each video's frames) of ``model`` on ``videos``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = collection_data(model, videos, keyframes, device)
    return _eval(model, data, batch, device, amp=False)


def _optimizer(model: nn.Module, recipe, lr: float) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay)


def _step(run: nn.Module, opt: torch.optim.Optimizer, loss_fn, data: _Data, idx: Tensor, device: torch.device,
          amp: bool) -> Tensor:
    clips, target = data.batch(idx)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        pred = run(clips)
    loss = loss_fn(*_masked(pred.float(), target, clips.mask))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def collection_epoch_seconds(model: nn.Module, videos: Sequence[Tensor], cfg: TrainConfig, min_seconds: float = 1.0,
                             max_steps: int = 10) -> float:
    """Seconds one epoch of :func:`fit_collection` takes (per rank, agreed over the ranks) for ``model`` on
    ``videos`` on ``cfg.device``: a throw-away copy trains on a few clips of the first video (one warm-up step,
    then until ``min_seconds`` have passed, 1 to ``max_steps``; the median step) and decodes one evaluation batch
    (on CUDA twice, the second timed), scaled to the epoch's training batches and its watched-clip PSNR pass."""
    rank, world = _world()
    device = torch.device(cfg.device)
    T = _unwrap(model).config.frames
    per_video = [math.ceil(int(v.shape[0]) / T) for v in videos]
    n = sum(per_video)
    watched = n if n <= WATCH_ALL_UP_TO else sum(max(1, math.ceil(WATCH_FRACTION * c)) for c in per_video)
    b = min(cfg.batch_size, n)
    probe = copy.deepcopy(_unwrap(model)).to(device).train()
    data = collection_data(probe, [videos[0][: 2 * b * T + 1]], None, device)  # the probe's batches only
    b = min(b, len(data))
    opt = _optimizer(probe, RECIPES[cfg.recipe], 1e-6)
    amp = cfg.amp and device.type == "cuda"
    loss_fn = RECIPES[cfg.recipe].loss
    idx = torch.arange(b, device=device)
    step_s = median_step_seconds(lambda: _step(probe, opt, loss_fn, data, idx, device, amp), device, min_seconds,
                                 max_steps)
    ev = torch.arange(min(2 * b, len(data)), device=device)
    probe.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for _ in range(2 if device.type == "cuda" else 1):  # a cold CUDA call loads kernels: time the second
            t0 = time.perf_counter()
            probe(data.batch(ev)[0])
            _sync(device)
    eval_s = time.perf_counter() - t0
    steps = math.ceil(math.ceil(n / world) / b)
    evals = math.ceil(math.ceil(watched / world) / ev.numel())
    return _agree_max(steps * step_s + evals * eval_s, world, device)


def fit_collection(
    model: nn.Module,
    videos: Sequence[Tensor],
    cfg: TrainConfig,
    *,
    keyframes: Sequence[Tensor] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init: bool = True,
) -> CollectionFit:
    """Fit the shared ``model`` to ``videos`` (each ``(N_v, 3, H, W)`` in [0, 1], one size, any lengths) in place.

    ``cfg.batch_size`` counts clips (per rank when data-parallel). ``keyframes``: see :func:`collection_data`.
    ``init=False`` keeps the weights as they are (fine-tuning: :func:`add_videos`). With ``checkpoint`` the state
    is saved after every epoch (rank 0); ``resume=True`` continues from it.
    """
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    rank, world = _world()
    seed_everything(cfg.seed)
    recipe = RECIPES[cfg.recipe]
    lr = cfg.lr or recipe.lr
    model.to(device).train()
    data = collection_data(model, videos, keyframes, device)
    if init and not (resume and checkpoint is not None and checkpoint.exists()):
        model.before_fit(torch.cat([v[:: max(1, v.shape[0] // 8)] for v in videos]))
    run: nn.Module = model
    if world > 1:
        run = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _optimizer(model, recipe, lr)
    n = len(data)
    watch = watched_clips(data)
    per_rank = math.ceil(n / world)
    steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    shape = [int(v.shape[0]) for v in videos]
    start_epoch, step, spent, history = 0, 0, 0.0, []
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["inr"] != model.config.to_dict() or state["videos"] != shape:
            raise ValueError(f"checkpoint {checkpoint} was made for another model or collection; delete it or "
                             "drop resume")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, spent, history = state["epoch"], state["step"], state["seconds"], state["history"]
        torch.set_rng_state(state["rng"])
    amp = cfg.amp and device.type == "cuda"
    loss_fn = recipe.loss
    stopped_by = "epochs"
    last = history[-1]["video_psnr"] if history else [float("nan")] * len(videos)
    t0 = time.perf_counter() - spent
    by_time = cfg.time_budget is not None
    bar = tqdm(total=round(cfg.time_budget) if by_time else cfg.epochs,
               initial=round(spent) if by_time else start_epoch, desc="fit collection",
               unit="s" if by_time else "epoch", file=sys.stderr, disable=not progress or rank != 0,
               dynamic_ncols=True, mininterval=0.5)
    for epoch in range(start_epoch, cfg.epochs):
        # the same permutation on every rank (and on resume); wrapped so every rank gets the same number of steps
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        perm = perm.repeat(math.ceil(per_rank * world / n))[: per_rank * world][rank::world].to(device)
        losses = []
        out_of_time = False
        for i in range(0, perm.numel(), cfg.batch_size):
            elapsed = _agree_max(time.perf_counter() - t0, world, device)
            if cfg.time_budget is not None and elapsed >= cfg.time_budget:
                out_of_time = True
                break  # long epochs must not overrun the budget by a whole epoch
            frac = step / total_steps
            if cfg.time_budget:
                frac = max(frac, elapsed / cfg.time_budget)
            for g in opt.param_groups:
                g["lr"] = lr * _lr_factor(frac, cfg.warmup)
            losses.append(_step(run, opt, loss_fn, data, perm[i:i + cfg.batch_size], device, amp).item())
            step += 1
        last = _eval(run, data, 2 * cfg.batch_size, device, amp, rank, world, watch)
        mean = _mean_psnr(last, data, watch)
        _sync(device)
        elapsed = _agree_max(time.perf_counter() - t0, world, device)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "psnr": mean, "video_psnr": last, "seconds": elapsed})
        bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]['loss']:.4f}", psnr=f"{mean:.2f}dB")
        bar.update(min(round(elapsed), bar.total) - bar.n if by_time else 1)
        if checkpoint is not None and rank == 0:
            _save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                "seconds": elapsed, "history": history, "rng": torch.get_rng_state(),
                "inr": model.config.to_dict(), "train": cfg.to_dict(), "videos": shape,
            })
        if cfg.target_psnr is not None and mean >= cfg.target_psnr:
            stopped_by = "target_psnr"
            break
        if out_of_time or (cfg.time_budget is not None and elapsed >= cfg.time_budget):
            stopped_by = "time_budget"
            break
    bar.close()
    if world > 1:
        dist.barrier()  # rank 0's checkpoint is written before anyone returns
    model.eval()
    return CollectionFit(epochs=len(history), seconds=time.perf_counter() - t0,
                         psnr=history[-1]["psnr"] if history else float("nan"), stopped_by=stopped_by,
                         video_psnr=list(last), history=history)


def add_videos(
    model: nn.Module,
    old_videos: Sequence[Tensor],
    new_videos: Sequence[Tensor],
    cfg: TrainConfig,
    *,
    old_keyframes: Sequence[Tensor] | None = None,
    new_keyframes: Sequence[Tensor] | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> AddResult:
    """Grow a fitted collection: fine-tune ``model`` on the old and new videos together (from its current
    weights, with ``cfg``'s schedule; a smaller ``cfg.lr`` than the recipe's suits a fitted model) and report the
    old videos' PSNR before and after (the price the old videos pay for sharing the decoder with the new ones)."""
    if (old_keyframes is None) != (new_keyframes is None):
        raise ValueError("give keyframes for both the old and the new videos, or for neither")
    device = torch.device(cfg.device)
    model.to(device)
    before = eval_collection(model, old_videos, old_keyframes, device=device)
    videos = [*old_videos, *new_videos]
    keys = None if old_keyframes is None else [*old_keyframes, *new_keyframes]  # type: ignore[misc]
    fit = fit_collection(model, videos, cfg, keyframes=keys, checkpoint=checkpoint, progress=progress, init=False)
    k = len(old_videos)
    return AddResult(old_psnr_before=before, old_psnr_after=fit.video_psnr[:k], new_psnr=fit.video_psnr[k:],
                     fit=fit)
