"""``encode-many``: a manifest of videos encoded on Ray, one task per video, into one store.

The manifest is a CSV with a header: ``path,id`` and optional columns named after ``encode``'s long options with
underscores (``frames``, ``size``, ``arch``, ``bpp``, ``time_budget``, ...; a flag such as ``compile`` takes
``true``/``false``). Every row becomes the ``encode`` command line it stands for, checked by ``encode``'s own
parser before anything runs. Each video is one Ray task (one GPU when CUDA is present, else one CPU) that runs that
command; Ray retries a failed task ``retries`` times, and a video that still fails is reported without stopping the
others. A video already stored from the same source bytes with the same options is skipped (the store keeps what
each video was encoded from in ``<store>/.corpus/<id>.json``), so a killed run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .store import VideoNotFound, VideoStore

__all__ = ["CORPUS_DIR", "ManifestRow", "read_manifest", "encode_many"]

CORPUS_DIR = ".corpus"
_FALSE = {"", "0", "false", "no"}
_TRUE = {"1", "true", "yes"}


@dataclass(frozen=True)
class ManifestRow:
    """One video of the manifest: its ``encode`` arguments (without ``--store``) and the options as given."""

    line: int
    path: str
    video_id: str
    options: dict[str, str] = field(default_factory=dict)

    def argv(self, flags: frozenset[str]) -> list[str]:
        out = ["encode", self.path, "--id", self.video_id]
        for name, value in self.options.items():
            opt = "--" + name.replace("_", "-")
            if name in flags:
                if value.strip().lower() in _TRUE:
                    out.append(opt)
                elif value.strip().lower() not in _FALSE:
                    raise ValueError(f"manifest line {self.line}: {name} is a flag: give true or false, not {value!r}")
            elif value.strip():
                out += [opt, value.strip()]
        return out


def _encode_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """``encode``'s own parser and its long options by column name (``time_budget`` for ``--time-budget``)."""
    from .cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    encode = sub.choices["encode"]
    options = {o[2:].replace("-", "_"): a for a in encode._actions for o in a.option_strings if o.startswith("--")}
    for own in ("id", "store", "json", "help", "rechunk"):  # set by the manifest's own columns or by encode-many
        options.pop(own, None)
    return parser, options


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The manifest's rows; a missing file, a header without ``path`` and ``id``, an unknown column or a repeated
    ID is an error naming what to fix. Relative paths are taken from the manifest's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the manifest {p}: {e.strerror or e}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "path" not in columns or "id" not in columns:
        raise ValueError(f"manifest {p}: the header must name the columns path and id (got {', '.join(columns) or 'none'})")
    _, options = _encode_parser()
    unknown = [c for c in columns if c not in ("path", "id") and c not in options]
    if unknown:
        raise ValueError(f"manifest {p}: unknown column(s) {', '.join(unknown)}; columns are path, id and encode's "
                         f"options: {', '.join(sorted(options))}")
    rows, seen = [], {}
    for n, raw in enumerate(reader, start=2):
        rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(rec.values()):
            continue
        if not rec.get("path") or not rec.get("id"):
            raise ValueError(f"manifest {p} line {n}: path and id are required")
        if rec["id"] in seen:
            raise ValueError(f"manifest {p} line {n}: ID {rec['id']!r} is already on line {seen[rec['id']]}")
        seen[rec["id"]] = n
        src = Path(rec["path"]).expanduser()
        rows.append(ManifestRow(n, str(src if src.is_absolute() else (p.parent / src)), rec["id"],
                                {k: v for k, v in rec.items() if k not in ("path", "id") and v != ""}))
    if not rows:
        raise ValueError(f"manifest {p} has no videos")
    return rows


def _source_sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _record(row: ManifestRow, sha: str | None) -> dict[str, Any]:
    return {"id": row.video_id, "source_sha256": sha, "options": row.options}


def _done(store: VideoStore, row: ManifestRow, sha: str | None) -> bool:
    """Stored already from these source bytes with these options (and still there)."""
    try:
        old = json.loads((store.root / CORPUS_DIR / f"{row.video_id}.json").read_text(encoding="utf-8"))
        store.video(row.video_id)
    except (OSError, ValueError, VideoNotFound):
        return False
    return sha is not None and old == _record(row, sha)


