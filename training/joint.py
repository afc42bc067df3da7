"""Joint mode: fine-tune the INR together with its adapter (the seed's optional mode, issue 3).

The frozen-INR recipe (``training.adapters``) can only fit what the INR's features already hold. Here the INR's
weights move too, under three losses:

    joint_recon x reconstruction (the INR family's recipe loss on every frame)
  + joint_feature x feature loss (``feature_loss`` of the adapter's output vs the backbone's raw-frame features)
  + joint_task x KL(raw-frame logits || NVP logits) through the frozen tail (tasks with class logits only)

The reconstruction term keeps the INR a video: without it the decoder would drift toward whatever the adapter
likes. The caller re-quantises and re-stores the INR afterwards (its weights changed).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .adapters import feature_loss, task_loss
from .config import AdapterTrainConfig
from .metrics import psnr

__all__ = ["JointFitResult", "fit_joint"]


@dataclass
class JointFitResult:
    epochs: int
    psnr: float  # unquantised INR, all frames, after the last epoch
    history: list[dict] = field(default_factory=list)  # per epoch: loss, recon, feature, task, psnr


def fit_joint(
    inr: nn.Module,
    adapters: nn.Module,
    tail: nn.Module,
    frames: Tensor,
    samples: Sequence[Sequence[int]],
    exit_block: int,
    targets: Sequence[Tensor],
    cfg: AdapterTrainConfig,
    *,
    recon_loss: Callable[[Tensor, Tensor], Tensor],
    video: bool = False,
    teacher: Tensor | None = None,
    progress: bool = True,
) -> JointFitResult:
    """Fine-tune ``inr`` (decoder; HNeRV's stored embeddings stay fixed) and ``adapters`` in place.

    ``adapters(features)`` returns one tensor per cut tensor; ``targets[i]`` holds cut tensor ``i`` for every
    training sample (row ``j`` = ``samples[j]``: one frame for image tasks, a clip for action tasks). Non-float
    cut tensors (DETR's mask) are derived, not learned, and have no feature loss. ``teacher`` (raw-frame logits,
    one row per sample) enables the task term. The tail stays frozen. Every epoch visits each training sample once
    and every frame at least once for reconstruction.
    """
    if frames.shape[0] != inr.config.frames:
        raise ValueError(f"the INR has {inr.config.frames} frames, got {frames.shape[0]}")
    if any(t.shape[0] != len(samples) for t in targets):
        raise ValueError("targets need one row per training sample")
    use_task = cfg.joint_task > 0 and teacher is not None
    for p in tail.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    frames = frames.float()
    learned = [i for i, t in enumerate(targets) if t.is_floating_point()]
    opt = torch.optim.Adam([{"params": list(inr.parameters()), "lr": cfg.joint_lr},
                            {"params": list(adapters.parameters()), "lr": cfg.lr}])
    covered = {i for s in samples for i in s}
    rest = [i for i in range(frames.shape[0]) if i not in covered]  # frames only the recon term sees
    per_step = 1 if video else cfg.batch_size  # a clip sample is already 32 frames
    history: list[dict] = []
    bar = tqdm(range(cfg.joint_epochs), desc="joint", unit="epoch", file=sys.stderr, disable=not progress,
               mininterval=0.5)
    for epoch in bar:
        inr.train()
        adapters.train()
        perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        sums = {"loss": 0.0, "recon": 0.0, "feature": 0.0, "task": 0.0}
        steps = 0
        batches = [("sample", perm[i:i + per_step].tolist()) for i in range(0, len(samples), per_step)]
        batches += [("recon", rest[i:i + cfg.batch_size]) for i in range(0, len(rest), cfg.batch_size)]
        for what, rows in batches:
            idx = [f for j in rows for f in samples[j]] if what == "sample" else rows
            rgb, feats = inr.forward_intermediates(idx, [exit_block])
            recon = recon_loss(rgb, frames[idx])
            loss = cfg.joint_recon * recon
            parts = {"recon": recon.item(), "feature": 0.0, "task": 0.0}
            if what == "sample":
                f = feats[0]
                if video:  # (clips * T, C, h, w) -> (clips, C, T, h, w)
                    f = f.unflatten(0, (len(rows), -1)).transpose(1, 2)
                outs = adapters(f)
                feat = sum(feature_loss(outs[i], targets[i][rows].float()) for i in learned) / max(len(learned), 1)
                loss = loss + cfg.joint_feature * feat
                parts["feature"] = feat.item() if isinstance(feat, Tensor) else float(feat)
                if use_task:
                    out = tail(*outs)
                    tl = task_loss(out if isinstance(out, Tensor) else out[0], teacher[rows])
                    loss = loss + cfg.joint_task * tl
                    parts["task"] = tl.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v
        inr.eval()
        with torch.no_grad():
            p = psnr(inr.decode_all(), frames)
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "psnr": p})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", psnr=f"{p:.2f}dB")
    inr.eval()
    adapters.eval()
    last = history[-1]["psnr"] if history else math.nan
    return JointFitResult(epochs=len(history), psnr=last, history=history)
