"""VideoStore: one directory per video ID, written atomically and verified on read.

Layout::

    <root>/.lock                  fcntl lock held by writers
    <root>/<video_id>/entry.json  {"id", "format", "files": {name: {"sha256", "bytes"}}, "meta", "created", "updated"}
    <root>/<video_id>/<file>      the files named in entry.json
    <root>/.tmp-<id>-<rand>/      an entry being staged, or the old one just swapped out (invisible to readers)
    <root>/.trash-<id>-<rand>/    an entry being deleted (invisible to readers)

Writers stage a complete entry in a hidden directory and publish it with one rename (a new ID) or one atomic
directory swap (``renameat2(RENAME_EXCHANGE)``, an existing ID), so a process killed at any moment leaves either the
old entry or the new one, plus hidden leftovers that the next write removes once they are an hour old. Readers only
see directories named like an ID that hold ``entry.json``, and every ``get`` checks the file's SHA-256 against it.

A writer that computed its files from what it read earlier (``adapt``, ``replace_inr``) passes what it read as a
precondition: ``if_version`` (the entry's :attr:`~builder.entry.VideoEntry.version`, the SHA-256 of its
``entry.json``) and/or ``if_inr`` (:meth:`VideoStore.inr_digest`, the decoder adapters are bound to). Both are
compared under the store lock, so a write that lost a race with ``encode --force``, ``adapt --joint`` or ``delete``
raises :class:`EntryChanged` and writes nothing.

The store itself is a byte store with a free ``meta`` dict; :mod:`builder.entry` says what the files and the meta
mean. ``video(id)`` reads an entry typed (:class:`~builder.entry.VideoEntry`), ``put_video`` writes one, and
``decoder`` / ``holder`` resolve a collection member's decoder through its collection.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .entry import COLLECTION, INR_FILE, MEMBER, EntryError, VideoEntry, entry_kind, inr_checksum, parse_file

__all__ = [
    "ENTRY_FILE",
    "FILE_NAME_RE",
    "STORE_FORMAT",
    "VIDEO_ID_RE",
    "CorruptEntry",
    "EntryChanged",
    "EntryExists",
    "InvalidVideoId",
    "MissingFile",
    "StoreError",
    "VideoNotFound",
    "VideoStore",
    "default_store_root",
    "validate_video_id",
]

VIDEO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENTRY_FILE = "entry.json"
STORE_FORMAT = 1


class StoreError(Exception):
    """Base class of every error raised by :class:`VideoStore`."""


class InvalidVideoId(StoreError, ValueError):
    pass


class _PlainKeyError(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class VideoNotFound(_PlainKeyError):
    pass


class MissingFile(_PlainKeyError):
    """The entry exists but has no file of that name."""


class CorruptEntry(StoreError):
    pass


class EntryExists(StoreError):
    pass


class EntryChanged(StoreError):
    """A write whose precondition (``if_version`` / ``if_inr``) no longer holds: nothing was written."""


def validate_video_id(video_id: str) -> str:
    """Return ``video_id`` if it is a safe store key, else raise :class:`InvalidVideoId`."""
    if not isinstance(video_id, str):
        raise InvalidVideoId(f"invalid video ID {video_id!r}: expected a string, got {type(video_id).__name__}")
    if not VIDEO_ID_RE.fullmatch(video_id):
        raise InvalidVideoId(
            f"invalid video ID {video_id!r}: IDs are 1-64 characters of letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return video_id


def _validate_file_name(name: str) -> str:
    if not isinstance(name, str) or not FILE_NAME_RE.fullmatch(name) or name == ENTRY_FILE:
        raise ValueError(
            f"invalid file name {name!r}: names are 1-128 characters of letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit, and not {ENTRY_FILE!r}"
        )
    return name


def default_store_root() -> Path:
    """``$NVP_STORE`` if set, else ``${XDG_DATA_HOME:-~/.local/share}/nvp/store``."""
    if os.environ.get("NVP_STORE"):
        return Path(os.environ["NVP_STORE"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(data_home).expanduser() / "nvp" / "store"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_at(dir_fd: int, name: str) -> bytes:
    with open(name, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=dir_fd)) as f:
        return f.read()


def _entry_json(entry: dict[str, Any]) -> bytes:
    try:
        return json.dumps(entry, indent=2).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable (plain dicts, lists, str, numbers): {e}") from e


try:  # renameat2(RENAME_EXCHANGE) swaps two directories in one step, so an overwrite never unpublishes the ID.
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):
    _renameat2 = None
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap ``a`` and ``b``; False where the OS or filesystem cannot (caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class VideoStore:
    """A directory of video entries keyed by ID. ``root=None`` uses :func:`default_store_root`."""

    STALE_AFTER = 3600.0  # seconds before a hidden .tmp-/.trash- leftover is considered abandoned

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    def __repr__(self) -> str:
        return f"VideoStore({str(self.root)!r})"

    # --- reading ------------------------------------------------------------------------------------------------

    def exists(self, video_id: str) -> bool:
        return (self._dir(video_id) / ENTRY_FILE).is_file()

    def entry(self, video_id: str) -> dict[str, Any]:
        """The whole ``entry.json`` of ``video_id``, as stored (:meth:`video` reads it typed)."""
        d = self._existing_dir(video_id)
        return self._load_entry(video_id, d)

    def meta(self, video_id: str) -> dict[str, Any]:
        """The caller's metadata stored with ``video_id``."""
        return self.entry(video_id)["meta"]

    def get(self, video_id: str, name: str) -> bytes:
        """The bytes of file ``name`` of ``video_id``, verified against the checksum in ``entry.json``."""
        d = self._existing_dir(video_id)
        _validate_file_name(name)
        try:
            return self._read_verified(video_id, d, name)
        except (CorruptEntry, VideoNotFound):
            # A concurrent overwrite may have swapped the directory between our reads: look once more.
            return self._read_verified(video_id, d, name)

    def path(self, video_id: str, name: str) -> Path:
        """Filesystem path of file ``name`` of ``video_id`` (checked to exist, not checksummed)."""
        d = self._existing_dir(video_id)
        _validate_file_name(name)
        self._file_info(video_id, self._load_entry(video_id, d), name)
        p = d / name
        if not p.is_file():
            raise self._corrupt(video_id, p, "is listed in entry.json but missing")
        return p

    def list(self) -> list[dict[str, Any]]:
        """All entries sorted by ID as ``{"id": ..., **meta}``; unreadable ones as ``{"id": ..., "error": ...}``."""
        out = []
        for d in self._entry_dirs():
            try:
                meta = self._load_entry(d.name, d)["meta"]
            except CorruptEntry as e:
                out.append({"id": d.name, "error": str(e)})
                continue
            out.append({"id": d.name, **{k: v for k, v in meta.items() if k != "id"}})
        return out

    # --- typed entries (builder.entry) --------------------------------------------------------------------------

    def video(self, video_id: str) -> VideoEntry:
        """The typed entry of ``video_id`` (any kind); :class:`CorruptEntry` if its meta does not describe one."""
        d = self._existing_dir(video_id)
        raw, version = self._load_entry_versioned(video_id, d)
        try:
            return VideoEntry.from_store(raw, version)
        except EntryError as e:
            raise self._corrupt(video_id, d / ENTRY_FILE, f"does not describe a video entry ({e})") from None

    def videos(self) -> dict[str, VideoEntry | CorruptEntry]:
        """Every entry by ID (sorted), typed; one that does not load maps to its :class:`CorruptEntry`."""
        out: dict[str, VideoEntry | CorruptEntry] = {}
        for d in self._entry_dirs():
            try:
                out[d.name] = self.video(d.name)
            except CorruptEntry as e:
                out[d.name] = e
            except VideoNotFound:
                pass  # deleted since the directory was listed
        return out

    def members(self, collection_id: str) -> list[VideoEntry]:
        """The members of collection ``collection_id``, by index."""
        self._existing_dir(collection_id)
        found = [e for e in self.videos().values()
                 if isinstance(e, VideoEntry) and e.kind == MEMBER and e.collection == collection_id]
        return sorted(found, key=lambda e: e.index)

    def put_video(self, entry: VideoEntry, files: dict[str, bytes], *, overwrite: bool = False,
                  if_version: str | None = None, if_inr: str | None = None) -> VideoEntry:
        """Store ``entry``'s meta with ``files`` in one atomic :meth:`put`; return the stored entry (with its files'
        checksums). A file of a role the entry's kind does not hold is refused, and a member must name an existing
        collection at an index no other member has."""
        for name in files:
            f = parse_file(name)
            if f is not None and entry.kind not in f.role.kinds:
                where = " (a member's decoder lives in its collection)" if entry.kind == MEMBER else ""
                raise ValueError(f"a {entry.kind} entry does not hold {f.role.name} files like '{name}'{where}")
        if entry.kind == MEMBER:
            problem = self._collection_problem(entry.collection)
            if problem:
                raise ValueError(f"member '{entry.id}' names collection '{entry.collection}', which {problem}")
            taken = [m.id for m in self.members(entry.collection) if m.index == entry.index and m.id != entry.id]
            if taken:
                raise ValueError(f"collection '{entry.collection}' already has member {entry.index}: '{taken[0]}'")
        _, raw, version = self._put(entry.id, files, entry.to_meta(), overwrite=overwrite, if_version=if_version,
                                    if_inr=if_inr)
        return VideoEntry.from_store(raw, version)  # what was written, not a re-read a later writer may have changed

    def version(self, video_id: str) -> str:
        """The entry's version: the SHA-256 of its ``entry.json`` (every write changes it); ``video(id).version``."""
        return self._load_entry_versioned(video_id, self._existing_dir(video_id))[1]

    def inr_digest(self, video_id: str) -> str:
        """The checksum of ``video_id``'s decoder as stored now (:func:`~builder.entry.inr_checksum`): what an
        adapter trained on it is bound to. Reads only ``entry.json`` (and a member's collection's)."""
        entry = self._load_entry(video_id, self._existing_dir(video_id))
        holder = self._decoder_id(video_id)
        shared = None if holder == video_id else self.entry(holder)
        digest = inr_checksum(entry["files"], shared and shared["files"])
        if digest is None:  # MissingFile, naming the file a decoder needs
            self._file_info(holder, shared or entry, INR_FILE)
        return digest

    def decoder(self, video_id: str) -> VideoEntry:
        """The entry holding ``video_id``'s decoder: the entry itself, or a member's collection."""
        return self.video(self._decoder_id(video_id))

    def holder(self, video_id: str, name: str) -> str:
        """The ID of the entry that holds file ``name`` for ``video_id``: a member's decoder files (roles members
        do not hold but collections do) are its collection's, every other file is the entry's own. Reads only the
        kind fields of the meta, so loosely written entries resolve to themselves."""
        f = parse_file(name)
        if f is None or MEMBER in f.role.kinds or COLLECTION not in f.role.kinds:
            return validate_video_id(video_id)
        return self._decoder_id(video_id)

    # --- writing ------------------------------------------------------------------------------------------------

    def put(self, video_id: str, files: dict[str, bytes], meta: dict[str, Any], *, overwrite: bool = False,
            if_version: str | None = None, if_inr: str | None = None) -> Path:
        """Store ``files`` and ``meta`` as entry ``video_id`` in one atomic step; return the entry directory.
        ``if_version`` / ``if_inr``: the preconditions of the module docstring (:class:`EntryChanged`)."""
        return self._put(video_id, files, meta, overwrite=overwrite, if_version=if_version, if_inr=if_inr)[0]

    def _put(self, video_id: str, files: dict[str, bytes], meta: dict[str, Any], *, overwrite: bool,
             if_version: str | None, if_inr: str | None) -> tuple[Path, dict[str, Any], str]:
        """:meth:`put`; also returns the ``entry.json`` written and its version."""
        d = self._dir(video_id)
        for name in files:
            _validate_file_name(name)
        now = _now()
        entry: dict[str, Any] = {"id": video_id, "format": STORE_FORMAT, "files": {}, "meta": dict(meta),
                                 "created": now, "updated": now}
        _entry_json(entry)  # fail on bad meta before touching the disk
        with self._locked():
            self._check_unchanged(video_id, if_version, if_inr)
            if (d / ENTRY_FILE).exists():
                if not overwrite:
                    raise EntryExists(
                        f"video '{video_id}' already exists in store {self.root}; pass overwrite=True "
                        "(CLI: --force) to replace it"
                    )
                try:
                    entry["created"] = self._load_entry(video_id, d).get("created", now)
                except CorruptEntry:
                    pass  # replacing a broken entry is exactly what overwrite is for
            staged = self._hidden(".tmp", video_id)
            staged.mkdir()
            try:
                for name, data in files.items():
                    data = bytes(data)
                    _write_synced(staged / name, data)
                    entry["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                raw = _entry_json(entry)
                _write_synced(staged / ENTRY_FILE, raw)
                _fsync_dir(staged)
                self._publish(staged, d, video_id)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        return d, entry, hashlib.sha256(raw).hexdigest()

    def add_file(self, video_id: str, name: str, data: bytes, *, if_version: str | None = None,
                 if_inr: str | None = None) -> Path:
        """Add or replace one file of an existing entry, atomically with its checksum; return its path.
        ``if_version`` / ``if_inr``: the preconditions of the module docstring (:class:`EntryChanged`).

        The entry is restaged (unchanged files hard-linked, so this is cheap) and swapped in whole, so no reader
        ever sees the new file with the old checksum.
        """
        d = self._existing_dir(video_id)
        _validate_file_name(name)
        data = bytes(data)
        with self._locked():
            self._check_unchanged(video_id, if_version, if_inr)
            entry = self._load_entry(video_id, self._existing_dir(video_id))
            staged = self._hidden(".tmp", video_id)
            staged.mkdir()
            try:
                for other in entry["files"]:
                    if other == name:
                        continue
                    _validate_file_name(other)
                    try:
                        os.link(d / other, staged / other)
                    except FileNotFoundError:
                        raise self._corrupt(video_id, d / other, "is listed in entry.json but missing") from None
                    except OSError:  # no hard links on this filesystem
                        shutil.copy2(d / other, staged / other)
                _write_synced(staged / name, data)
                entry["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                entry["updated"] = _now()
                _write_synced(staged / ENTRY_FILE, _entry_json(entry))
                _fsync_dir(staged)
                self._publish(staged, d, video_id)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        return d / name

    def update_meta(self, video_id: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the entry's meta (atomic rewrite of ``entry.json``); return the new meta."""
        d = self._existing_dir(video_id)
        with self._locked():
            entry = self._load_entry(video_id, self._existing_dir(video_id))
            entry["meta"].update(changes)
            entry["updated"] = _now()
            tmp = d / f".{ENTRY_FILE}.{secrets.token_hex(4)}.tmp"
            try:
                _write_synced(tmp, _entry_json(entry))
                os.replace(tmp, d / ENTRY_FILE)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(d)
        return entry["meta"]

    def remove(self, video_id: str) -> None:
        """Delete entry ``video_id``: hidden by one rename, then removed from disk."""
        d = self._dir(video_id)
        with self._locked():
            if not d.is_dir():
                raise self._not_found(video_id)
            trash = self._hidden(".trash", video_id)
            d.rename(trash)
            _fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    # --- internals ----------------------------------------------------------------------------------------------

    def _dir(self, video_id: str) -> Path:
        return self.root / validate_video_id(video_id)

    def _existing_dir(self, video_id: str) -> Path:
        d = self._dir(video_id)
        if not (d / ENTRY_FILE).is_file():
            raise self._not_found(video_id)
        return d

    def _entry_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        # hidden staging/trash dirs and half-made entries are not entries
        return [d for d in sorted(self.root.iterdir(), key=lambda p: p.name)
                if VIDEO_ID_RE.fullmatch(d.name) and (d / ENTRY_FILE).is_file()]

    def _decoder_id(self, video_id: str) -> str:
        d = self._existing_dir(video_id)
        try:
            kind, collection, _ = entry_kind(self._load_entry(video_id, d)["meta"])
        except EntryError as e:
            raise self._corrupt(video_id, d / ENTRY_FILE, f"does not describe a video entry ({e})") from None
        if kind != MEMBER:
            return video_id
        problem = self._collection_problem(collection)
        if problem:
            raise CorruptEntry(f"store entry '{video_id}' is a member of collection '{collection}', which {problem}; "
                               f"delete it ('python -m builder delete {video_id}') or restore the collection")
        return collection

    def _collection_problem(self, collection_id: str | None) -> str | None:
        """Why ``collection_id`` cannot be a collection members resolve through (None if it can)."""
        if not isinstance(collection_id, str) or not VIDEO_ID_RE.fullmatch(collection_id):
            return "is not a valid video ID"
        try:
            kind = self.entry(collection_id)["meta"].get("kind")
        except VideoNotFound:
            return f"is not in store {self.root}"
        return None if kind == COLLECTION else f"is a {kind or 'video'}, not a collection"

    def _not_found(self, video_id: str) -> VideoNotFound:
        return VideoNotFound(f"no video '{video_id}' in store {self.root} (see 'python -m builder list')")

    def _corrupt(self, video_id: str, path: Path, problem: str) -> CorruptEntry:
        return CorruptEntry(
            f"store entry '{video_id}' is corrupt: {path} {problem}; re-encode it (overwrite=True / --force) "
            f"or delete it ('python -m builder delete {video_id}')"
        )

    def _hidden(self, prefix: str, video_id: str) -> Path:
        return self.root / f"{prefix}-{video_id}-{secrets.token_hex(4)}"

    def _read_verified(self, video_id: str, d: Path, name: str) -> bytes:
        # Reading entry.json and the file through one directory fd sees one version of the entry, even if a
        # writer swaps a new one in meanwhile.
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise self._not_found(video_id) from None
        try:
            info = self._file_info(video_id, self._load_entry(video_id, d, fd), name)
            try:
                data = _read_at(fd, name)
            except FileNotFoundError:
                raise self._corrupt(video_id, d / name, "is listed in entry.json but missing") from None
        finally:
            os.close(fd)
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise self._corrupt(video_id, d / name, "does not match its SHA-256 in entry.json")
        return data

    def _check_unchanged(self, video_id: str, if_version: str | None, if_inr: str | None) -> None:
        """Under the lock: raise :class:`EntryChanged` unless the entry still has ``if_version`` / ``if_inr``."""
        if if_version is None and if_inr is None:
            return
        try:
            version = self.version(video_id)
            digest = self.inr_digest(video_id) if if_inr is not None else None
        except VideoNotFound:
            raise EntryChanged(f"video '{video_id}' was deleted from store {self.root} while this command ran; "
                               "nothing was written") from None
        if if_inr is not None and digest != if_inr:
            raise EntryChanged(f"video '{video_id}''s INR was replaced while this command ran (encode --force or "
                               "adapt --joint); nothing was written: run it again on the new INR")
        if if_version is not None and version != if_version:
            raise EntryChanged(f"video '{video_id}' was changed by another command since this one read it; nothing "
                               "was written: run it again")

    def _load_entry(self, video_id: str, d: Path, dir_fd: int | None = None) -> dict[str, Any]:
        return self._load_entry_versioned(video_id, d, dir_fd)[0]

    def _load_entry_versioned(self, video_id: str, d: Path,
                              dir_fd: int | None = None) -> tuple[dict[str, Any], str]:
        """``entry.json`` parsed, and its version: the SHA-256 of its bytes."""
        path = d / ENTRY_FILE
        try:
            raw = path.read_bytes() if dir_fd is None else _read_at(dir_fd, ENTRY_FILE)
            entry = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise self._not_found(video_id) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._corrupt(video_id, path, f"is not valid JSON ({e})") from None
        if (not isinstance(entry, dict) or entry.get("id") != video_id or not isinstance(entry.get("files"), dict)
                or not isinstance(entry.get("meta"), dict)):
            raise self._corrupt(video_id, path, "lacks the id/files/meta fields of a store entry")
        if entry.get("format") != STORE_FORMAT:
            raise self._corrupt(video_id, path, f"has store format {entry.get('format')!r}, expected {STORE_FORMAT}")
        return entry, hashlib.sha256(raw).hexdigest()

    def _file_info(self, video_id: str, entry: dict[str, Any], name: str) -> dict[str, Any]:
        info = entry["files"].get(name)
        if info is None:
            have = ", ".join(sorted(entry["files"])) or "none"
            raise MissingFile(f"video '{video_id}' has no file '{name}' (it has: {have})")
        if not isinstance(info, dict):
            raise self._corrupt(video_id, self.root / video_id / ENTRY_FILE, f"has a malformed record for '{name}'")
        return info

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._clean_stale()
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock, as does the process dying

    def _clean_stale(self) -> None:
        cutoff = time.time() - self.STALE_AFTER
        for p in self.root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")):
                try:
                    if p.lstat().st_mtime <= cutoff:
                        shutil.rmtree(p, ignore_errors=True)
                except FileNotFoundError:
                    pass

    def _publish(self, staged: Path, d: Path, video_id: str) -> None:
        """Move the complete entry ``staged`` to ``d``; afterwards ``staged`` holds the old entry (if any)."""
        if not d.exists():
            os.rename(staged, d)
        elif not _exchange(staged, d):
            # Fallback without an atomic swap: the ID is briefly absent, never partial.
            trash = self._hidden(".trash", video_id)
            os.rename(d, trash)
            os.rename(staged, d)
            os.rename(trash, staged)
        _fsync_dir(self.root)
