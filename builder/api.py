"""High-level operations on stored videos: encode, load, decode, evaluate, cost. The CLI is a thin shell on these."""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import math
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from training import FitResult, fit_inr
from training.recipes import RECIPES
from training.config import TrainConfig
from training.metrics import ms_ssim, psnr

from .codec import FORMAT_VERSION
from .config import QuantConfig
from .entry import (ADAPTER, H264_FILE, INR_FILE, PAIRING, VIDEO, ChunkInfo, FrameRange, H264Twin, INRInfo, Quality,
                    Source, VideoEntry, chunk_file, inr_checksum, parse_file)
from .inr import (ChunkedINR, DecodedINR, INRConfig, build_inr, chunk_plan, decode_chunked, decode_inr, encode_inr,
                  get_inr_family, inr_config, list_inr_families)
from .inr.qat import quantization_aware, rate_bits
from .inr.rate import RateTarget, Sizing, default_target, fit_rate, plan_size, quality_warnings
from .store import EntryChanged, EntryExists, VideoStore, validate_video_id
from .video import Clip, probe, read_frames, read_video, write_pngs, write_video

__all__ = ["h264_copy", "encode_video", "reencode_chunk", "replace_inr", "replace_inr_entry",
           "load_inr", "load_bound_inr", "decode_video", "eval_video", "cost_table",
           "read_source", "read_h264", "h264_frames"]

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")
# measured best at the default rate and equal training time on CPU (docs/BENCHMARKS.md, "Encoding defaults":
# ahead on bikes and Big Buck Bunny, tied on world, behind on carphone)
DEFAULT_ARCH = "hnerv"
# Frames per chunk (GOP) when a video is longer than that: each chunk is its own INR, warm-started from the
# previous chunk's weights. Measured: docs/BENCHMARKS.md, "Whole videos in chunks" (chunk-length sweep at equal
# total bytes and encode time on a real clip, 2-core CPU).
DEFAULT_CHUNK_FRAMES = 32


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


class EncodeInProgress(RuntimeError):
    """Another process is encoding this video ID right now."""


@contextmanager
def encoding_lock(store: VideoStore, video_id: str) -> Iterator[None]:
    """Hold ``video_id``'s encode lock, ``<store>/.locks/<id>.encode`` (``fcntl.flock``, released by the kernel if
    the holder dies), or raise :class:`EncodeInProgress` at once. Held for a whole encode, training included, so a
    second encode of the ID fails before it trains, and the ID's checkpoints (``.checkpoints/<id>*.pt``, which
    ``--resume`` continues) belong to the holder alone. The store's own lock only covers its short writes."""
    locks = store.root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{video_id}.encode", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise EncodeInProgress(f"video '{video_id}' is being encoded by another process"
                                   f"{f' (pid {holder})' if holder else ''}; wait for it to finish, or encode "
                                   "under another ID") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)  # for the message a second encoder prints
        try:  # the store must take the result: a read-only or locked-down store fails now, not after training
            tempfile.TemporaryFile(dir=store.root, prefix=".probe-").close()
        except OSError as e:
            raise type(e)(e.errno, e.strerror, str(store.root)) from None
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race with the next taker)


