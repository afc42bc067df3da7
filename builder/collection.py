"""Collections of videos sharing one D-NeRV decoder: encode, grow (``--add``), load a member, delete.

Store layout (``builder.entry``): the **collection** entry holds the shared decoder once (``inr.nvp``); each video
is a **member** entry (its own video ID) holding its coded keyframes (``keyframes.nvp``, ``builder.codec.keyframes``)
and an H.264 twin at its bytes, with its source, frame range and quality. A member's quality is measured on what
decodes back from the stored bytes (the quantised decoder + the decoded keyframes); its ``bytes`` / ``bpp`` count
its keyframe bytes plus the shared decoder's bytes spread over the collection's pixels (its share: its pixels /
all members' pixels). :func:`load_member` gives a member's decoder as a :class:`~builder.inr.member.MemberINR`,
which ``builder.api.load_inr`` returns for a member ID, so ``decode``, ``eval``, ``info``, ``cost`` work on it.

Writes are one atomic store write per entry (the collection first, then each member): a run killed in between
leaves the collection and some members from the new run and the rest from the old one.
"""
from __future__ import annotations

import dataclasses
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from training.collection import add_videos, collection_epoch_seconds, fit_collection
from training.config import TrainConfig

from .codec import FORMAT_VERSION
from .codec.keyframes import DEFAULT_CODEC, DEFAULT_QUALITY, decode_keyframes, encode_keyframes
from .config import QuantConfig
from .entry import (COLLECTION, H264_FILE, INR_FILE, KEYFRAMES, MEMBER, FrameRange, INRInfo, Quality, Source,
                    VideoEntry)
from .inr import DecodedINR, build_inr, decode_inr, encode_inr, get_inr_family, inr_config
from .inr.config import INRConfig
from .inr.dnerv import keyframe_positions
from .inr.rate import RateTarget, Sizing, default_target, plan_size
from .inr.member import MemberINR
from .store import EntryExists, VideoStore, validate_video_id
from .video import read_video

__all__ = ["KEYFRAMES_FILE", "member_ids", "collection_target", "plan_collection_size", "encode_collection", "add_to_collection", "load_member", "delete_entry"]

KEYFRAMES_FILE = KEYFRAMES.file()
ARCH = "dnerv"
# a time-budget shrink is kept only when the smaller decoder's epoch takes at most this share of the larger one's
SHRINK_GAIN = 0.8


def member_ids(collection_id: str, count: int, names: Sequence[str] | None = None, first: int = 0) -> list[str]:
    """The members' video IDs: ``names`` if given (one per video), else ``COLLECTION-<index>``."""
    if names is not None:
        if len(names) != count:
            raise ValueError(f"--names gives {len(names)} IDs for {count} videos")
        ids = list(names)
    else:
        ids = [f"{collection_id}-{first + k}" for k in range(count)]
    for i in ids:
        validate_video_id(i)
    if len(set(ids)) != len(ids) or collection_id in ids:
        raise ValueError(f"member IDs must be distinct and differ from the collection's: {ids}")
    return ids


@dataclasses.dataclass
class _Video:
    """One member's frames and where they came from (the entry fields), plus its coded keyframes."""

    id: str
    frames: torch.Tensor
    source: Source
    range: FrameRange
    keyframes: bytes
    keyframes_meta: dict[str, Any]
    decoded_keys: torch.Tensor


def _read(paths: Sequence[str | Path], start: int, count: int | None, step: int,
          size: tuple[int, int] | None, log: Callable[[str], None]) -> list[tuple[Path, Any]]:
    """Read every clip at one size: ``size``, else the first clip's (others resized to it, with a note)."""
    if not paths:
        raise ValueError("a collection needs at least one video file")
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"video file {p} not found")
        clip = read_video(p, start=start, count=count, step=step, size=size)
        if clip.num_frames < 2:
            raise ValueError(f"{p}: a collection member needs at least 2 frames, got {clip.num_frames}")
        if size is None:  # the first clip, read at its own size, sets everyone's
            size = (int(clip.frames.shape[-1]), int(clip.frames.shape[-2]))
        if (clip.info.width, clip.info.height) != size:
            log(f"{p.name}: {clip.info.width}x{clip.info.height} resized to {size[0]}x{size[1]}")
        out.append((p, clip))
    return out


