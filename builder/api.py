"""High-level operations on stored videos: encode, load, decode, evaluate, cost. The CLI is a thin shell on these."""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from training import FitResult, fit_inr
from training.recipes import RECIPES
from training.config import TrainConfig
from training.metrics import ms_ssim, psnr

from .codec import FORMAT_VERSION
from .config import QuantConfig
from .entry import H264_FILE, INR_FILE, VIDEO, FrameRange, H264Twin, INRInfo, Quality, Source, VideoEntry
from .inr import DecodedINR, INRConfig, build_inr, decode_inr, encode_inr, get_inr_family, inr_config
from .inr.qat import quantization_aware
from .inr.rate import RateTarget, Sizing, default_target, fit_rate, plan_size, quality_warnings
from .store import EntryExists, VideoStore, validate_video_id
from .video import Clip, read_frames, read_video, write_pngs, write_video

__all__ = ["h264_copy", "encode_video", "replace_inr", "load_inr", "decode_video", "eval_video", "cost_table",
           "read_source", "read_h264", "h264_frames"]

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")
# measured best at the default rate and equal training time on CPU (docs/BENCHMARKS.md, "Encoding defaults":
# ahead on bikes and Big Buck Bunny, tied on world, behind on carphone)
DEFAULT_ARCH = "hnerv"


def _quality(model: torch.nn.Module, frames: torch.Tensor, num_bytes: int) -> dict[str, Any]:
    """The :class:`Quality` fields measured on a decoder rebuilt from ``num_bytes`` stored bytes."""
    recon = model.decode_all()
    t, _, h, w = frames.shape
    return {"params": model.num_params(), "psnr": round(psnr(recon, frames), 4),
            "ms_ssim": round(ms_ssim(recon, frames), 6), "bpp": round(num_bytes * 8 / (t * h * w), 6),
            "bytes": num_bytes}


def h264_copy(frames: torch.Tensor, fps: float, max_bytes: int) -> tuple[bytes, H264Twin]:
    """H.264 (libx264) of ``frames`` at the lowest CRF whose file fits in ``max_bytes`` (CRF 51 if none does):
    the codec path is then compared with the INR at equal (or smaller) storage. Returns the bytes and their
    quality (CRF, bpp, PSNR, MS-SSIM against ``frames``)."""
    t, _, h, w = frames.shape
    best: tuple[int, bytes] | None = None
    lo, hi = 0, 51
    with tempfile.TemporaryDirectory() as d:
        while lo <= hi:  # file size falls monotonically (in practice) with CRF: binary search
            crf = (lo + hi) // 2
            data = write_video(Path(d) / f"crf{crf}.mp4", frames, fps, crf=crf).read_bytes()
            if len(data) <= max_bytes:
                best, hi = (crf, data), crf - 1
            else:
                lo = crf + 1
        # nothing fits: the search ended by trying CRF 51, the smallest file x264 makes at this quality scale
        crf, data = best or (51, (Path(d) / "crf51.mp4").read_bytes())
        p = Path(d) / "copy.mp4"
        p.write_bytes(data)
        back = read_video(p, count=t).frames[..., :h, :w]
    return data, H264Twin(crf=crf, bytes=len(data), bpp=round(len(data) * 8 / (t * h * w), 6),
                          psnr=round(psnr(back, frames), 4), ms_ssim=round(ms_ssim(back, frames), 6))


