"""Evaluation protocols of seed 000 §1.1: which frames a task sees and how its answers are scored."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["uniform_frames", "consecutive_frames", "classification_scores", "prediction_stability", "gflops_of",
           "ms_per_frame"]


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


def prediction_stability(logits: Tensor) -> dict[str, float]:
    """How steady one video's predictions are over its sampled frames ``(N, classes)``: the share of frames whose
    top-1 is the video-level top-1 (mean logits), and the mean top-1 probability. Agreement with pseudo ground
    truth means little on a clip whose own raw-frame answer flips from frame to frame."""
    logits = logits.float()
    video_top1 = logits.mean(0).argmax()
    return {"frames_agreeing_with_video_top1": (logits.argmax(1) == video_top1).float().mean().item(),
            "mean_top1_prob": logits.softmax(1).max(1).values.mean().item()}


def gflops_of(fn: Callable[..., object], *args: object, per: int = 1) -> float:
    """Conv/matmul GFLOPs of one call of ``fn`` (torch's flop counter), divided by ``per`` (e.g. frames)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops() / 1e9 / per


def ms_per_frame(fn: Callable[[], object], frames: int, repeats: int = 3) -> float:
    """Wall-clock milliseconds per frame of ``fn()`` (which processes ``frames`` frames): one warm-up call, then the
    median of ``repeats`` timed calls, under ``torch.no_grad``."""
    if repeats < 1 or frames < 1:
        raise ValueError(f"repeats and frames must be >= 1, got {repeats} and {frames}")
    times = []
    with torch.no_grad():
        fn()  # warm-up: lazy init, allocator, caches
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / frames