def _code_keys(frames: torch.Tensor, codec: str, quality: int) -> tuple[bytes, dict[str, Any], torch.Tensor]:
    coded = encode_keyframes(frames[keyframe_positions(frames.shape[0])], codec, quality)
    return coded.blob, {"codec": codec, "quality": quality, "bytes": coded.num_bytes,
                        "count": int(coded.frames.shape[0])}, coded.frames


def _new_videos(clips, ids, start, step, codec, quality) -> list[_Video]:
    out = []
    for vid, (p, clip) in zip(ids, clips):
        blob, meta, keys = _code_keys(clip.frames, codec, quality)
        t = clip.num_frames
        out.append(_Video(vid, clip.frames, Source(str(p.resolve()), clip.info.codec, clip.info.width,
                                                    clip.info.height),
                          FrameRange(start=start, step=step, count=t, fps=clip.fps / step), blob, meta, keys))
    return out


def _check_free(store: VideoStore, ids: Sequence[str], overwrite: bool) -> None:
    if overwrite:
        return
    taken = [i for i in ids if store.exists(i)]
    if taken:  # fail before minutes of training, not after
        raise EntryExists(f"{', '.join(repr(t) for t in taken)} already in {store.root}; pass --force to replace")


def _store_all(store: VideoStore, collection_id: str, model: torch.nn.Module, quant: QuantConfig,
               train: TrainConfig, videos: Sequence[_Video], indices: Sequence[int], fit, t0: float,
               overwrite: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Code the decoder, measure every member on the decoded bytes, write the collection and its members."""
    from .api import _quality, h264_copy

    model.cpu().eval()
    blob = encode_inr(model, quant)
    decoder = decode_inr(blob).model
    pixels = [v.frames.shape[0] * v.frames.shape[2] * v.frames.shape[3] for v in videos]
    total_pixels = sum(pixels)
    rows = []
    for v, px in zip(videos, pixels):
        share = len(blob) * px / total_pixels
        kf = v.keyframes_meta["bytes"]
        q = _quality(MemberINR(decoder, v.decoded_keys, v.frames.shape[0]), v.frames, kf + round(share))
        # bpp from the unrounded share of the decoder: the members' bpp add up to the collection's exactly
        rows.append({**q, "bpp": round((kf + share) * 8 / px, 6), "share": share})
    t_all = sum(v.frames.shape[0] for v in videos)
    h, w = videos[0].frames.shape[-2:]
    key_bytes = sum(v.keyframes_meta["bytes"] for v in videos)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    coll = VideoEntry(
        collection_id, kind=COLLECTION, width=int(w), height=int(h),
        inr=INRInfo(model.config.to_dict(), quant.to_dict(), train.to_dict(), FORMAT_VERSION),
        quality=Quality(params=decoder.num_params(),
                        psnr=round(math.fsum(r["psnr"] * v.frames.shape[0] for r, v in zip(rows, videos)) / t_all, 4),
                        ms_ssim=round(math.fsum(r["ms_ssim"] * v.frames.shape[0]
                                                for r, v in zip(rows, videos)) / t_all, 6),
                        bpp=round((len(blob) + key_bytes) * 8 / total_pixels, 6), bytes=len(blob) + key_bytes,
                        encode_seconds=round(time.perf_counter() - t0, 3), train_seconds=round(fit.seconds, 3),
                        epochs=fit.epochs, stopped_by=fit.stopped_by, train_psnr=round(fit.psnr, 4)),
        encoded_at=now,
        extra={"decoder_bytes": len(blob), "keyframe_bytes": key_bytes, "frames_total": t_all},
    )
    store.put_video(coll, {INR_FILE: blob}, overwrite=True)
    out = []
    for v, r, index in zip(videos, rows, indices):
        h264, twin = h264_copy(v.frames, v.range.fps, r["bytes"])
        entry = VideoEntry(
            v.id, kind=MEMBER, collection=collection_id, index=index, source=v.source, frames=v.range,
            width=int(w), height=int(h),
            quality=Quality(params=decoder.num_params(), psnr=r["psnr"], ms_ssim=r["ms_ssim"], bpp=r["bpp"],
                            bytes=r["bytes"], epochs=fit.epochs, stopped_by=fit.stopped_by),
            h264=twin, encoded_at=now,
            extra={"keyframes": v.keyframes_meta, "decoder_share_bytes": round(r["share"], 3)},
        )
        store.put_video(entry, {KEYFRAMES_FILE: v.keyframes, H264_FILE: h264}, overwrite=True)
        log(f"{v.id}: PSNR {r['psnr']:.2f} dB, MS-SSIM {r['ms_ssim']:.4f}, {r['bpp']:.4f} bpp "
            f"({v.keyframes_meta['bytes']:,} keyframe bytes + {r['share']:,.0f} of the decoder's); "
            f"H.264 at its bytes {twin.psnr:.2f} dB")
        out.append({"id": v.id, "index": index, "frames": v.range.count, "source": v.source.path,
                    "psnr": r["psnr"], "ms_ssim": r["ms_ssim"], "bpp": r["bpp"], "bytes": r["bytes"],
                    "keyframe_bytes": v.keyframes_meta["bytes"], "decoder_share_bytes": round(r["share"], 3),
                    "h264": dataclasses.asdict(twin)})
    return {"id": collection_id, "kind": COLLECTION, "arch": ARCH, **coll.to_meta(), "members": out}


def collection_target(clips: Sequence[tuple[Path, Any]], height: int, width: int, bpp: float | None = None,
                      max_bytes: int | None = None) -> RateTarget:
    """The collection's byte target (keyframes and decoder together): ``max_bytes``, else ``bpp`` over all its
    frames, else the sum of each source file's own bytes for its frames (``default_target``: each kept within
    0.1-0.5 bpp)."""
    given = RateTarget.given(sum(c.num_frames for _, c in clips), height, width, bpp, max_bytes)
    if given is not None:
        return given
    own = sum(default_target(p, c.info.frames, c.num_frames, height, width).bytes for p, c in clips)
    return RateTarget(own, "default: the source files' bytes for these frames, each within 0.1-0.5 bpp", False)


def plan_collection_size(videos: Sequence[torch.Tensor], train: TrainConfig, options: dict[str, Any], *,
                         target: RateTarget, key_bytes: int = 0, quant: QuantConfig = QuantConfig(),
                         log: Callable[[str], None] | None = None) -> tuple[INRConfig, Sizing]:
    """The D-NeRV config for ``videos`` (each ``(N, 3, H, W)``, one size) and its sizing, one epoch timed on
    ``train.device`` and said through ``log`` before any training. Rate sizing (``builder.inr.rate.plan_size``,
    as ``encode`` does): the largest D-NeRV whose coded bytes fit ``target`` less the ``key_bytes`` the coded
    keyframes take, shrunk (a default target) until ``train.time_budget`` leaves the family's ``min_epochs``.
    Sizes in ``options`` (``size``, ``stem_dim``, ...) choose it instead. A budget that does not cover one epoch
    is refused before training."""
    from .api import _sizing_line

    log = log or (lambda _: None)
    family = get_inr_family(ARCH)
    total = sum(int(v.shape[0]) for v in videos)
    h, w = (int(x) for x in videos[0].shape[-2:])
    budget, need = train.time_budget, family.model.min_epochs

    def epoch_time(config: INRConfig, quick: bool = False) -> float:
        return collection_epoch_seconds(build_inr(config), videos, train, min_seconds=0.3 if quick else 1.0)

    if any(k not in family.rate_options for k in options):
        cfg = inr_config(ARCH, total, h, w, **options)
        sec = epoch_time(cfg, quick=budget is None)
        epochs = train.epochs if budget is None else min(train.epochs, int(budget / sec))
        sizing = Sizing("explicit", params=cfg.stored_params, epoch_seconds=round(sec, 4), planned_epochs=epochs,
                        min_epochs=need)
        if budget is not None and epochs < 0.8 * need:
            sizing.warnings.append(f"{budget:g} s of training gives about {epochs} epochs at {sec:.2f} s each; "
                                   f"{ARCH} needs about {need} for a usable result. Give --time-budget "
                                   f"{math.ceil(need * sec)} or more, or a smaller model")
            log("warning: " + sizing.warnings[-1])
    else:
        if target.explicit and target.bytes <= key_bytes:
            raise ValueError(f"the coded keyframes alone take {key_bytes:,} bytes, more than the target "
                             f"({target.origin}): raise it, or lower --keyframe-quality")
        decoder = RateTarget(max(target.bytes - key_bytes, 1),
                             f"{target.origin}; {target.bytes:,} bytes less {key_bytes:,} of keyframes", target.explicit)
        # D-NeRV's warping and full-resolution layers cost about the same at any width (on 2 CPU cores, 22 k and
        # 1.2 M params both took about 200 s an epoch of 370 frames at 176x144): shrink only for a real speed-up
        cfg, sizing = plan_size(ARCH, (total, h, w), quant, train, decoder, options, log, epoch_time=epoch_time,
                                shrink_gain=SHRINK_GAIN)
    if budget is not None and sizing.planned_epochs is not None and sizing.planned_epochs < 1:
        raise ValueError(f"one epoch of this {ARCH} ({sizing.params:,} params) over {total} frames of {w}x{h} takes "
                         f"about {sizing.epoch_seconds:.0f} s on {train.device}, more than the {budget:g} s budget; "
                         f"about {need} epochs make a usable result. Give --time-budget "
                         f"{math.ceil(need * sizing.epoch_seconds)} or more, fewer --frames (or a larger --step), a "
                         "smaller --size" + ("" if train.device.startswith("cuda") else " or --device cuda"))
    log(_sizing_line(ARCH, sizing, train))
    return cfg, sizing


def _join_torchrun(train: TrainConfig) -> tuple[TrainConfig, int, bool]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group (gloo on CPU, nccl on CUDA, one GPU per
    local rank) unless the caller already did. Returns the train config for this rank, its rank, and whether this
    call started the group (then :func:`encode_collection` ends it)."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return train, 0, False
    started = False
    if train.device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        train = dataclasses.replace(train, device=f"cuda:{local}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if train.device.startswith("cuda") else "gloo")
        started = True
    return train, dist.get_rank(), started


def encode_collection(
    paths: Sequence[str | Path],
    collection_id: str,
    *,
    store: VideoStore,
    names: Sequence[str] | None = None,
    start: int = 0,
    count: int | None = None,
    step: int = 1,
    size: tuple[int, int] | None = None,
    model: dict[str, Any] | None = None,
    bpp: float | None = None,
    max_bytes: int | None = None,
    train: TrainConfig | None = None,
    quant: QuantConfig = QuantConfig(),
    keyframe_codec: str = DEFAULT_CODEC,
    keyframe_quality: int = DEFAULT_QUALITY,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit one shared D-NeRV to the clips of ``paths`` (resized to ``size``, else to the first clip's size) and
    store it as collection ``collection_id`` with one member per clip (IDs: :func:`member_ids`). The decoder is
    trained conditioned on the keyframes as the keyframe codec decodes them. Its size: :func:`plan_collection_size`
    (rate sizing at ``max_bytes`` / ``bpp`` / the sources' own bytes, keyframes included, unless ``model`` gives
    sizes). Returns the collection's meta with a
    ``members`` list (each member's PSNR, MS-SSIM, bpp, bytes, H.264 twin)."""
    log = log or (lambda _: None)
    validate_video_id(collection_id)
    ids = member_ids(collection_id, len(paths), names)
    _check_free(store, [collection_id, *ids], overwrite)
    if overwrite and store.exists(collection_id):
        old = store.video(collection_id)
        stale = [m.id for m in store.members(collection_id)] if old.kind == COLLECTION else []
        if set(stale) - set(ids):
            raise ValueError(f"collection '{collection_id}' has members {', '.join(sorted(set(stale) - set(ids)))} "
                             "this encode would orphan; delete them first (or use --add to grow it)")
    t0 = time.perf_counter()
    clips = _read(paths, start, count, step, size, log)
    h, w = clips[0][1].frames.shape[-2:]
    total = sum(c.num_frames for _, c in clips)
    options = {k: v for k, v in (model or {}).items() if v is not None}
    target = collection_target(clips, int(h), int(w), bpp, max_bytes)
    train, rank, started = _join_torchrun(train or TrainConfig(recipe=get_inr_family(ARCH).model.recipe))
    videos = _new_videos(clips, ids, start, step, keyframe_codec, keyframe_quality)
    key_bytes = sum(v.keyframes_meta["bytes"] for v in videos)
    log(f"{len(clips)} videos, {total} frames of {w}x{h}; keyframes {keyframe_codec} quality {keyframe_quality}: "
        f"{key_bytes:,} bytes")
    cfg, sizing = plan_collection_size([v.frames for v in videos], train, options, target=target,
                                       key_bytes=key_bytes, quant=quant, log=log if rank == 0 else None)
    dnerv = build_inr(cfg)
    ckpt_dir = store.root / ".checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / f"{collection_id}.pt"
    try:
        fit = fit_collection(dnerv, [v.frames for v in videos], train, keyframes=[v.decoded_keys for v in videos],
                             checkpoint=ckpt, resume=resume, progress=progress)
        if rank != 0:  # data-parallel: the ranks hold identical weights; rank 0 stores them
            return {"id": collection_id, "rank": rank, "epochs": fit.epochs, "psnr": fit.psnr}
        out = _store_all(store, collection_id, dnerv, quant, train, videos, range(len(videos)), fit, t0, overwrite,
                         log)
        ckpt.unlink(missing_ok=True)
        return {**out, "sizing": dataclasses.asdict(sizing)}
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def add_to_collection(
    paths: Sequence[str | Path],
    collection_id: str,
    *,
    store: VideoStore,
    names: Sequence[str] | None = None,
    start: int = 0,
    count: int | None = None,
    step: int = 1,
    train: TrainConfig | None = None,
    keyframe_codec: str | None = None,
    keyframe_quality: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Grow collection ``collection_id`` by the clips of ``paths`` (resized to its size): fine-tune the shared
    decoder on the old and new videos together (``training.collection.add_videos``; default lr a fifth of the
    recipe's), re-store the decoder and every member (old members keep their keyframes; their quality, bpp and
    H.264 twins are re-measured). Returns the collection's meta with ``members`` and ``old_psnr_before`` /
    ``old_psnr_after`` (stored PSNR of each old member, before and after)."""
    from training.recipes import RECIPES

    from .api import read_source

    import os

    log = log or (lambda _: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--add runs in one process: start it without torchrun")
    coll = store.video(collection_id)
    if coll.kind != COLLECTION:
        raise ValueError(f"'{collection_id}' is a {coll.kind}, not a collection: --add grows a collection")
    members = store.members(collection_id)
    if not members:
        raise ValueError(f"collection '{collection_id}' has no members left to grow from")
    first = max(m.index for m in members) + 1
    ids = member_ids(collection_id, len(paths), names, first=first)
    clash = {m.id for m in members} & set(ids)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} already belong to collection '{collection_id}'")
    _check_free(store, ids, overwrite)
    t0 = time.perf_counter()
    quant = QuantConfig.from_dict(coll.inr.quant)
    dnerv = decode_inr(store.get(collection_id, INR_FILE)).model
    full = build_inr(INRConfig.from_dict(coll.inr.config))  # training-ready (decode_inr builds decoder-only)
    full.load_state_dict(dnerv.state_dict(), strict=False)
    stored_train = TrainConfig.from_dict(coll.inr.train)
    if train is None:
        train = dataclasses.replace(stored_train, warmup=0.0)
    if train.lr is None:
        train = dataclasses.replace(train, lr=0.2 * RECIPES[train.recipe].lr)
    old = []
    for m in members:
        kf = store.get(m.id, KEYFRAMES_FILE)
        try:
            frames = read_source(m).frames
        except FileNotFoundError:
            raise FileNotFoundError(f"member '{m.id}''s source {m.source.path} is gone: --add fine-tunes on the old "
                                    "videos too and re-reads them from their sources") from None
        old.append(_Video(m.id, frames, m.source, m.frames, kf, dict(m.extra.get("keyframes", {})),
                          decode_keyframes(kf)))
    codec = keyframe_codec or old[0].keyframes_meta.get("codec", DEFAULT_CODEC)
    quality = keyframe_quality if keyframe_quality is not None else old[0].keyframes_meta.get("quality",
                                                                                                DEFAULT_QUALITY)
    clips = _read(paths, start, count, step, (coll.width, coll.height), log)
    new = _new_videos(clips, ids, start, step, codec, quality)
    before = {m.id: m.quality.psnr for m in members}
    res = add_videos(full, [v.frames for v in old], [v.frames for v in new], train,
                     old_keyframes=[v.decoded_keys for v in old], new_keyframes=[v.decoded_keys for v in new],
                     progress=progress)
    out = _store_all(store, collection_id, full, quant, train, [*old, *new],
                     [*(m.index for m in members), *range(first, first + len(new))], res.fit, t0, True, log)
    after = {r["id"]: r["psnr"] for r in out["members"]}
    out["old_psnr_before"] = before
    out["old_psnr_after"] = {k: after[k] for k in before}
    out["added"] = ids
    return out


def load_member(store: VideoStore, member_id: str, device: str | torch.device = "cpu") -> DecodedINR:
    """A member's decoder: the collection's D-NeRV (checksum-verified) with the member's decoded keyframes, as
    a :class:`MemberINR` over its frames ``0 .. N-1``. ``num_bytes`` is the member's bytes (keyframes + its share
    of the decoder)."""
    entry = store.video(member_id)
    if entry.kind != MEMBER:
        raise ValueError(f"'{member_id}' is a {entry.kind}, not a collection member")
    coll = store.decoder(member_id)
    if coll.arch != ARCH:
        raise ValueError(f"video '{member_id}' is a member of collection '{coll.id}', whose {coll.arch} decoder is "
                         f"not a keyframe-conditioned one ({ARCH}): it cannot decode its members")
    decoded = decode_inr(store.get(coll.id, INR_FILE), device=device)
    keys = decode_keyframes(store.get(member_id, KEYFRAMES_FILE)).to(device)
    model = MemberINR(decoded.model, keys, entry.frames.count).to(device).eval()
    return DecodedINR(model, model.config, decoded.quant, decoded.format_version, entry.quality.bytes)


def delete_entry(store: VideoStore, video_id: str) -> list[str]:
    """Delete ``video_id``; returns the IDs removed. A collection with members is refused (they decode with
    it); deleting a collection's last member removes the collection (its decoder) too."""
    from .store import CorruptEntry

    try:
        entry = store.video(video_id)
    except CorruptEntry:
        entry = None  # a broken entry can always be deleted
    if entry is not None and entry.kind == COLLECTION:
        members = [m.id for m in store.members(video_id)]
        if members:
            raise ValueError(f"collection '{video_id}' holds the decoder of {', '.join(members)}; delete them first")
    store.remove(video_id)
    removed = [video_id]
    if entry is not None and entry.kind == MEMBER and store.exists(entry.collection):
        if not store.members(entry.collection):
            store.remove(entry.collection)
            removed.append(entry.collection)
    return removed
