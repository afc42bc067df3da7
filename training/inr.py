"""Per-video INR fitting: warm-up + cosine schedule, three stopping rules, resumable checkpoints, CPU or CUDA."""
from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .metrics import psnr_per_frame
from .recipes import RECIPES

__all__ = ["FitResult", "fit_inr", "seed_everything", "epoch_seconds"]


@dataclass
class FitResult:
    epochs: int
    seconds: float
    psnr: float  # unquantised model, all frames, after the last epoch
    stopped_by: str  # "epochs" | "time_budget" | "target_psnr"
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, psnr, seconds


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up for the first ``warmup`` fraction, then cosine decay to zero."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    rest = (progress - warmup) / max(1 - warmup, 1e-8)
    return 0.5 * (1 + math.cos(math.pi * min(max(rest, 0.0), 1.0)))


@torch.no_grad()
def _eval_psnr(model: nn.Module, frames: Tensor, batch: int, device: torch.device) -> float:
    """Mean per-frame PSNR of ``model`` over ``frames`` (on ``device``: no clip-sized copy back to the host)."""
    model.eval()
    per_frame = []
    for i in range(0, frames.shape[0], batch):
        idx = torch.arange(i, min(i + batch, frames.shape[0]), device=device)
        pred = model(idx, _fit_inputs(model, frames, idx, device)).float().clamp(0, 1)
        per_frame.append(psnr_per_frame(pred, frames[idx]))
    model.train()
    return float(torch.cat(per_frame).mean())


def _fit_inputs(model: nn.Module, frames: Tensor, idx: Tensor, device: torch.device) -> Tensor | None:
    # the family's hook: what forward sees beside the indices (HNeRV: the frames themselves; NeRV: nothing)
    x = getattr(model, "_orig_mod", model).fit_inputs(frames, idx)  # a compiled model's hooks are its original's
    return None if x is None else x.to(device)