def _one_encode_per_id(encode: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(encode)
    def run(path: str | Path, video_id: str, *, store: VideoStore, **kwargs: Any) -> dict[str, Any]:
        validate_video_id(video_id)  # before it names a lock file
        with encoding_lock(store, video_id):
            return encode(path, video_id, store=store, **kwargs)
    return run


@_one_encode_per_id
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
    chunk_frames: int | None = None,
    warm_start: bool = True,
) -> dict[str, Any]:
    """Read a clip, fit an INR, compress it and store it under ``video_id``; return the stored metadata.

    Whole videos: when the frames to encode are more than ``chunk_frames`` (default :data:`DEFAULT_CHUNK_FRAMES`;
    0 = one INR whatever the length), they are cut into chunks of about that length, read and fitted one at a
    time (memory bounded by one chunk), each chunk's INR warm-started from the previous one's trained weights
    (``warm_start``); the rate target and ``train.time_budget`` are the whole video's, split over the chunks by
    frames (bytes) and equally (time). One video ID covers all chunks (:func:`load_inr`).

    Size: by default the family's rate sizing at a byte target (``max_bytes``, ``bpp``, or the source file's own
    bytes for these frames, see ``builder.inr.rate.default_target``), planned against ``train.time_budget``;
    ``model`` sizes (``stem_dim``, ``lower_width``, ``mlp_dim``, ...) or ``table1`` choose it explicitly (seed
    Table 1 for what is not given); ``model`` options the rate sizing takes (``num_blocks``, ``activation``)
    apply to both. PSNR / MS-SSIM are measured on the model decoded back from the stored bytes, and bpp from
    their length. ``log`` receives the sizing decision and warnings (also stored: ``meta["sizing"]``).

    One encode per ID at a time (:func:`encoding_lock`): a second one raises :class:`EncodeInProgress` at once.
    """
    validate_video_id(video_id)
    if not overwrite and store.exists(video_id):  # fail before minutes of training, not after
        raise EntryExists(f"video '{video_id}' already exists in {store.root}; pass --force to replace it")
    log = log or (lambda _: None)
    family = get_inr_family(arch)
    if family.shared:
        raise ValueError(f"{arch} is a decoder shared by a collection of videos; this encode fits one video: "
                         f"choose --arch {' or '.join(list_inr_families(shared=False))}")
    opts = {k: v for k, v in (model or {}).items() if v is not None}
    explicit = table1 or family.for_params is None or any(k not in family.rate_options for k in opts)
    if bpp is not None and max_bytes is not None:
        raise ValueError("give one rate target: --bpp or --bytes, not both")
    if explicit and (bpp is not None or max_bytes is not None):
        given = "--table1" if table1 else ", ".join("--" + k.replace("_", "-") for k in opts
                                                   if k not in family.rate_options)
        raise ValueError(f"--bpp / --bytes choose the model size; drop {given} (or the rate target)")
    t0 = time.perf_counter()
    chosen = chunk_frames is not None
    if chunk_frames is None:
        chunk_frames = DEFAULT_CHUNK_FRAMES
    if chunk_frames < 0:
        raise ValueError(f"chunk_frames must be >= 0 (0: one INR for all frames), got {chunk_frames}")
    total = _frames_to_encode(path, start, count, step) if chunk_frames else None
    if total is not None and total > chunk_frames and not chosen and not explicit:
        chunk_frames = _chunk_length_for_rate(path, arch, start, total, step, size, bpp, max_bytes, chunk_frames,
                                              quant, opts, log)
    if total is not None and total > chunk_frames:
        if resume:
            raise ValueError("--resume continues one INR's checkpoint; a chunked encode starts over (or give "
                             "--chunk-frames 0)")
        return _encode_chunked(path, video_id, store=store, arch=arch, start=start, total=total, step=step,
                               size=size, opts=opts, explicit=explicit, table1=table1, bpp=bpp, max_bytes=max_bytes,
                               train=train or TrainConfig(recipe=family.model.recipe), quant=quant,
                               overwrite=overwrite, progress=progress, log=log, chunk_frames=chunk_frames,
                               warm_start=warm_start, t0=t0)
    clip = read_video(path, start=start, count=count, step=step, size=size)
    frames = clip.frames
    t, _, h, w = frames.shape
    train = train or TrainConfig(recipe=family.model.recipe)
    if explicit:
        cfg = inr_config(arch, t, h, w, **opts)
        sizing = Sizing("table1" if table1 else "explicit", params=cfg.stored_params)
    else:
        target = _rate_target(path, clip.info.frames, t, h, w, bpp, max_bytes)
        cfg, sizing = plan_size(arch, frames, quant, train, target, opts, log)
    log(_sizing_line(arch, sizing, train))
    inr = build_inr(cfg)
    ckpt_dir = store.root / ".checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / f"{video_id}.pt"
    fit = _fit(inr, frames, train, quant, ckpt, resume, progress)
    inr.after_fit(frames)  # on the training device (HNeRV runs its encoder over every frame)
    inr.cpu()
    if sizing.target_bytes is not None:
        quant, blob = fit_rate(inr, quant, sizing.target_bytes)
        sizing.pruned = quant.prune
    else:
        blob = encode_inr(inr, quant)
    decoded = decode_inr(blob, device=train.device)
    quality = _quality(decoded.model, frames, len(blob))
    for msg in quality_warnings(quality["psnr"], fit.stopped_by, fit.epochs, train.time_budget,
                                on_gpu=train.device.startswith("cuda")):
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