def encode_video(
    path: str | Path,
    video_id: str,
    *,
    store: VideoStore,
    arch: str = DEFAULT_ARCH,
    start: int = 0,
    count: int | None = None,
    step: int = 1,
    size: tuple[int, int] | None = None,
    model: dict[str, Any] | None = None,
    bpp: float | None = None,
    max_bytes: int | None = None,
    table1: bool = False,
    train: TrainConfig | None = None,
    quant: QuantConfig = QuantConfig(),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read a clip, fit an INR, compress it and store it under ``video_id``; return the stored metadata.

    Size: by default the family's rate sizing at a byte target (``max_bytes``, ``bpp``, or the source file's own
    bytes for these frames, see ``builder.inr.rate.default_target``), planned against ``train.time_budget``;
    ``model`` sizes (``stem_dim``, ``lower_width``, ``mlp_dim``, ...) or ``table1`` choose it explicitly (seed
    Table 1 for what is not given); ``model`` options the rate sizing takes (``num_blocks``, ``activation``)
    apply to both. PSNR / MS-SSIM are measured on the model decoded back from the stored bytes, and bpp from
    their length. ``log`` receives the sizing decision and warnings (also stored: ``meta["sizing"]``).
    """
    validate_video_id(video_id)
    if not overwrite and store.exists(video_id):  # fail before minutes of training, not after
        raise EntryExists(f"video '{video_id}' already exists in {store.root}; pass --force to replace it")
    log = log or (lambda _: None)
    family = get_inr_family(arch)
    opts = {k: v for k, v in (model or {}).items() if v is not None}
    explicit = table1 or family.for_params is None or any(k not in family.rate_options for k in opts)
    if bpp is not None and max_bytes is not None:
        raise ValueError("give one rate target: --bpp or --bytes, not both")
    if explicit and (bpp is not None or max_bytes is not None):
        given = "--table1" if table1 else ", ".join("--" + k.replace("_", "-") for k in opts
                                                   if k not in family.rate_options)
        raise ValueError(f"--bpp / --bytes choose the model size; drop {given} (or the rate target)")
    t0 = time.perf_counter()
    clip = read_video(path, start=start, count=count, step=step, size=size)
    frames = clip.frames
    t, _, h, w = frames.shape
    train = train or TrainConfig(recipe=family.model.recipe)
    if explicit:
        cfg = inr_config(arch, t, h, w, **opts)
        sizing = Sizing("table1" if table1 else "explicit", params=cfg.stored_params)
    else:
        target = (RateTarget(max_bytes, f"--bytes {max_bytes}", True) if max_bytes is not None
                  else RateTarget.from_bpp(bpp, t, h, w) if bpp is not None
                  else default_target(path, clip.info.frames, t, h, w))
        cfg, sizing = plan_size(arch, frames, quant, train, target, opts, log)
    log(_sizing_line(arch, sizing, train))
    inr = build_inr(cfg)
    ckpt_dir = store.root / ".checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / f"{video_id}.pt"
    fit = _fit(inr, frames, train, quant, ckpt, resume, progress)
    inr.cpu()
    inr.after_fit(frames)
    if sizing.target_bytes is not None:
        quant, blob = fit_rate(inr, quant, sizing.target_bytes)
        sizing.pruned = quant.prune
    else:
        blob = encode_inr(inr, quant)
    decoded = decode_inr(blob)
    quality = _quality(decoded.model, frames, len(blob))
    for msg in quality_warnings(quality["psnr"], fit.stopped_by, fit.epochs, train.time_budget):
        sizing.warnings.append(msg)
        log("warning: " + msg)
    h264, twin = h264_copy(frames, clip.fps / step, len(blob))
    entry = VideoEntry(
        video_id,
        source=Source(str(Path(path).resolve()), clip.info.codec, clip.info.width, clip.info.height),
        frames=FrameRange(start=start, step=step, count=t, fps=clip.fps / step),
        width=w, height=h,
        inr=INRInfo(cfg.to_dict(), quant.to_dict(), train.to_dict(), FORMAT_VERSION),
        quality=Quality(**quality, encode_seconds=round(time.perf_counter() - t0, 3),
                        train_seconds=round(fit.seconds, 3), epochs=fit.epochs, stopped_by=fit.stopped_by,
                        train_psnr=round(fit.psnr, 4)),
        h264=twin,
        encoded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={"sizing": sizing.to_dict()},
    )
    stored = store.put_video(entry, {INR_FILE: blob, H264_FILE: h264}, overwrite=overwrite)
    ckpt.unlink(missing_ok=True)
    return {"id": video_id, **stored.to_meta()}


def _fit(inr: torch.nn.Module, frames: torch.Tensor, train: TrainConfig, quant: QuantConfig, ckpt: Path,
         resume: bool, progress: bool) -> FitResult:
    """``fit_inr``, then (``train.qat > 0``) its last ``qat`` share of epochs and time through the quantiser at a
    tenth of the lr, no warm-up."""
    if not train.qat:
        return fit_inr(inr, frames, train, checkpoint=ckpt, resume=resume, progress=progress)
    keep = 1 - train.qat
    main = dataclasses.replace(train, epochs=max(1, round(train.epochs * keep)),
                               time_budget=train.time_budget and train.time_budget * keep)
    fit = fit_inr(inr, frames, main, checkpoint=ckpt, resume=resume, progress=progress)
    tune = dataclasses.replace(train, epochs=max(1, train.epochs - main.epochs), target_psnr=None, warmup=0.0,
                               time_budget=train.time_budget and max(train.time_budget - fit.seconds, 0.01),
                               lr=0.1 * (train.lr or RECIPES[train.recipe].lr))
    with quantization_aware(inr, quant):
        fine = fit_inr(inr, frames, tune, progress=progress, init=False)
    return FitResult(fit.epochs + fine.epochs, fit.seconds + fine.seconds, fine.psnr, fit.stopped_by,
                     fit.history + [{**h, "epoch": fit.epochs + h["epoch"], "qat": True} for h in fine.history])


def _sizing_line(arch: str, s: Sizing, train: TrainConfig) -> str:
    if s.rule != "rate":
        return f"{arch}: {s.params:,} params ({'seed Table 1' if s.rule == 'table1' else 'sizes as given'})"
    line = (f"{arch}: {s.params:,} params for {s.target_bytes:,} bytes ({s.target_bpp:.3g} bpp; {s.origin}"
            + (f", shrunk from {s.shrunk_from_bytes:,} to fit the time budget" if s.shrunk_from_bytes else "") + ")")
    if s.epoch_seconds is not None:
        line += f"; {s.epoch_seconds:.2f} s per epoch here: about {s.planned_epochs} epochs in {train.time_budget:g} s"
    return line


def replace_inr(store: VideoStore, video_id: str, model: torch.nn.Module, frames: torch.Tensor, *,
                drop: Iterable[str] = (), meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Store a changed INR (e.g. after joint fine-tuning) in place of ``video_id``'s: quantised and coded with the
    entry's own QuantConfig, PSNR / MS-SSIM measured on the decoded bytes, bpp from their length, the H.264 twin
    re-made for the new size. Files named in ``drop`` are removed (what depended on the old weights); the rest are
    kept. One atomic store write. Returns the new metadata (``meta`` merged in, as flat meta keys)."""
    entry = store.video(video_id)
    if entry.kind != VIDEO:
        raise ValueError(f"'{video_id}' is a {entry.kind}: only a video's own INR can be replaced")
    if model.config != INRConfig.from_dict(entry.inr.config):
        raise ValueError(f"the INR's architecture differs from video '{video_id}''s; encode it as a new video")
    blob = encode_inr(model, QuantConfig.from_dict(entry.inr.quant))
    decoded = decode_inr(blob)
    h264, twin = h264_copy(frames, entry.frames.fps, len(blob))
    drop = set(drop)
    files = {n: store.get(video_id, n) for n in entry.files if n not in drop and n not in (INR_FILE, H264_FILE)}
    # the training fields describe the original fit and stay; the measured ones are the new bytes'
    quality = dataclasses.replace(entry.quality, **_quality(decoded.model, frames, len(blob)))
    new = dataclasses.replace(entry, quality=quality, h264=twin)
    if meta:
        new = VideoEntry.from_meta(video_id, {**new.to_meta(), **meta})
    return store.put_video(new, {INR_FILE: blob, H264_FILE: h264, **files}, overwrite=True).to_meta()


