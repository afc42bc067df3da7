"""What a store entry holds: the file-role table and the typed, versioned entry (``VideoStore.video(id)``).

:class:`~builder.store.VideoStore` stores bytes and a free ``meta`` dict; this module says what they mean.

**File roles.** Every file name an entry may hold is built by, and parses back into, one :class:`FileRole`::

    INR        inr.nvp                           the decoder: INR bitstream (weights, config; HNeRV's embeddings)
    CHUNK      inr-c{chunk}.nvp                  a chunked video's decoder of chunk ``chunk`` (one INR per GOP; the
                                                 entry's ``chunks`` table says which frames each covers)
    H264       h264.mp4                          the codec baseline: the same frames as H.264 in <= the INR's bytes
    ADAPTER    adapter-{task}-e{exit_block}.nvp  a task's adapter at one exit block
    PAIRING    pairing-{task}.json               a task's pair search: ranking, measurements, the chosen pair
    KEYFRAMES  keyframes.nvp                     a collection member's own coded part, read with the shared decoder

``ADAPTER.file(task="effnet_lite0", exit_block=3)`` is ``"adapter-effnet_lite0-e3.nvp"``, and
``parse_file("adapter-effnet_lite0-e3.nvp")`` gives back the role and ``{"task": "effnet_lite0", "exit_block": 3}``;
:meth:`VideoEntry.adapters` and :meth:`VideoEntry.tasks` enumerate what an entry stores this way.

**Kinds.** An entry is one of::

    video       a clip with its own decoder: INR, H.264 twin, adapters, pairings
    collection  a decoder shared by several clips (D-NeRV): the INR once; no frames of its own
    member      one clip of a collection (names it and its index in it): its own keyframes, H.264 twin, adapters,
                pairings; its decoder is the collection's (``VideoStore.holder`` / ``VideoStore.decoder``)

**Chunked videos.** A video longer than one chunk holds ``inr-c0.nvp`` .. ``inr-c{K-1}.nvp`` instead of ``inr.nvp``
and a ``chunks`` table (:class:`ChunkInfo`: first frame, frame count, bytes, PSNR, ...); ``builder.api.load_inr``
turns them into one decoder over the global frame indices (``builder.inr.chunked.ChunkedINR``). An entry without
``chunks`` is exactly what it was before chunking existed.

**Versions.** ``entry.json``'s ``meta`` is the flat dict :meth:`VideoEntry.to_meta` writes. Version 1 (before this
module: no ``entry_version`` key) is the same layout without ``entry_version`` and ``kind``; it loads as a video.
``arch`` is written as a copy of ``inr["arch"]`` for readers of the raw meta (``store.meta``); when read, it is
only checked against the INR config, which is where the family lives.

**Binding.** An adapter (and a pairing) is only right for the decoder it was trained on. :func:`inr_checksum` names
that decoder: the SHA-256 of ``inr.nvp`` as the store records it (a chunked video's, or a member's decoder plus
keyframes: one SHA-256 over their checksums). ``adapt`` writes it into every adapter it stores (key
:data:`INR_BINDING`), and every reader (serving, ``evaluate``) compares it with the decoder it runs through
:func:`check_binding`, which refuses a mismatch with :class:`StaleAdapter`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral
from typing import Any, ClassVar, NamedTuple

__all__ = [
    "ADAPTER", "CHUNK", "COLLECTION", "ENTRY_VERSION", "H264", "H264_FILE", "INR", "INR_FILE", "KEYFRAMES", "KINDS", "MEMBER",
    "INR_BINDING", "PAIRING", "ROLES", "VIDEO", "EntryError", "StaleAdapter", "check_binding", "inr_checksum", "FileRecord", "FileRole", "FrameRange", "H264Twin", "INRInfo",
    "Quality", "Source", "StoredFile", "VideoEntry", "ChunkInfo", "chunk_file", "adapter_file", "entry_kind",
    "pairing_file", "parse_file",
    "register_role",
]

ENTRY_VERSION = 2
VIDEO, COLLECTION, MEMBER = "video", "collection", "member"
KINDS = (VIDEO, COLLECTION, MEMBER)


class EntryError(ValueError):
    """A meta dict that does not describe an entry (missing or inconsistent fields, unknown kind or version)."""


# --- file roles ------------------------------------------------------------------------------------------------

# What each key of a role's template may hold, so that a name parses back into exactly the keys it was built from.
_KEY_PATTERNS = {"task": r"[A-Za-z0-9][A-Za-z0-9_]*", "exit_block": r"0|[1-9][0-9]*", "chunk": r"0|[1-9][0-9]*"}
_KEY_TYPES = {"task": str, "exit_block": int, "chunk": int}


@dataclass(frozen=True)
class FileRole:
    """One kind of file in an entry: its name template, the entry kinds that may hold it, what it is."""

    name: str
    template: str
    kinds: frozenset[str]
    doc: str

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for _, k, _, _ in string.Formatter().parse(self.template) if k)

    def file(self, **keys: Any) -> str:
        """The file name for ``keys`` (exactly the template's)."""
        if set(keys) != set(self.keys):
            raise TypeError(f"file role '{self.name}' takes keys {list(self.keys)}, got {sorted(keys)}")
        for k, v in keys.items():
            if isinstance(v, Integral) and not isinstance(v, bool):
                v = keys[k] = int(v)  # numpy / torch integers name the same file
            if not isinstance(v, _KEY_TYPES[k]) or not re.fullmatch(_KEY_PATTERNS[k], str(v)):
                raise ValueError(f"invalid {k} {v!r} for a '{self.name}' file name")
        return self.template.format(**keys)

    def parse(self, name: str) -> dict[str, Any] | None:
        """The keys ``name`` was built from, or None if it is not this role's."""
        m = self._regex.fullmatch(name)
        return None if m is None else {k: _KEY_TYPES[k](v) for k, v in m.groupdict().items()}

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        parts = [re.escape(lit) + (f"(?P<{k}>{_KEY_PATTERNS[k]})" if k else "")
                 for lit, k, _, _ in string.Formatter().parse(self.template)]
        return re.compile("".join(parts))


class StoredFile(NamedTuple):
    """A file name parsed into its role and keys."""

    name: str
    role: FileRole
    keys: dict[str, Any]


ROLES: dict[str, FileRole] = {}


def register_role(role: FileRole) -> FileRole:
    """Add ``role`` to :data:`ROLES`; a second role of the same name, or one whose keys are unknown, is refused."""
    if role.name in ROLES:
        raise ValueError(f"file role '{role.name}' is already registered")
    unknown = set(role.keys) - set(_KEY_PATTERNS)
    if unknown or not role.kinds <= set(KINDS):
        raise ValueError(f"file role '{role.name}': unknown keys {sorted(unknown)} or kinds {sorted(role.kinds)}")
    ROLES[role.name] = role
    return role


INR = register_role(FileRole("inr", "inr.nvp", frozenset({VIDEO, COLLECTION}),
                             "the decoder: INR bitstream (weights, config; HNeRV's embeddings)"))
CHUNK = register_role(FileRole("chunk", "inr-c{chunk}.nvp", frozenset({VIDEO}),
                               "a chunked video's decoder of one chunk (GOP): an INR bitstream over its frames"))
H264 = register_role(FileRole("h264", "h264.mp4", frozenset({VIDEO, MEMBER}),
                              "the codec baseline: the same frames as H.264 in at most the INR's bytes"))
# a collection's adapters and pairing answer for every member without its own (adapt COLLECTION)
ADAPTER = register_role(FileRole("adapter", "adapter-{task}-e{exit_block}.nvp", frozenset({VIDEO, MEMBER, COLLECTION}),
                                 "a task's adapter at one exit block of the decoder"))
PAIRING = register_role(FileRole("pairing", "pairing-{task}.json", frozenset({VIDEO, MEMBER, COLLECTION}),
                                 "a task's pair search: ranking, measurements, Pareto front, the chosen pair"))
KEYFRAMES = register_role(FileRole("keyframes", "keyframes.nvp", frozenset({MEMBER}),
                                   "a collection member's own coded part (D-NeRV: its keyframes), read with the "
                                   "collection's decoder"))

INR_FILE = INR.file()
H264_FILE = H264.file()


def adapter_file(task: str, exit_block: int) -> str:
    return ADAPTER.file(task=task, exit_block=exit_block)


def pairing_file(task: str) -> str:
    return PAIRING.file(task=task)


def chunk_file(chunk: int) -> str:
    return CHUNK.file(chunk=chunk)


def parse_file(name: str) -> StoredFile | None:
    """The role and keys of file ``name``, or None for a name no role builds."""
    for role in ROLES.values():
        keys = role.parse(name)
        if keys is not None:
            return StoredFile(name, role, keys)
    return None


# --- binding: adapters to the decoder they were trained on ---------------------------------------------------

INR_BINDING = "inr_sha256"  # the key an adapter's (and a pairing's) metadata records its decoder's checksum under


class StaleAdapter(ValueError):
    """An adapter that was not trained on the decoder it would run with (or that does not say which it was)."""


def _sha(record: Any) -> str | None:
    return record.sha256 if isinstance(record, FileRecord) else (record or {}).get("sha256")


def inr_checksum(files: Mapping[str, Any], decoder_files: Mapping[str, Any] | None = None) -> str | None:
    """The checksum adapters are bound to: of the decoder files (INR, chunks, keyframes) among ``files`` (an
    entry's name -> :class:`FileRecord` or ``entry.json`` record) and, for a member, its collection's
    ``decoder_files``. One ``inr.nvp``: its own SHA-256; several files: one SHA-256 over their names and checksums.
    None when there is no decoder file."""
    roles = (INR, CHUNK, KEYFRAMES)
    parts = sorted((n, str(_sha(r))) for fs in (files, decoder_files or {}) for n, r in fs.items()
                   if (f := parse_file(n)) is not None and f.role in roles)
    if not parts:
        return None
    if len(parts) == 1 and parts[0][0] == INR_FILE:
        return parts[0][1]
    return hashlib.sha256("\n".join(f"{n}:{h}" for n, h in parts).encode()).hexdigest()


def check_binding(bound: str | None, current: str | None, video_id: str, task: str) -> None:
    """Refuse (:class:`StaleAdapter`) a ``task`` adapter bound to ``bound`` run with the decoder ``current``."""
    if bound is not None and bound == current:
        return
    why = ("was stored before adapters recorded their INR" if bound is None else
           f"was trained on another INR ({bound[:12]}, the stored one is {str(current)[:12]}: re-encoded or "
           "replaced since)")
    raise StaleAdapter(f"video '{video_id}''s {task} adapter {why}; run 'python -m builder adapt {video_id} "
                       f"--task {task}' again")


# --- the entry -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Source:
    """The file the frames were read from, as it was when encoding."""

    path: str
    codec: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class FrameRange:
    """Which frames of the source: ``count`` frames from ``start`` every ``step``-th, played at ``fps``."""

    start: int
    step: int
    count: int
    fps: float


@dataclass(frozen=True)
class INRInfo:
    """The decoder: its family's config (``INRConfig.to_dict()``), quantisation, training settings, and the
    version of the bitstream format it was coded with."""

    config: dict[str, Any]
    quant: dict[str, Any]
    train: dict[str, Any]
    format_version: int | None = None

    @property
    def family(self) -> str:
        return self.config["arch"]


@dataclass(frozen=True)
class Quality:
    """Measured on the decoder rebuilt from the stored bytes; the training fields describe how it was fitted."""

    params: int
    psnr: float
    ms_ssim: float
    bpp: float
    bytes: int
    encode_seconds: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    stopped_by: str | None = None
    train_psnr: float | None = None


@dataclass(frozen=True)
class H264Twin:
    """The H.264 copy (``h264.mp4``): CRF chosen so it fits in the INR's bytes, and its quality."""

    crf: int
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk (GOP) of a chunked video: frames ``start .. start + frames - 1`` (global indices, i.e. positions
    in the entry's frame range) decoded by ``inr-c{k}.nvp``; measured on its stored bytes like :class:`Quality`.
    ``warm_start``: fitted from the previous chunk's trained weights (False: from scratch)."""

    start: int
    frames: int
    bytes: int
    psnr: float
    ms_ssim: float
    params: int
    target_bytes: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    stopped_by: str | None = None
    warm_start: bool = False
    prune: float = 0.0

    @classmethod
    def table(cls, rows: Any) -> tuple[ChunkInfo, ...]:
        """A ``chunks`` meta list read back; they must tile ``0 .. total - 1`` in order."""
        try:
            chunks = tuple(r if isinstance(r, ChunkInfo) else cls(**r) for r in rows)
        except TypeError as e:
            raise EntryError(f"malformed chunk table: {e}") from None
        at = 0
        for c in chunks:
            if c.start != at or c.frames < 1:
                raise EntryError(f"chunk table does not tile the frames: a chunk starts at {c.start}, expected {at}")
            at += c.frames
        if not chunks:
            raise EntryError("an empty chunk table")
        return chunks


# flat meta keys of each group (version 1 and 2 alike); "arch" is derived from inr["arch"]
_SOURCE_KEYS = {"source": "path", "source_codec": "codec", "source_width": "width", "source_height": "height"}
_RANGE_KEYS = {"fps": "fps", "start": "start", "step": "step", "frames": "count"}
_QUALITY_KEYS = tuple(f.name for f in dataclasses.fields(Quality))
_REQUIRED_QUALITY = {f.name for f in dataclasses.fields(Quality) if f.default is dataclasses.MISSING}
_OWN_KEYS = {"entry_version", "kind", "collection", "index", "width", "height", "arch", "h264", "format_version",
             "encoded_at", "inr", "quant", "train", "chunks", *_SOURCE_KEYS, *_RANGE_KEYS, *_QUALITY_KEYS}


def entry_kind(meta: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
    """``(kind, collection, index)`` of a meta dict: the fields the store resolves a decoder with. Version 1
    entries, and loose ones, are videos."""
    kind = meta.get("kind", VIDEO)
    if kind not in KINDS:
        raise EntryError(f"unknown entry kind {kind!r} (expected one of {', '.join(KINDS)})")
    collection, index = meta.get("collection"), meta.get("index")
    if kind == MEMBER:
        if not isinstance(collection, str) or not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise EntryError(f"a member names its collection and its index in it, got {collection!r} / {index!r}")
    elif collection is not None or index is not None:
        raise EntryError(f"a {kind} belongs to no collection, got collection {collection!r} / index {index!r}")
    return kind, collection, index


@dataclass(frozen=True)
class VideoEntry:
    """One store entry, typed: what ``store.video(id)`` returns and ``store.put_video`` writes.

    Which groups an entry has depends on its kind: a video has ``source``, ``frames``, the frame size and ``inr``;
    a collection has ``inr`` (the shared decoder) and no frames; a member has ``source``, ``frames`` and the frame
    size, names its ``collection`` and ``index``, and has no ``inr`` (it is the collection's). ``extra`` keeps meta
    keys this schema does not know (e.g. ``adapt --joint``'s ``"joint"``) as they were written.
    """

    VERSION: ClassVar[int] = ENTRY_VERSION

    id: str
    kind: str = VIDEO
    source: Source | None = None
    frames: FrameRange | None = None
    width: int | None = None
    height: int | None = None
    inr: INRInfo | None = None
    quality: Quality | None = None
    h264: H264Twin | None = None
    collection: str | None = None
    index: int | None = None
    encoded_at: str | None = None
    chunks: tuple[ChunkInfo, ...] | None = None  # a chunked video's chunk table (None: one INR, ``inr.nvp``)
    extra: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, FileRecord] = field(default_factory=dict)  # set by the store: name -> checksum, size
    created: str | None = None
    updated: str | None = None
    # set by the store: SHA-256 of entry.json as read (changes with every write); a fact of the read, not compared
    version: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        entry_kind({"kind": self.kind, "collection": self.collection, "index": self.index})
        has_frames = self.source is not None and self.frames is not None and self.width and self.height
        if self.kind in (VIDEO, MEMBER) and not has_frames:
            raise EntryError(f"a {self.kind} entry needs its source, frame range and frame size")
        if self.kind == VIDEO and self.quality is None:
            raise EntryError("a video entry needs its quality (psnr, ms_ssim, bpp, bytes, params)")
        if self.kind == COLLECTION and (self.source is not None or self.frames is not None):
            raise EntryError("a collection has no frames of its own (its members do)")
        if (self.inr is None) != (self.kind == MEMBER):
            raise EntryError("a member's decoder is its collection's" if self.kind == MEMBER
                             else f"a {self.kind} entry needs its INR (config, quant, train)")
        if self.chunks is not None:
            if self.kind != VIDEO:
                raise EntryError(f"a {self.kind} is not chunked (only a video's own INR is)")
            ChunkInfo.table(self.chunks)
            if sum(c.frames for c in self.chunks) != self.frames.count:
                raise EntryError(f"the chunks cover {sum(c.frames for c in self.chunks)} frames, the video has "
                                 f"{self.frames.count}")
        clash = _OWN_KEYS & set(self.extra)
        if clash:
            raise EntryError(f"extra keys {sorted(clash)} are entry fields")

    # --- derived --------------------------------------------------------------------------------------------

    @property
    def arch(self) -> str | None:
        """The INR family of the entry's own decoder (None for a member: see its collection)."""
        return None if self.inr is None else self.inr.family

    def stored(self, role: FileRole | None = None) -> list[StoredFile]:
        """The entry's files that some role names (only ``role``'s if given), in file-name order."""
        parsed = (parse_file(n) for n in sorted(self.files))
        return [f for f in parsed if f is not None and (role is None or f.role == role)]

    def chunk_files(self) -> list[str]:
        """A chunked video's decoder files, in chunk order (empty for one INR)."""
        return [chunk_file(k) for k in range(len(self.chunks or ()))]

    def adapters(self, task: str) -> dict[int, str]:
        """The stored adapters of ``task``: exit block -> file name, by exit block."""
        found = {f.keys["exit_block"]: f.name for f in self.stored(ADAPTER) if f.keys["task"] == task}
        return dict(sorted(found.items()))

    def tasks(self) -> list[str]:
        """The tasks with a stored adapter or pairing, sorted."""
        return sorted({f.keys["task"] for f in self.stored() if f.role in (ADAPTER, PAIRING)})

    # --- (de)serialisation ----------------------------------------------------------------------------------

    @classmethod
    def from_store(cls, raw: Mapping[str, Any], version: str | None = None) -> VideoEntry:
        """From a whole ``entry.json`` dict (``VideoStore.entry``): id, files, meta, created, updated."""
        files = {n: FileRecord(str(r["sha256"]), int(r["bytes"])) for n, r in raw["files"].items()}
        entry = cls.from_meta(raw["id"], raw["meta"], files=files, created=raw.get("created"),
                              updated=raw.get("updated"))
        return entry if version is None else dataclasses.replace(entry, version=version)

    @classmethod
    def from_meta(cls, video_id: str, meta: Mapping[str, Any], *, files: Mapping[str, FileRecord] | None = None,
                  created: str | None = None, updated: str | None = None) -> VideoEntry:
        """Read a meta dict of entry version 1 or 2 (raises :class:`EntryError` if it does not describe an entry)."""
        version = meta.get("entry_version", 1)
        if not isinstance(version, int) or not 1 <= version <= ENTRY_VERSION:
            raise EntryError(f"entry version {version!r} is not one this NVP reads (1 to {ENTRY_VERSION}); "
                             "a newer NVP wrote it")
        kind, collection, index = entry_kind(meta)
        try:
            source = frames = inr = quality = h264 = chunks = None
            if "source" in meta:
                source = Source(**{f: meta.get(k) for k, f in _SOURCE_KEYS.items()})
            if "frames" in meta:
                frames = FrameRange(**{f: meta[k] for k, f in _RANGE_KEYS.items()})
            if "inr" in meta:
                inr = INRInfo(dict(meta["inr"]), dict(meta["quant"]), dict(meta["train"]), meta.get("format_version"))
                if "arch" in meta and meta["arch"] != inr.family:
                    raise EntryError(f"arch {meta['arch']!r} differs from the INR's {inr.family!r}")
            if "psnr" in meta:
                quality = Quality(**{k: meta[k] for k in _QUALITY_KEYS if k in meta})
            if meta.get("h264") is not None:
                h264 = H264Twin(**meta["h264"])
            chunks = None if meta.get("chunks") is None else ChunkInfo.table(meta["chunks"])
        except KeyError as e:
            raise EntryError(f"meta lacks {e.args[0]!r}") from None
        except TypeError as e:  # a group's dataclass given missing or unknown fields
            raise EntryError(f"malformed meta: {e}") from None
        return cls(id=video_id, kind=kind, source=source, frames=frames, width=meta.get("width"),
                   height=meta.get("height"), inr=inr, quality=quality, h264=h264, collection=collection, index=index,
                   encoded_at=meta.get("encoded_at"), chunks=chunks,
                   extra={k: v for k, v in meta.items() if k not in _OWN_KEYS},
                   files=dict(files or {}), created=created, updated=updated)

    def to_meta(self) -> dict[str, Any]:
        """The flat meta dict ``entry.json`` holds (entry version :data:`ENTRY_VERSION`)."""
        meta: dict[str, Any] = {"entry_version": ENTRY_VERSION, "kind": self.kind}
        if self.kind == MEMBER:
            meta.update(collection=self.collection, index=self.index)
        if self.source is not None:
            meta.update({k: getattr(self.source, f) for k, f in _SOURCE_KEYS.items()})
        if self.frames is not None:
            meta.update({k: getattr(self.frames, f) for k, f in _RANGE_KEYS.items()})
        if self.width is not None:
            meta.update(width=self.width, height=self.height)
        if self.inr is not None:
            meta["arch"] = self.inr.family  # a copy for readers of the raw meta; never read back
        if self.quality is not None:
            meta.update({k: v for k, v in dataclasses.asdict(self.quality).items()
                         if v is not None or k in _REQUIRED_QUALITY})
        if self.h264 is not None:
            meta["h264"] = dataclasses.asdict(self.h264)
        if self.inr is not None:
            meta["format_version"] = self.inr.format_version
        if self.encoded_at is not None:
            meta["encoded_at"] = self.encoded_at
        if self.chunks is not None:
            meta["chunks"] = [dataclasses.asdict(c) for c in self.chunks]
        if self.inr is not None:
            meta.update(inr=dict(self.inr.config), quant=dict(self.inr.quant), train=dict(self.inr.train))
        return {**meta, **self.extra}