def _fit(inr: torch.nn.Module, frames: torch.Tensor, train: TrainConfig, quant: QuantConfig, ckpt: Path | None,
         resume: bool, progress: bool, init: bool = True) -> FitResult:
    """``fit_inr``, then (``train.qat > 0``) its last ``qat`` share of epochs and time through the quantiser at a
    tenth of the lr, no warm-up. ``init=False``: the model is warm-started (no data-dependent init)."""
    penalty = None
    if train.rate_weight:  # the rate term: rate_weight x the coder's estimated bits per pixel of these frames
        pixels = frames.shape[0] * frames.shape[2] * frames.shape[3]
        penalty = lambda: train.rate_weight * rate_bits(inr, quant) / pixels  # noqa: E731
    if not train.qat:
        return fit_inr(inr, frames, train, checkpoint=ckpt, resume=resume, progress=progress, init=init,
                       penalty=penalty)
    keep = 1 - train.qat
    main = dataclasses.replace(train, epochs=max(1, round(train.epochs * keep)),
                               time_budget=train.time_budget and train.time_budget * keep)
    fit = fit_inr(inr, frames, main, checkpoint=ckpt, resume=resume, progress=progress, init=init, penalty=penalty)
    tune = dataclasses.replace(train, epochs=max(1, train.epochs - main.epochs), target_psnr=None, warmup=0.0,
                               time_budget=train.time_budget and max(train.time_budget - fit.seconds, 0.01),
                               lr=0.1 * (train.lr or RECIPES[train.recipe].lr))
    with quantization_aware(inr, quant):
        fine = fit_inr(inr, frames, tune, progress=progress, init=False, penalty=penalty)
    return FitResult(fit.epochs + fine.epochs, fit.seconds + fine.seconds, fine.psnr, fit.stopped_by,
                     fit.history + [{**h, "epoch": fit.epochs + h["epoch"], "qat": True} for h in fine.history])


def _rate_target(path: str | Path, source_frames: int, t: int, h: int, w: int, bpp: float | None,
                 max_bytes: int | None) -> RateTarget:
    """``--bytes``, else ``--bpp`` for ``t`` frames of ``h x w``, else the default (the source's own bytes)."""
    return RateTarget.given(t, h, w, bpp, max_bytes) or default_target(path, source_frames, t, h, w)


def _sizing_line(arch: str, s: Sizing, train: TrainConfig, chunks: int = 1) -> str:
    if s.rule != "rate":
        return f"{arch}: {s.params:,} params ({'seed Table 1' if s.rule == 'table1' else 'sizes as given'})"
    line = (f"{arch}: {s.params:,} params for {s.target_bytes:,} bytes ({s.target_bpp:.3g} bpp; {s.origin}"
            + (f", shrunk from {s.shrunk_from_bytes:,} to fit the time budget" if s.shrunk_from_bytes else "") + ")")
    if s.epoch_seconds is None:
        return line
    line += f"; {s.epoch_seconds:.2f} s per epoch here: "
    if train.time_budget is not None:
        return line + f"about {s.planned_epochs} epochs in {train.time_budget:g} s"
    each = s.epoch_seconds * s.planned_epochs
    return line + (f"{s.planned_epochs} epochs take about {_duration(each)}"
                   + (f" per chunk, {_duration(each * chunks)} for the {chunks} chunks" if chunks > 1 else "")
                   + " (--time-budget S caps it)")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def replace_inr(store: VideoStore, video_id: str, model: torch.nn.Module, frames: torch.Tensor, *,
                drop: Iterable[str] = (), meta: dict[str, Any] | None = None,
                if_inr: str | None = None) -> dict[str, Any]:
    """Store a changed INR (e.g. after joint fine-tuning) in place of ``video_id``'s: quantised and coded with the
    entry's own QuantConfig, PSNR / MS-SSIM measured on the decoded bytes, bpp from their length, the H.264 twin
    re-made for the new size. Files named in ``drop`` are removed (what depended on the old weights); the rest are
    kept. One atomic store write, refused (:class:`~builder.store.EntryChanged`, nothing written) if the entry
    changed since this call read it, or if its decoder is no longer ``if_inr`` (the
    :meth:`~builder.store.VideoStore.inr_digest` the caller fine-tuned from). Returns the new metadata (``meta``
    merged in, as flat meta keys)."""
    return replace_inr_entry(store, video_id, model, frames, drop=drop, meta=meta, if_inr=if_inr).to_meta()