def load_inr(store: VideoStore, video_id: str, device: str | torch.device = "cpu") -> DecodedINR:
    """The stored decoder of ``video_id`` (checksum-verified)."""
    holder = store.holder(video_id, INR_FILE)
    if holder != video_id:
        raise ValueError(f"video '{video_id}' is a member of collection '{holder}': decoding a collection's members "
                         "is not supported yet")
    return decode_inr(store.get(video_id, INR_FILE), device=device)


def read_h264(store: VideoStore, video_id: str, indices: Sequence[int]) -> torch.Tensor:
    """Frames ``indices`` of the video's stored H.264 copy (the codec baseline), decoded with PyAV: (N, 3, H, W)
    in [0, 1] at the INR's size."""
    entry = store.video(video_id)
    idx = [int(i) for i in indices]
    if not idx or min(idx) < 0 or max(idx) >= entry.frames.count:
        raise ValueError(f"frames {idx} out of range for video '{video_id}' ({entry.frames.count} frames)")
    return h264_frames(store.path(video_id, H264_FILE), entry, idx)


def _typed(entry: VideoEntry | Mapping[str, Any]) -> VideoEntry:
    # nvp and serving still hand over the raw meta (store.meta); they move to store.video() when merged
    return entry if isinstance(entry, VideoEntry) else VideoEntry.from_meta(str(entry.get("id", "")), entry)


