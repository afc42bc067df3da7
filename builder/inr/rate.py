"""Sizing an INR for a clip: from a rate target (bytes or bits per pixel), then from this device's speed.

``size_for_bytes`` turns a byte budget into the largest model of the family's shape that codes into it: a first
guess from the bits per parameter the coder achieves (measured: ``bits - 0.25`` on trained models), corrected by
coding a fresh model of the guessed size. ``plan_size`` adds the time budget: it times a few training steps and,
when the budget leaves fewer epochs than the family needs, shrinks the model (a default rate) or says so before
training (a rate the user asked for). ``fit_rate`` checks the trained model's real bytes and prunes the smallest
weights when they overshoot, so the stored size lands on the target.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from training import epoch_seconds
from training.config import TrainConfig

from ..config import QuantConfig
from .base import INR
from .coding import encode_inr
from .config import INRConfig
from .registry import build_inr, get_inr_family

__all__ = ["RateTarget", "Sizing", "RateTooLow", "coded_bytes_estimate", "size_for_bytes", "default_target",
           "plan_size", "fit_rate", "smallest_bytes", "quality_warnings", "DEFAULT_BPP_RANGE", "QUALITY_FLOOR_DB"]

# A trained model codes to 0.95-0.98 of the bytes of a freshly initialised one of the same shape (HNeRV, 2.2 M
# parameters, 4-8 bits: its weights are more peaked than the uniform init); the estimate uses the middle.
TRAINED_TO_FRESH = 0.97
# The coder's bits per parameter on trained models: about (bits - 0.25) with ANS at 4-8 bits (same measurement).
BITS_SAVED = 0.25
# Without --bpp / --bytes the target is the source file's own bytes for the encoded frames, kept in this range of
# bits per pixel: below 0.1 a short clip cannot pay for a decoder that reconstructs anything; above 0.5 (a raw or
# near-lossless source) the INR is only larger, not better, in a CPU-sized run (docs/BENCHMARKS.md: HNeRV on
# carphone 21.9 dB at 0.4 bpp against 20.0 dB at 1.0 in 60 s; on bikes 21.6 at 0.5 against 21.2 at 1.0 in 30 s).
DEFAULT_BPP_RANGE = (0.1, 0.5)
# A finished encode under this PSNR gets a warning that says what to change.
QUALITY_FLOOR_DB = 25.0
# Overshoot tolerated before fit_rate prunes (the contract is +-15 %; this leaves room for estimate noise).
OVERSHOOT = 1.05


class RateTooLow(ValueError):
    """The byte budget is below the smallest model the family can build for this clip."""


@dataclass(frozen=True)
class RateTarget:
    """How many bytes the stored INR may take, and where that number came from (``--bytes``, ``--bpp`` or the
    default); ``explicit`` targets are kept even when the time budget is short, the default one shrinks."""

    bytes: int
    origin: str
    explicit: bool

    @classmethod
    def from_bpp(cls, bpp: float, frames: int, height: int, width: int) -> RateTarget:
        return cls(round(bpp * frames * height * width / 8), f"--bpp {bpp:g}", True)

    def bpp(self, frames: int, height: int, width: int) -> float:
        return self.bytes * 8 / (frames * height * width)

    @classmethod
    def given(cls, frames: int, height: int, width: int, bpp: float | None = None,
              max_bytes: int | None = None) -> RateTarget | None:
        """The target the user gave (``--bytes``, else ``--bpp`` over ``frames`` of ``height x width``), or None:
        then the caller's default applies."""
        if bpp is not None and max_bytes is not None:
            raise ValueError("give one rate target: --bpp or --bytes, not both")
        if max_bytes is not None:
            return cls(max_bytes, f"--bytes {max_bytes}", True)
        return None if bpp is None else cls.from_bpp(bpp, frames, height, width)