def replace_inr_entry(store: VideoStore, video_id: str, model: torch.nn.Module, frames: torch.Tensor, *,
                      drop: Iterable[str] = (), meta: dict[str, Any] | None = None,
                      if_inr: str | None = None,
                      extra: Callable[[torch.nn.Module, str, dict[str, Any]], dict[str, bytes]] | None = None
                      ) -> VideoEntry:
    """:func:`replace_inr`, returning the entry as written (its ``files`` give the new INR's checksum,
    :func:`~builder.entry.inr_checksum`, even if another command replaced it since). ``extra(decoded, checksum,
    measured)`` gets the stored (quantised) decoder, its checksum and its measured quality before anything is
    written, and returns more files (e.g. adapters bound to it) to store in the same atomic write."""
    entry = store.video(video_id)
    if entry.kind != VIDEO:
        raise ValueError(f"'{video_id}' is a {entry.kind}: only a video's own INR can be replaced")
    if model.config != INRConfig.from_dict(entry.inr.config):
        raise ValueError(f"the INR's architecture differs from video '{video_id}''s; encode it as a new video")
    quant = QuantConfig.from_dict(entry.inr.quant)
    chunks = None
    if isinstance(model, ChunkedINR):  # a chunked video: every chunk re-coded, each measured on its frames
        if not entry.chunks or [c.frames for c in entry.chunks] != model.sizes:
            raise ValueError(f"the chunked INR's chunks differ from video '{video_id}''s")
        blobs = {chunk_file(k): encode_inr(m, quant) for k, m in enumerate(model.chunks)}
        chunks = tuple(_remeasured(c, decode_inr(b).model, frames[c.start:c.start + c.frames], len(b))
                       for c, b in zip(entry.chunks, blobs.values()))
        measured = _chunked_quality(chunks, entry.height, entry.width)
        stored = None if extra is None else decode_chunked(list(blobs.values()), [c.start for c in chunks]).model
    else:
        if entry.chunks:
            raise ValueError(f"video '{video_id}' is chunked: replace it with a ChunkedINR of its chunks")
        blob = encode_inr(model, quant)
        blobs = {INR_FILE: blob}
        stored = decode_inr(blob).model
        measured = _quality(stored, frames, len(blob))
    h264, twin = h264_copy(frames, entry.frames.fps, measured["bytes"])
    drop = set(drop) | set(blobs)
    files = {n: store.get(video_id, n) for n in entry.files if n not in drop and n not in (INR_FILE, H264_FILE)}
    if extra is not None:
        checksum = inr_checksum({n: {"sha256": hashlib.sha256(b).hexdigest()} for n, b in blobs.items()})
        files.update(extra(stored, checksum, measured))
    # the training fields describe the original fit and stay; the measured ones are the new bytes'
    quality = dataclasses.replace(entry.quality, **measured)
    new = dataclasses.replace(entry, quality=quality, h264=twin, chunks=chunks or entry.chunks)
    if meta:
        new = VideoEntry.from_meta(video_id, {**new.to_meta(), **meta})
    return store.put_video(new, {**blobs, H264_FILE: h264, **files}, overwrite=True, if_version=entry.version,
                           if_inr=if_inr)


def load_bound_inr(store: VideoStore, video_id: str, device: str | torch.device = "cpu") -> tuple[DecodedINR, str]:
    """:func:`load_inr` and the checksum of what it loaded (:meth:`VideoStore.inr_digest`, what adapters trained
    on it are bound to), of one version of the entry: read again if the decoder was replaced meanwhile."""
    for _ in range(3):
        before = store.inr_digest(video_id)
        decoded = load_inr(store, video_id, device)
        if store.inr_digest(video_id) == before:
            return decoded, before
    raise EntryChanged(f"video '{video_id}''s INR kept changing while it was read; try again")


def load_inr(store: VideoStore, video_id: str, device: str | torch.device = "cpu") -> DecodedINR:
    """The stored decoder of ``video_id`` (checksum-verified): every consumer (decode, eval, adapt, evaluate,
    Triton) reaches a video's decoder through here. A chunked video's is one :class:`ChunkedINR` over its
    chunks, taking global frame indices; a collection member's is a :class:`~builder.inr.member.MemberINR` (the
    collection's shared decoder with the member's keyframes), taking the member's frame indices."""
    holder = store.holder(video_id, INR_FILE)
    if holder != video_id:
        from .collection import load_member

        return load_member(store, video_id, device=device)
    if store.meta(video_id).get("kind") == "collection":
        raise ValueError(f"'{video_id}' is a collection: it has no frames of its own; name one of its members "
                         "(python -m builder info " + video_id + ")")
    chunks = store.meta(video_id).get("chunks")
    if chunks:
        table = ChunkInfo.table(chunks)
        return decode_chunked([store.get(video_id, chunk_file(k)) for k in range(len(table))],
                              [c.start for c in table], device=device)
    return decode_inr(store.get(video_id, INR_FILE), device=device)