def h264_frames(path: str | Path, entry: VideoEntry | Mapping[str, Any], indices: Sequence[int]) -> torch.Tensor:
    """Frames ``indices`` of the H.264 copy at ``path`` of ``entry`` (``read_frames``: decodes up to the last one,
    converts only those), cropped to the INR's size: x264 pads odd sizes to even ones."""
    entry = _typed(entry)
    return read_frames(path, [int(i) for i in indices])[..., :entry.height, :entry.width]


def read_source(entry: VideoEntry | Mapping[str, Any], source: str | Path | None = None) -> Clip:
    """Re-read the exact frames a stored video was encoded from (same range, step and size)."""
    entry = _typed(entry)
    path = Path(source or entry.source.path)
    if not path.exists():
        raise FileNotFoundError(f"source video {path} not found; pass --source PATH to evaluate against a copy")
    return read_video(path, start=entry.frames.start, count=entry.frames.count, step=entry.frames.step,
                      size=(entry.width, entry.height))


def decode_video(store: VideoStore, video_id: str, out: str | Path, *, fps: float | None = None) -> Path:
    """Decode every frame; write an mp4/avi/mkv/mov when ``out`` has such a suffix, else a folder of PNGs."""
    entry = store.video(video_id)
    frames = load_inr(store, video_id).model.decode_all()
    out = Path(out)
    if out.suffix.lower() in VIDEO_EXTS:
        return write_video(out, frames, fps or entry.frames.fps)
    write_pngs(out, frames)
    return out


def eval_video(store: VideoStore, video_id: str, *, source: str | Path | None = None) -> dict[str, Any]:
    """PSNR / MS-SSIM of the stored INR against its source frames, with bpp and params."""
    entry = store.video(video_id)
    clip = read_source(entry, source)
    decoded = load_inr(store, video_id)
    q = _quality(decoded.model, clip.frames, decoded.num_bytes)
    return {"id": video_id, "psnr": q["psnr"], "ms_ssim": q["ms_ssim"], "bpp": entry.quality.bpp,
            "bytes": q["bytes"], "params": q["params"], "frames": entry.frames.count, "arch": entry.arch}


def cost_table(config: INRConfig) -> dict[str, Any]:
    """The seed's Table 2 for one INR: GFLOPs per frame and parameters of each stage, and the share of decoder
    FLOPs skipped when exiting after each block (later blocks and the head are not run)."""
    rows = config.block_info()
    total = math.fsum(r.gflops for r in rows)
    out, done = [], 0.0
    for r in rows:
        done += r.gflops
        row = {k: v for k, v in r.to_dict().items() if k != "exit"}  # reported as "exit_block" (CLI JSON key)
        out.append({**row, "exit_block": r.exit, "cum_gflops": done,
                    "skipped_share": (1 - done / total) if r.exit is not None and total else None})
    return {"blocks": out, "total_gflops": total, "total_params": sum(r.params for r in rows)}