def _mark_done(store: VideoStore, row: ManifestRow, sha: str | None) -> None:
    d = store.root / CORPUS_DIR
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{row.video_id}.json.tmp"
    tmp.write_text(json.dumps(_record(row, sha)), encoding="utf-8")
    os.replace(tmp, d / f"{row.video_id}.json")


def _encode_task(argv: list[str]) -> dict[str, Any]:
    """Run one ``encode`` command line in this (Ray worker) process: its last stderr line is the error."""
    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != 0:
        lines = [l for l in err.getvalue().splitlines() if l.startswith("error:")] or err.getvalue().splitlines()
        raise RuntimeError(lines[-1].removeprefix("error: ") if lines else f"encode exited with {rc}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def cpus_per_video(cluster_cpus: float, videos: int, asked: int | None = None) -> int:
    """CPUs each video's task takes (Ray gives it as many torch threads): ``asked``, else the cluster's CPUs shared
    out over the videos, at least one (more videos than CPUs queue)."""
    if asked is not None:
        if asked < 1:
            raise ValueError(f"--cpus-per-video must be >= 1, got {asked}")
        return asked
    return max(1, int(cluster_cpus) // max(1, videos))


def encode_many(manifest: str | Path, store: VideoStore, *, address: str | None = None, retries: int = 2,
                force: bool = False, progress: bool = True, cpus: int | None = None,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Encode every video of ``manifest`` into ``store`` on Ray (``address``: ``auto``, ``ray://...`` or a
    cluster address; None starts a local Ray instance on this machine's CPUs), ``cpus`` CPUs per video (default
    :func:`cpus_per_video`'s share). Returns ``{"videos": [{"id", "status": "stored" | "skipped" | "failed",
    "error"}]}`` in manifest order, plus ``seconds``."""
    import ray
    import torch
    from tqdm.auto import tqdm

    rows = read_manifest(manifest)
    parser, options = _encode_parser()
    flags = frozenset(n for n, a in options.items() if a.nargs == 0)
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[ManifestRow, list[str], str | None]] = []
    for row in rows:
        try:
            argv = row.argv(flags) + ["--store", str(store.root), "--json", "--no-progress"]
            with contextlib.redirect_stderr(io.StringIO()) as err:
                try:
                    parser.parse_args(argv)  # the row as encode would read it: bad values fail here, not on Ray
                except SystemExit:
                    raise ValueError(err.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1]) from None
        except ValueError as e:
            results[row.video_id] = {"id": row.video_id, "status": "failed", "error": f"line {row.line}: {e}"}
            continue
        sha = _source_sha256(row.path)
        if not force and _done(store, row, sha):
            results[row.video_id] = {"id": row.video_id, "status": "skipped", "error": None}
            continue
        exists = True
        try:
            store.video(row.video_id)
        except (VideoNotFound, ValueError):
            exists = False
        todo.append((row, argv + (["--force"] if exists and "--force" not in argv else []), sha))
    t0 = time.perf_counter()
    if todo:
        gpus = 1 if torch.cuda.is_available() else 0
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        each = cpus_per_video(ray.cluster_resources().get("CPU", 1), len(todo), cpus)
        log(f"encode-many: {len(todo)} video(s) to encode on Ray ({each} CPU(s){' and one GPU' if gpus else ''} "
            f"each; {len(rows) - len(todo)} skipped or refused), up to {retries} retries each")
        # Ray sets each task's OMP_NUM_THREADS (torch's threads) to its num_cpus
        task = ray.remote(num_cpus=each, num_gpus=gpus, max_retries=retries, retry_exceptions=True)(_encode_task)
        pending = {task.remote(argv): (row, sha) for row, argv, sha in todo}
        failed = 0
        with tqdm(total=len(todo), desc="encode-many", unit="video", file=sys.stderr, disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                row, sha = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except Exception as e:  # noqa: BLE001 - the task's error, after Ray's retries
                    cause = getattr(e, "cause", None) or e
                    failed += 1
                    results[row.video_id] = {"id": row.video_id, "status": "failed",
                                             "error": " ".join(str(cause).split())[-500:]}
                else:
                    _mark_done(store, row, sha)
                    results[row.video_id] = {"id": row.video_id, "status": "stored", "error": None}
                bar.set_postfix(failed=failed, running=len(pending))
                bar.update(1)
    return {"videos": [results[r.video_id] for r in rows], "seconds": round(time.perf_counter() - t0, 2)}