def read_h264(store: VideoStore, video_id: str, indices: Sequence[int]) -> torch.Tensor:
    """Frames ``indices`` of the video's stored H.264 copy (the codec baseline), decoded with PyAV: (N, 3, H, W)
    in [0, 1] at the INR's size."""
    entry = store.video(video_id)
    idx = [int(i) for i in indices]
    if not idx or min(idx) < 0 or max(idx) >= entry.frames.count:
        raise ValueError(f"frames {idx} out of range for video '{video_id}' ({entry.frames.count} frames)")
    store.get(video_id, H264_FILE)  # checksum-verified, like every store read, before PyAV opens it by path
    return h264_frames(store.path(video_id, H264_FILE), entry, idx)


def _typed(entry: VideoEntry | Mapping[str, Any]) -> VideoEntry:
    # nvp and serving still hand over the raw meta (store.meta); they move to store.video() when merged
    return entry if isinstance(entry, VideoEntry) else VideoEntry.from_meta(str(entry.get("id", "")), entry)


def h264_frames(path: str | Path, entry: VideoEntry | Mapping[str, Any], indices: Sequence[int]) -> torch.Tensor:
    """Frames ``indices`` of the H.264 copy at ``path`` of ``entry`` (``read_frames``: decodes up to the last one,
    converts only those), cropped to the INR's size: x264 pads odd sizes to even ones."""
    entry = _typed(entry)
    return read_frames(path, [int(i) for i in indices])[..., :entry.height, :entry.width]


def read_source(entry: VideoEntry | Mapping[str, Any], source: str | Path | None = None, first: int = 0,
                count: int | None = None) -> Clip:
    """Re-read the exact frames a stored video was encoded from (same range, step and size); ``first`` /
    ``count`` pick ``count`` of them from global index ``first`` (default: all)."""
    entry = _typed(entry)
    path = Path(source or entry.source.path)
    if not path.exists():
        raise FileNotFoundError(f"source video {path} not found; pass --source PATH to evaluate against a copy")
    f = entry.frames
    return read_video(path, start=f.start + first * f.step, count=f.count - first if count is None else count,
                      step=f.step, size=(entry.width, entry.height))


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
    decoded = load_inr(store, video_id)
    if entry.chunks:  # one chunk of source frames in memory at a time
        model = decoded.model
        rows = tuple(_remeasured(c, model.chunks[k], read_source(entry, source, c.start, c.frames).frames,
                                 entry.files[chunk_file(k)].bytes)
                     for k, c in enumerate(entry.chunks))
        q = _chunked_quality(rows, entry.height, entry.width)
        chunks = [{"chunk": k, "start": c.start, "frames": c.frames, "psnr": c.psnr, "ms_ssim": c.ms_ssim,
                   "bytes": c.bytes} for k, c in enumerate(rows)]
    else:
        clip = read_source(entry, source)
        q, chunks = _quality(decoded.model, clip.frames, decoded.num_bytes), None
    out = {"id": video_id, "psnr": q["psnr"], "ms_ssim": q["ms_ssim"], "bpp": entry.quality.bpp,
           "bytes": q["bytes"], "params": q["params"], "frames": entry.frames.count, "arch": entry.arch}
    return out if chunks is None else {**out, "chunks": chunks}


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


# --- whole videos: chunks (GOPs) of one video ID -------------------------------------------------------------