@dataclass
class Sizing:
    """What ``encode`` decided about the model's size, stored in the entry (``meta["sizing"]``) and printed."""

    rule: str  # "rate" (from a byte target) or "explicit" (sizes given, seed Table 1 for the rest)
    target_bytes: int | None = None
    target_bpp: float | None = None
    origin: str | None = None
    predicted_bytes: int | None = None
    params: int = 0
    epoch_seconds: float | None = None  # measured on this device before training
    planned_epochs: int | None = None  # what the time budget allows at that speed
    min_epochs: int | None = None  # what the family needs for a usable fit
    shrunk_from_bytes: int | None = None  # the default target before the time budget shrank it
    pruned: float = 0.0  # fraction fit_rate pruned to land on the target
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _fresh(config: INRConfig) -> INR:
    with torch.random.fork_rng(devices=[]):  # the same estimate every time, the caller's RNG untouched
        torch.manual_seed(0)
        model = build_inr(config, decoder_only=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.stored_state_dict().values():
            if t.is_floating_point() and not t.any():
                # zero-initialised stored buffers (HNeRV's embeddings) would code to nearly nothing; trained ones
                # do not
                t.copy_(torch.randn(t.shape, generator=gen))
    return model


def coded_bytes_estimate(config: INRConfig, quant: QuantConfig) -> int:
    """Bytes a trained model of ``config`` codes to with ``quant``: a fresh model's coded bytes (header, scales
    and all) times the measured trained / fresh ratio."""
    return round(len(encode_inr(_fresh(config), quant)) * TRAINED_TO_FRESH)


def size_for_bytes(arch: str, frames: int, height: int, width: int, max_bytes: int, quant: QuantConfig,
                   **options: Any) -> tuple[INRConfig, int]:
    """The largest config of ``arch``'s rate shape whose coded bytes fit ``max_bytes``; returns it and its
    estimated bytes. ``options`` are the family's rate options (``num_blocks``, ``activation``, ...)."""
    family = get_inr_family(arch)
    if family.for_params is None:
        raise ValueError(f"arch {arch!r} has no rate sizing: give its sizes (--stem-dim, ...) or use --table1")
    guess = max_bytes * 8 / max(quant.bits - BITS_SAVED, 1.0)
    estimates: dict[INRConfig, int] = {}

    def fits(params: float) -> tuple[bool, tuple[INRConfig, int] | None]:
        """(too large?, (config, estimate) if it fits)"""
        config = family.for_params(frames, height, width, int(params), **options)
        if config is None:  # below the family's smallest model: more parameters, not fewer
            return False, None
        if config not in estimates:
            estimates[config] = coded_bytes_estimate(config, quant)
        return (False, (config, estimates[config])) if estimates[config] <= max_bytes else (True, None)

    # bisect the parameter budget (in log space) for the largest model whose coded bytes fit, from the family's
    # smallest model up to past the guess that the coder's bits per parameter give; configs are discrete, so few
    # distinct ones get coded
    lo = _smallest_params(family, frames, height, width, options)
    too_large, best = fits(lo)
    if too_large:
        need = estimates[family.for_params(frames, height, width, lo, **options)]
        raise RateTooLow(
            f"{max_bytes:,} bytes ({max_bytes * 8 / (frames * height * width):.3g} bpp) is below the smallest {arch} "
            f"for {frames} frames of {width}x{height}: about {need:,} bytes "
            f"({need * 8 / (frames * height * width):.3g} bpp). Ask for more (--bytes / --bpp), fewer frames or a "
            f"smaller --size")
    hi = max(guess * 4, lo * 1.01)
    for _ in range(24):
        mid = math.sqrt(lo * hi)
        too_large, got = fits(mid)
        if too_large:
            hi = mid
        else:
            best, lo = got or best, mid
        if hi / lo < 1.005:
            break
    assert best is not None
    return best


def smallest_bytes(arch: str, frames: int, height: int, width: int, quant: QuantConfig, **options: Any) -> int:
    """Estimated coded bytes of the smallest model ``arch``'s rate sizing builds for this clip."""
    family = get_inr_family(arch)
    smallest = family.for_params(frames, height, width, _smallest_params(family, frames, height, width, options),
                                 **options)
    return coded_bytes_estimate(smallest, quant)


def _smallest_params(family, frames: int, height: int, width: int, options: dict[str, Any]) -> int:
    """The least parameter budget the family's rate sizing builds a model for."""
    lo, hi = 1, 1
    while family.for_params(frames, height, width, hi, **options) is None:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if family.for_params(frames, height, width, mid, **options) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def default_target(source: str | Path, source_frames: int | None, frames: int, height: int,
                   width: int) -> RateTarget:
    """The source file's own bytes for ``frames`` of its frames, kept within :data:`DEFAULT_BPP_RANGE` at the
    encoded size (the middle of the range when the file's frame count is unknown)."""
    pixels = frames * height * width
    lo, hi = (round(b * pixels / 8) for b in DEFAULT_BPP_RANGE)
    try:
        size = Path(source).stat().st_size
    except OSError:
        size = 0
    if not source_frames or not size:
        mid = math.sqrt(DEFAULT_BPP_RANGE[0] * DEFAULT_BPP_RANGE[1])
        return RateTarget(round(mid * pixels / 8), f"default: {mid:.2g} bpp (the source's frame count is unknown)",
                          False)
    own = round(size / source_frames * frames)
    clamped = min(max(own, lo), hi)
    note = "" if clamped == own else f", kept within {DEFAULT_BPP_RANGE[0]:g}-{DEFAULT_BPP_RANGE[1]:g} bpp"
    return RateTarget(clamped, f"default: the source file's bytes for these {frames} frames{note}", False)


def plan_size(arch: str, frames: torch.Tensor | tuple[int, int, int], quant: QuantConfig, train: TrainConfig,
              target: RateTarget, options: dict[str, Any], log: Callable[[str], None] = lambda _: None,
              epoch_time: Callable[..., float] | None = None, shrink_gain: float | None = None
              ) -> tuple[INRConfig, Sizing]:
    """Size ``arch`` for ``frames`` ``(T, 3, H, W)`` at ``target`` and time one epoch on ``train.device``; with
    ``train.time_budget``, make sure the budget leaves the family's ``min_epochs`` (shrinking a default target,
    warning about an explicit one, with the budget that would). ``epoch_time(config, quick=False)`` times one
    epoch (default: :func:`training.epoch_seconds` on ``frames``); with it ``frames`` may be the shape
    ``(T, H, W)`` alone (a collection: its frames in all). With ``shrink_gain``, a shrink whose epoch does not take
    at most that share of the larger model's is undone (a family whose cost barely falls with its width: the
    quality loss would buy nothing)."""
    if isinstance(frames, torch.Tensor):
        t, _, h, w = frames.shape
    else:
        t, h, w = frames
    if epoch_time is None:
        def epoch_time(config: INRConfig, quick: bool = False) -> float:
            return epoch_seconds(build_inr(config), frames, train, min_seconds=0.3 if quick else 1.0)
    family = get_inr_family(arch)
    need = family.model.min_epochs
    try:
        config, est = size_for_bytes(arch, t, h, w, target.bytes, quant, **options)
    except RateTooLow:
        if target.explicit:
            raise
        # a default target never fails: the smallest model it is
        small = smallest_bytes(arch, t, h, w, quant, **options)
        target = RateTarget(small, target.origin + f"; raised to the smallest {arch}", False)
        config, est = size_for_bytes(arch, t, h, w, target.bytes, quant, **options)
    sizing = Sizing("rate", target.bytes, round(target.bpp(t, h, w), 6), target.origin, est, config.stored_params,
                    min_epochs=need)
    if train.time_budget is None:
        # no budget: a short probe all the same, so that encode can say up front how long the epochs will take
        sizing.epoch_seconds = round(epoch_time(config, quick=True), 4)
        sizing.planned_epochs = train.epochs
        return config, sizing
    cur_bytes, floor, before = target.bytes, None, None
    for _ in range(4):
        sec = epoch_time(config)
        if train.time_budget / sec < 0.8 * need:
            # a shrink or a warning rests on this probe: time it once more and keep the faster, since a busy machine
            # only adds time (one slow probe shrank gradio b.mp4's model 2x, docs/BENCHMARKS.md)
            sec = min(sec, epoch_time(config))
        if before is not None and shrink_gain is not None and sec > shrink_gain * before[2]:
            config, sizing, sec = before
            break
        epochs = int(train.time_budget / sec)
        sizing.epoch_seconds, sizing.planned_epochs = round(sec, 4), min(epochs, train.epochs)
        if epochs >= 0.8 * need or target.explicit:
            break
        # a default target: a smaller model trains faster; step time falls more slowly than bytes (the
        # full-resolution blocks keep their floor width), so shrink by the epoch ratio, at least by half
        floor = floor or smallest_bytes(arch, t, h, w, quant, **options)
        smaller = max(round(cur_bytes * min(0.5, epochs / need)), floor)
        new, new_est = size_for_bytes(arch, t, h, w, smaller, quant, **options)
        if new == config:
            break
        before = (config, sizing, sec)
        config, est, cur_bytes = new, new_est, smaller
        sizing = replace(sizing, target_bytes=smaller, target_bpp=round(smaller * 8 / (t * h * w), 6),
                         predicted_bytes=est, params=config.stored_params,
                         shrunk_from_bytes=sizing.shrunk_from_bytes or target.bytes)
    # the epoch counts are rough (one 32-frame clip each): warn only when clearly short of them
    if sizing.planned_epochs is not None and sizing.planned_epochs < 0.8 * need:
        budget = math.ceil(need * sizing.epoch_seconds)
        sizing.warnings.append(
            f"{train.time_budget:g} s of training gives about {sizing.planned_epochs} epochs at "
            f"{sizing.epoch_seconds:.2f} s each; {arch} needs about {need} for a usable result. Give "
            f"--time-budget {budget} or more, fewer --frames, a smaller --size"
            + (", a lower --bpp" if target.explicit else "") + _GPU_HINT[train.device.startswith("cuda")])
        log("warning: " + sizing.warnings[-1])
    return config, sizing


def fit_rate(model: INR, quant: QuantConfig, max_bytes: int) -> tuple[QuantConfig, bytes]:
    """Code ``model``; if it overshoots ``max_bytes`` by more than 5 %, prune the smallest weights (global
    magnitude, the fraction found by bisection) until it fits. Returns the quant config used and the bytes."""
    blob = encode_inr(model, quant)
    if len(blob) <= OVERSHOOT * max_bytes:
        return quant, blob
    lo, hi = quant.prune, 0.95
    best = (replace(quant, prune=hi), encode_inr(model, replace(quant, prune=hi)))  # if nothing less fits
    for _ in range(12):
        mid = (lo + hi) / 2
        q = replace(quant, prune=round(mid, 4))
        b = encode_inr(model, q)
        if len(b) <= max_bytes:
            best, hi = (q, b), mid
            if len(b) >= 0.97 * max_bytes:
                break
        else:
            lo = mid
    return best


# the last resort of a warning about training time: a GPU, unless the encode already runs on one
_GPU_HINT = {False: " or --device cuda", True: ""}


def quality_warnings(psnr: float, stopped_by: str, epochs: int, time_budget: float | None,
                     on_gpu: bool = False) -> list[str]:
    """What to change when a finished encode is below :data:`QUALITY_FLOOR_DB`."""
    if psnr >= QUALITY_FLOOR_DB:
        return []
    if stopped_by == "time_budget":
        fix = (f"it stopped at the time budget after {epochs} epochs: give a longer --time-budget "
               f"(e.g. {math.ceil(2 * (time_budget or 0))})" + _GPU_HINT[on_gpu])
    elif stopped_by == "epochs":
        fix = "it ran every epoch: a higher --bpp (a larger model) or more --epochs"
    else:
        fix = "it reached --target-psnr: ask for a higher one"
    return [f"PSNR {psnr:.1f} dB is below {QUALITY_FLOOR_DB:g} dB (visibly degraded): {fix}"]
