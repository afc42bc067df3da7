"""Evaluation protocols of seed 000 §1.1: which frames a task sees and how its answers are scored."""
from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["uniform_frames", "consecutive_frames", "classification_scores", "gflops_of"]


def uniform_frames(num_frames: int, count: int = 8, seed: int = 0) -> list[int]:
    """``count`` frames at uniform intervals with a random phase ("randomly sample 8 frames with uniform
    intervals"); all frames when the video has fewer."""
    if num_frames <= count:
        return list(range(num_frames))
    gap = num_frames / count
    phase = random.Random(seed).random() * gap
    return [min(int(phase + i * gap), num_frames - 1) for i in range(count)]


def consecutive_frames(num_frames: int, count: int = 32, seed: int = 0) -> list[int]:
    """``count`` consecutive frames from a random start (action recognition)."""
    if num_frames < count:
        raise ValueError(f"this task needs {count} consecutive frames but the video has {num_frames}; "
                         f"encode more frames (--frames) or pass a smaller clip length")
    start = random.Random(seed).randrange(num_frames - count + 1)
    return list(range(start, start + count))


def classification_scores(logits: Tensor, raw_logits: Tensor) -> dict[str, float]:
    """Agreement of a path's logits ``(N, classes)`` with the raw frames' (pseudo ground truth).

    accuracy: frame-level top-1 agreement; video_accuracy: top-1 of the mean logits; top5: mean overlap of the
    top-5 sets; kl: mean KL(raw || path) of the softmax distributions.
    """
    logits, raw_logits = logits.float(), raw_logits.float()
    acc = (logits.argmax(1) == raw_logits.argmax(1)).float().mean().item()
    vid = float(logits.mean(0).argmax() == raw_logits.mean(0).argmax())
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    top_raw = raw_logits.topk(k, dim=1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top, top_raw)]).mean().item()
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(raw_logits, 1), log_target=True,
                  reduction="batchmean").item()
    return {"accuracy": acc, "video_accuracy": vid, "top5": overlap, "kl": kl}


def gflops_of(fn: Callable[..., object], *args: object, per: int = 1) -> float:
    """Conv/matmul GFLOPs of one call of ``fn`` (torch's flop counter), divided by ``per`` (e.g. frames)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops() / 1e9 / per