def _chunk_length_for_rate(path: str | Path, arch: str, start: int, total: int, step: int,
                           size: tuple[int, int] | None, bpp: float | None, max_bytes: int | None, chunk_frames: int,
                           quant: QuantConfig, opts: dict[str, Any], log: Callable[[str], None]) -> int:
    """The default chunk length, or a longer one when the rate target spread over chunks of that length is below
    the family's smallest model per chunk (each chunk pays for a whole decoder, so a low rate needs fewer,
    longer chunks): the shortest length whose share of the target fits, up to the whole video."""
    from .inr.rate import RateTooLow, smallest_bytes

    first = read_video(path, start=start, count=1, step=step, size=size)
    _, _, h, w = first.frames.shape
    target = _rate_target(path, first.info.frames, total, h, w, bpp, max_bytes).bytes
    default = math.ceil(total / chunk_frames)
    for n in range(default, 0, -1):
        length = math.ceil(total / n)
        if target * length / total >= smallest_bytes(arch, length, h, w, quant, **opts):
            if n == default:
                return chunk_frames
            log(f"{target:,} bytes ({target * 8 / (total * h * w):.3g} bpp) cannot hold a {arch} per "
                f"{chunk_frames}-frame chunk: chunks of {length} frames instead (--chunk-frames sets it)")
            return length
    # not even one INR for the whole video fits: say so here (sizing would speak of one chunk), naming a family
    # whose smallest model does fit
    need = smallest_bytes(arch, total, h, w, quant, **opts)
    fits = [a for a in list_inr_families(shared=False) if a != arch and get_inr_family(a).for_params is not None
            and smallest_bytes(a, total, h, w, quant) <= target]
    raise RateTooLow(f"{target:,} bytes ({target * 8 / (total * h * w):.3g} bpp) is below the smallest {arch} even as "
                     f"one INR for all {total} frames of {w}x{h}: about {need:,} bytes "
                     f"({need * 8 / (total * h * w):.3g} bpp). "
                     + (f"--arch {fits[0]} fits that rate; or ask" if fits else "Ask")
                     + " for more (--bytes / --bpp), fewer frames or a smaller --size")


def _frames_to_encode(path: str | Path, start: int, count: int | None, step: int) -> int | None:
    """How many frames ``start, start + step, ...`` (``count`` of them if given) the file has, from the
    container's frame count without decoding (None when it does not store one: then the clip is encoded whole,
    as before chunking)."""
    if count is not None:
        return count
    n = probe(path).frames
    return None if n is None else max(0, math.ceil((n - start) / step))