def _for_device(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """``model`` moved to ``device``, in channels-last layout on CUDA, compiled when ``cfg.compile``. Returns
    what to call (the compiled wrapper shares the parameters: the optimiser and checkpoints use ``model``)."""
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if cfg.compile else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn, frames: Tensor, idx: Tensor,
                target: Tensor, device: torch.device, amp: bool, penalty: Callable[[], Tensor] | None = None) -> Tensor:
    """One optimiser step on the frames ``idx`` (the step :func:`fit_inr` runs and :func:`epoch_seconds` times);
    ``penalty()`` is added to the loss (e.g. a rate term)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        pred = model(idx, _fit_inputs(model, frames, idx, device))
    loss = loss_fn(pred.float(), target)
    if penalty is not None:
        loss = loss + penalty()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def median_step_seconds(step: Callable[[], None], device: torch.device, min_seconds: float, max_steps: int,
                        min_steps: int = 1) -> float:
    """The median seconds of ``step()`` after warm-up (CUDA: two steps, for kernel loading and allocator growth):
    timed until ``min_seconds`` have passed, ``min_steps`` to ``max_steps`` times. The median, so one stall on a
    shared machine does not decide a model's size."""
    for _ in range(2 if device.type == "cuda" else 1):
        step()
    _sync(device)
    times: list[float] = []
    while len(times) < min_steps or (sum(times) < min_seconds and len(times) < max_steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def epoch_seconds(model: nn.Module, frames: Tensor, cfg: TrainConfig, min_seconds: float = 1.0,
                  max_steps: int = 20) -> float:
    """Seconds one epoch of :func:`fit_inr` takes for ``model`` on ``frames`` on ``cfg.device``, measured on a
    throw-away copy: one warm-up step, then training steps until ``min_seconds`` have passed (2 to ``max_steps``)
    and one timed evaluation batch, scaled to the epoch's batches (the per-epoch PSNR pass included). The median
    step, so one stall on a shared machine does not decide the model's size."""
    device = torch.device(cfg.device)
    probe = copy.deepcopy(model).train()
    opt = torch.optim.Adam(probe.parameters(), lr=1e-6)
    run = _for_device(probe, cfg, device)
    loss_fn = RECIPES[cfg.recipe].loss
    n, b = frames.shape[0], min(cfg.batch_size, frames.shape[0])
    idx = torch.arange(b, device=device)
    frames = frames[:2 * b].float().to(device)  # the probe's batches only: a 720p clip stays on the host
    target = frames[:b]
    amp = cfg.amp and device.type == "cuda"

    def step() -> None:
        _train_step(run, opt, loss_fn, frames, idx, target, device, amp)

    step_s = median_step_seconds(step, device, min_seconds, max_steps, min_steps=2)
    ev = torch.arange(min(2 * b, n), device=device)
    probe.eval()
    with torch.no_grad():
        # time the second call: the first loads kernels for the new batch shape (on CUDA that cold call took as
        # long as 20 training steps and shrank Big Buck Bunny's model 10x) and compiles a compiled model's graph
        for _ in range(2):
            t0 = time.perf_counter()
            run(ev, _fit_inputs(run, frames, ev, device))
            _sync(device)
    eval_s = time.perf_counter() - t0
    return math.ceil(n / b) * step_s + math.ceil(n / len(ev)) * eval_s


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save never leaves a half-written checkpoint


def fit_inr(
    model: nn.Module,
    frames: Tensor,
    cfg: TrainConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init: bool = True,
    penalty: Callable[[], Tensor] | None = None,
) -> FitResult:
    """Fit ``model`` to ``frames`` ``(T, 3, H, W)`` in [0, 1] in place.

    ``model`` is an INR (``builder.inr.INR``): ``forward(idx, inputs)``, ``before_fit(frames)``,
    ``fit_inputs(frames, idx)`` and a
    ``config`` with ``frames`` and ``to_dict()``; nothing here knows the family.

    Stops after ``cfg.epochs``, when ``cfg.time_budget`` seconds have been spent, or when the PSNR over all frames
    reaches ``cfg.target_psnr``, whichever comes first. The learning-rate schedule follows the larger of the epoch
    and time fractions, so a time-budgeted run still anneals. With ``checkpoint`` the state is saved after every
    epoch; ``resume=True`` continues from it (elapsed time included). ``init=False`` skips the family's
    ``before_fit`` (a second phase that continues from trained weights). ``penalty()`` is added to every step's
    loss (the caller's regulariser, e.g. ``builder.inr.qat.rate_bits`` weighted by ``cfg.rate_weight``).
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] != model.config.frames:
        raise ValueError(f"model expects {model.config.frames} frames, got {frames.shape[0]}")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    seed_everything(cfg.seed)
    recipe = RECIPES[cfg.recipe]
    lr = cfg.lr or recipe.lr
    model.train()
    frames = frames.float().contiguous()
    target_dev = frames.to(device)  # the clip on the device once: batches and inputs are sliced from it there
    run = _for_device(model, cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=recipe.betas)
    n = frames.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, step, spent, history = 0, 0, 0.0, []
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["inr"] != model.config.to_dict():
            raise ValueError(f"checkpoint {checkpoint} was made for another INR config; delete it or drop --resume")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, spent, history = state["epoch"], state["step"], state["seconds"], state["history"]
        torch.set_rng_state(state["rng"])
    elif init:
        model.before_fit(frames)  # the family's data-dependent init (the INR's: head bias at the mean colour)
    amp = cfg.amp and device.type == "cuda"
    stopped_by, last_psnr = "epochs", history[-1]["psnr"] if history else float("nan")
    t0 = time.perf_counter() - spent
    # the bar counts seconds of the budget when there is one (an epoch cap of 100000 makes a useless ETA), else epochs
    by_time = cfg.time_budget is not None
    bar = tqdm(total=round(cfg.time_budget) if by_time else cfg.epochs,
               initial=round(spent) if by_time else start_epoch, desc="fit", unit="s" if by_time else "epoch",
               file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    for epoch in range(start_epoch, cfg.epochs):
        # one generator per epoch: a resumed run sees exactly the batches an uninterrupted one would
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        losses = []
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size].to(device)
            elapsed = time.perf_counter() - t0
            frac = step / total_steps
            if cfg.time_budget:
                frac = max(frac, elapsed / cfg.time_budget)
            for g in opt.param_groups:
                g["lr"] = lr * _lr_factor(frac, cfg.warmup)
            loss = _train_step(run, opt, recipe.loss, target_dev, idx, target_dev[idx], device, amp, penalty)
            losses.append(loss.item())
            step += 1
            if cfg.time_budget is not None and time.perf_counter() - t0 >= cfg.time_budget:
                break  # long epochs (big clips) must not overrun the budget by a whole epoch
        last_psnr = _eval_psnr(run, target_dev, 2 * cfg.batch_size, device)
        elapsed = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "psnr": last_psnr, "seconds": elapsed})
        bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]['loss']:.4f}", psnr=f"{last_psnr:.2f}dB")
        bar.update(min(round(elapsed), bar.total) - bar.n if by_time else 1)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                "seconds": elapsed, "history": history, "rng": torch.get_rng_state(),
                "inr": model.config.to_dict(), "train": cfg.to_dict(),
            })
        if cfg.target_psnr is not None and last_psnr >= cfg.target_psnr:
            stopped_by = "target_psnr"
            break
        if cfg.time_budget is not None and elapsed >= cfg.time_budget:
            stopped_by = "time_budget"
            break
    bar.close()
    model.eval().to(memory_format=torch.contiguous_format)  # the coder and the CPU paths expect the usual layout
    return FitResult(epochs=len(history), seconds=time.perf_counter() - t0, psnr=last_psnr,
                     stopped_by=stopped_by, history=history)