def _warm_start(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Copy the tensors of ``state`` whose name and shape ``model`` shares (every decoder weight of the same
    architecture; not HNeRV's per-frame embeddings when the chunk lengths differ). Returns how many."""
    own = model.state_dict()
    same = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(same, strict=False)
    return len(same)


def _remeasured(c: ChunkInfo, model: torch.nn.Module, frames: torch.Tensor, num_bytes: int) -> ChunkInfo:
    q = _quality(model, frames, num_bytes)
    return dataclasses.replace(c, bytes=num_bytes, psnr=q["psnr"], ms_ssim=q["ms_ssim"], params=q["params"])


def _chunked_quality(chunks: Sequence[ChunkInfo], height: int, width: int) -> dict[str, Any]:
    """The :class:`Quality` fields of a whole chunked video: PSNR and MS-SSIM are means over frames (as for one
    INR), so the frame-weighted means of the chunks'; bytes and params the sums."""
    t = sum(c.frames for c in chunks)
    num_bytes = sum(c.bytes for c in chunks)
    return {"params": sum(c.params for c in chunks),
            "psnr": round(math.fsum(c.psnr * c.frames for c in chunks) / t, 4),
            "ms_ssim": round(math.fsum(c.ms_ssim * c.frames for c in chunks) / t, 6),
            "bpp": round(num_bytes * 8 / (t * height * width), 6), "bytes": num_bytes}


def _fit_chunk(cfg: INRConfig, frames: torch.Tensor, train: TrainConfig, quant: QuantConfig,
               target_bytes: int | None, prev: Mapping[str, torch.Tensor] | None, ckpt: Path | None,
               progress: bool) -> tuple[bytes, QuantConfig, FitResult, dict[str, torch.Tensor]]:
    """Fit one chunk (from ``prev``'s weights when given), code it at ``target_bytes``; returns the bytes, the
    quantisation used, the fit and the trained state (the next chunk's warm start)."""
    inr = build_inr(cfg)
    if prev is not None:
        _warm_start(inr, prev)
    fit = _fit(inr, frames, train, quant, ckpt, False, progress, init=prev is None)
    state = {k: v.detach().cpu().clone() for k, v in inr.state_dict().items()}
    inr.after_fit(frames)
    inr.cpu()
    if target_bytes is not None:
        quant, blob = fit_rate(inr, quant, target_bytes)
    else:
        blob = encode_inr(inr, quant)
    return blob, quant, fit, state


def _encode_chunked(path: str | Path, video_id: str, *, store: VideoStore, arch: str, start: int, total: int,
                    step: int, size: tuple[int, int] | None, opts: dict[str, Any], explicit: bool, table1: bool,
                    bpp: float | None, max_bytes: int | None, train: TrainConfig, quant: QuantConfig,
                    overwrite: bool, progress: bool, log: Callable[[str], None], chunk_frames: int,
                    warm_start: bool, t0: float) -> dict[str, Any]:
    """``encode_video`` of a video longer than one chunk (see there)."""
    plan = chunk_plan(total, chunk_frames)
    per = dataclasses.replace(train, time_budget=train.time_budget and train.time_budget / len(plan))
    lengths = sorted({n for _, n in plan})
    log(f"{total} frames in {len(plan)} chunks of {'-'.join(map(str, lengths))} frames"
        + (f", {per.time_budget:.1f} s of training each" if per.time_budget else "")
        + (", each warm-started from the previous one" if warm_start else ", each from scratch"))
    ckpt_dir = store.root / ".checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg0 = sizing = None
    prev = None
    rows, blobs, fps, info = [], {}, 0.0, None
    h = w = 0
    for k, (s, n) in enumerate(plan):
        clip = read_video(path, start=start + s * step, count=n, step=step, size=size)
        frames = clip.frames
        if cfg0 is None:
            _, _, h, w = frames.shape
            fps, info = clip.fps / step, clip.info
            if explicit:
                cfg0 = inr_config(arch, n, h, w, **opts)
                sizing = Sizing("table1" if table1 else "explicit", params=cfg0.stored_params)
            else:
                whole = _rate_target(path, clip.info.frames, total, h, w, bpp, max_bytes)
                first = RateTarget(round(whole.bytes * n / total), whole.origin + f"; chunk 0's {n}/{total} frames",
                                   whole.explicit)
                cfg0, sizing = plan_size(arch, frames, quant, per, first, opts, log)
                if sizing.warnings and per.time_budget:  # plan_size spoke of one chunk's share of the budget
                    sizing.warnings.append(f"the time budgets above are one chunk's: the video's {len(plan)} chunks "
                                           f"need {len(plan)} times that (--time-budget is the whole video's)")
                    log("warning: " + sizing.warnings[-1])
            log(_sizing_line(arch, sizing, per, chunks=len(plan)) + " (chunk 0)")
        target = sizing.target_bytes and round(sizing.target_bytes * n / plan[0][1])
        ckpt = ckpt_dir / f"{video_id}-c{k}.pt"
        blob, q, fit, prev_state = _fit_chunk(dataclasses.replace(cfg0, frames=n), frames, per, quant, target,
                                              prev if warm_start else None, ckpt, progress)
        ckpt.unlink(missing_ok=True)
        row = _remeasured(ChunkInfo(start=s, frames=n, bytes=0, psnr=0.0, ms_ssim=0.0, params=0,
                                    target_bytes=target, epochs=fit.epochs, train_seconds=round(fit.seconds, 3),
                                    stopped_by=fit.stopped_by, warm_start=prev is not None and warm_start,
                                    prune=q.prune),
                          decode_inr(blob).model, frames, len(blob))
        log(f"chunk {k + 1}/{len(plan)} (frames {s}-{s + n - 1}): PSNR {row.psnr:.2f} dB, {row.bytes:,} bytes, "
            f"{fit.epochs} epochs in {fit.seconds:.1f} s")
        prev = prev_state
        rows.append(row)
        blobs[chunk_file(k)] = blob
        del clip, frames
    quality = _chunked_quality(rows, h, w)
    sizing.pruned = max(r.prune for r in rows)
    for msg in quality_warnings(quality["psnr"], rows[-1].stopped_by, min(r.epochs for r in rows), per.time_budget,
                                on_gpu=per.device.startswith("cuda")):
        sizing.warnings.append(msg)
        log("warning: " + msg)
    # the codec baseline covers every frame at the chunks' total bytes (this step holds the whole clip)
    h264, twin = h264_copy(read_video(path, start=start, count=total, step=step, size=size).frames, fps,
                           quality["bytes"])
    entry = VideoEntry(
        video_id,
        source=Source(str(Path(path).resolve()), info.codec, info.width, info.height),
        frames=FrameRange(start=start, step=step, count=total, fps=fps),
        width=w, height=h,
        inr=INRInfo(dataclasses.replace(cfg0, frames=total).to_dict(), quant.to_dict(), train.to_dict(),
                    FORMAT_VERSION),
        quality=Quality(**quality, encode_seconds=round(time.perf_counter() - t0, 3),
                        train_seconds=round(sum(r.train_seconds for r in rows), 3),
                        epochs=sum(r.epochs for r in rows), stopped_by=rows[-1].stopped_by),
        h264=twin,
        encoded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        chunks=tuple(rows),
        extra={"sizing": {**sizing.to_dict(), "chunk_frames": chunk_frames, "warm_start": warm_start}},
    )
    stored = store.put_video(entry, {**blobs, H264_FILE: h264}, overwrite=overwrite)
    return {"id": video_id, **stored.to_meta()}


def reencode_chunk(store: VideoStore, video_id: str, chunk: int, *, source: str | Path | None = None,
                   train: TrainConfig | None = None, warm_start: bool = True, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit chunk ``chunk`` of a chunked video again, alone: from the stored decoder of chunk ``chunk - 1`` when
    there is one and ``warm_start`` (HNeRV's encoder, not stored, starts fresh), at the chunk's byte target and
    the stored training settings (``train`` overrides them; the default time budget is the chunk's share of the
    original one). Only that chunk's file changes (one atomic store write); the whole video's quality is
    re-derived from the chunk table. The H.264 twin is kept unless the new total bytes fall below it (then it is
    re-made at the new total). Adapters and pair searches are deleted, with a warning: they were fitted and
    measured on the old chunk's features (the rule of ``adapt --joint``)."""
    log = log or (lambda _: None)
    entry = store.video(video_id)
    if not entry.chunks:
        raise ValueError(f"video '{video_id}' is one INR, not chunked: re-encode it whole (encode --force)")
    if not 0 <= chunk < len(entry.chunks):
        raise ValueError(f"video '{video_id}' has chunks 0..{len(entry.chunks) - 1}, not {chunk}")
    c = entry.chunks[chunk]
    frames = read_source(entry, source, c.start, c.frames).frames
    if train is None:
        train = TrainConfig.from_dict(entry.inr.train)
        train = dataclasses.replace(train, time_budget=train.time_budget and train.time_budget / len(entry.chunks))
    prev = None
    if warm_start and chunk > 0:
        prev = decode_inr(store.get(video_id, chunk_file(chunk - 1))).model.state_dict()
    cfg = dataclasses.replace(INRConfig.from_dict(entry.inr.config), frames=c.frames)
    t0 = time.perf_counter()
    blob, q, fit, _ = _fit_chunk(cfg, frames, train, QuantConfig.from_dict(entry.inr.quant), c.target_bytes, prev,
                                 None, progress)
    row = _remeasured(dataclasses.replace(c, epochs=fit.epochs, train_seconds=round(fit.seconds, 3),
                                          stopped_by=fit.stopped_by, warm_start=prev is not None, prune=q.prune),
                      decode_inr(blob).model, frames, len(blob))
    log(f"chunk {chunk} (frames {c.start}-{c.start + c.frames - 1}): PSNR {c.psnr:.2f} -> {row.psnr:.2f} dB, "
        f"{c.bytes:,} -> {row.bytes:,} bytes, {fit.epochs} epochs in {time.perf_counter() - t0:.1f} s")
    chunks = tuple(row if k == chunk else old for k, old in enumerate(entry.chunks))
    quality = dataclasses.replace(entry.quality, **_chunked_quality(chunks, entry.height, entry.width))
    stale = sorted(n for n in entry.files if (f := parse_file(n)) is not None and f.role in (ADAPTER, PAIRING))
    if stale:
        log(f"warning: chunk {chunk}'s features changed: deleted what was fitted to the old ones ({', '.join(stale)}); "
            "run adapt again for those tasks")
    files = {n: store.get(video_id, n) for n in entry.files if n != chunk_file(chunk) and n not in stale}
    files[chunk_file(chunk)] = blob
    twin = entry.h264
    if twin is not None and twin.bytes > quality.bytes:
        files[H264_FILE], twin = h264_copy(read_source(entry, source).frames, entry.frames.fps, quality.bytes)
    new = dataclasses.replace(entry, quality=quality, chunks=chunks, h264=twin)
    return {"id": video_id, "chunk": chunk,
            **store.put_video(new, files, overwrite=True, if_version=entry.version).to_meta()}
