"""Request handling of the per-task models (pure numpy/torch, no Triton import; unit-tested without a server).

Every task ensemble starts with an *input* model keyed by video ID and ends with a *post* model::

    <task>               = nvp_input               (INR prefix to the video's exit block + its adapter)
                           -> <task>_tail          (ONNX: backbone after the injection layer)
                           -> <task>_post          (labels and scores; boxes; captions)
    <task>_fulldecode    = fulldecode_input        (full INR decode + preprocessing) -> <task>_backbone -> <task>_post
    <task>_codec         = codec_input             (PyAV decode of the stored H.264 copy + preprocessing)
                           -> <task>_backbone -> <task>_post

There is one input model per path, shared by every task (and every ``--multi`` group): it answers each task's
tensors under ``<task>.<name>`` and computes only those the ensemble step asks for (:class:`InputHandler`).

Request tensors::

    video_id         TYPE_STRING [1]   a store ID
    frame_selection  TYPE_STRING [1]   "auto" (the task's protocol: 8 uniformly spaced frames, or 32 consecutive
                                       from a seeded start), "uniform[:N]", "consecutive[:N][@START]", or explicit
                                       indices "0-7,12"

One input model serves every video and task: INRs and adapters are loaded by ID from the store with a bounded cache, so a
video encoded (or adapted) after the server started is served without a restart.

Consistency: the INR is cached by its checksum, a task's adapters by that checksum too (with their own files'),
and an adapter answers only with the INR it is bound to (:func:`builder.entry.check_binding`); the H.264 copy is
read checksum-verified, like every store file. So while ``encode --force``, ``adapt --joint`` or ``delete`` run,
every request is answered from one version of the entry or refused with a clear error.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..selection import GRAMMAR, Selection, SelectionError
from .serving import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_SIZE,
    DEFAULT_MAX_FRAMES,
    RequestError,
    StoreCache,
    VideoUnavailableError,
    _int_param,
    _one_line,
    check_frame_range,
    model_device,
    parse_video_id,
)
from .wire import FRAME_INDICES, FRAME_SELECTION, PATHS, VIDEO_ID, task_output

__all__ = [
    "FRAME_SIZE",
    "LOGITS",
    "SELECTED",
    "InputHandler",
    "InputSettings",
    "StoredAdapters",
    "TAIL_LOGITS",
    "answer_arrays",
    "choose_adapter",
    "input_handler",
    "input_names",
    "InputOptions",
    "parse_selection",
    "post_handler",
    "select_frames",
    "served_frames",
    "store_root",
    "tail_name",
]

LOGITS = "logits"
BOXES = "pred_boxes"
EMBEDDINGS = "embeddings"
SELECTED = "selected_frames"  # the input step's frame indices as the post step reads them (and hands them on)
FRAME_SIZE = "frame_size"  # detection: the video's (height, width), to give boxes in its pixels
_MAX_SELECTION = 256


def tail_name(output: str) -> str:
    """The ensemble's name for a backbone (or tail) output on its way to the post step."""
    return f"tail_{output}"


TAIL_LOGITS = tail_name(LOGITS)


def input_names(mode: str, n: int) -> list[str]:
    """Names of the tensors an input model hands on: the cut's features (nvp) or the backbone's input pixels."""
    base = "features" if mode == "nvp" else "pixels"
    return [base] if n == 1 else [f"{base}_{i}" for i in range(n)]


def parse_selection(value: Any) -> str:
    """The ``frame_selection`` tensor (one BYTES element) as text."""
    if value is None:
        return "auto"
    arr = np.asarray(value, dtype=object)
    if arr.size != 1:
        raise RequestError(f"'{FRAME_SELECTION}' must hold exactly one string, got {arr.size} elements")
    item = arr.reshape(-1)[0]
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"'{FRAME_SELECTION}' is not valid UTF-8") from None
    if not isinstance(item, str):
        raise RequestError(f"'{FRAME_SELECTION}' must be a string (BYTES tensor), got {type(item).__name__}")
    if len(item) > _MAX_SELECTION:
        raise RequestError(f"'{FRAME_SELECTION}' is too long ({len(item)} > {_MAX_SELECTION} characters)")
    return item.strip() or "auto"


def select_frames(text: str, num_frames: int, task: Any, video_id: str = "", *, seed: int = 0,
                  max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    """Frame indices of a selection (grammar: :mod:`builder.selection`) for a video of ``num_frames`` frames."""
    action = task.video
    try:
        idx = Selection.parse(text, max_frames=max_frames).frames(num_frames, clip=task.clip, consecutive=action,
                                                                 seed=seed)
    except SelectionError as e:
        raise RequestError(f"bad frame selection {text!r} for video '{video_id}': {e}. Use {GRAMMAR}") from None
    arr = np.asarray(idx, dtype=np.int64)
    if arr.size == 0 or arr.size > max_frames:
        raise RequestError(f"frame selection {text!r} gives {arr.size} frames; ask for 1..{max_frames}")
    check_frame_range(arr, num_frames, video_id)
    if action and arr.size != task.clip:
        raise RequestError(f"{task.name} reads clips of exactly {task.clip} frames; the selection {text!r} gives "
                           f"{arr.size} (use consecutive or consecutive@START)")
    return arr


def choose_adapter(pairing: Mapping[str, Any], adapters: Mapping[int, Mapping[str, Any]], layer: str,
                   video_id: str, task: str) -> int:
    """The exit block whose stored adapter this repository serves: the video's chosen exit when its adapter feeds
    ``layer`` (the injection layer the repository's tail starts at), else the most accurate stored adapter for
    ``layer`` (cheapest exit on ties). ``adapters``: exit block -> adapter metadata."""
    chosen = pairing.get("exit_block")
    if chosen in adapters and adapters[chosen].get("layer") == layer:
        return int(chosen)
    # an undefined score (null: mAP without reference detections) ranks last
    fits = [(m.get("accuracy") or 0.0, -k, k) for k, m in adapters.items() if m.get("layer") == layer]
    if not fits:
        have = sorted({str(m.get("layer")) for m in adapters.values()}) or ["none"]
        raise RequestError(f"video '{video_id}' has no {task} adapter for layer '{layer}', the injection layer this "
                           f"server's {task} model runs from (its adapters feed: {', '.join(have)}); run "
                           f"'python -m builder adapt {video_id} --task {task} --layers {layer}'")
    return max(fits)[2]


def store_root(params: Mapping[str, str]) -> Path:
    """The ``store_root`` parameter of a model that reads the store."""
    root = params.get("store_root", "").strip()
    if not root:
        raise ValueError("model parameter 'store_root' (the video store directory) is required")
    return Path(root).expanduser()


@dataclass(frozen=True)
class InputOptions:
    """How an input model runs, whatever it serves (one task's path, or a task group's prefix)."""

    cache_size: int = DEFAULT_CACHE_SIZE
    max_frames: int = DEFAULT_MAX_FRAMES
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    num_threads: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], instance_kind: str = "CPU",
                        device_id: str | int = 0) -> InputOptions:
        return cls(cache_size=_int_param(params, "cache_size", DEFAULT_CACHE_SIZE, 1),
                   max_frames=_int_param(params, "max_frames", DEFAULT_MAX_FRAMES, 1),
                   batch_size=_int_param(params, "batch_size", DEFAULT_BATCH_SIZE, 1),
                   device=model_device(params, instance_kind, device_id),
                   num_threads=_int_param(params, "num_threads", 0, 0))


@dataclass(frozen=True)
class InputSettings:
    """What an input model reads from its config parameters: its path and, per task it serves, the injection layer
    its tail starts at (nvp) or its backbone's preprocessing (fulldecode, codec)."""

    store_root: Path
    mode: str
    tasks: Mapping[str, Mapping[str, Any]]  # task -> {"layer": ...} (nvp) | {"preprocess": ...} (the baselines)
    options: InputOptions = InputOptions()

    def __post_init__(self) -> None:
        from ..tasks import get_task

        if self.mode not in PATHS:
            raise ValueError(f"model parameter 'mode' must be one of {PATHS}, got {self.mode!r}")
        if not isinstance(self.tasks, Mapping) or not self.tasks:
            raise ValueError("model parameter 'tasks' must be a JSON object: task -> its settings (at least one)")
        for name, cfg in self.tasks.items():
            get_task(name)  # an unknown name: the registry's error, listing the tasks
            if not isinstance(cfg, Mapping) or not isinstance(cfg.get("preprocess", {}), Mapping):
                raise ValueError(f"model parameter 'tasks': {name}'s settings must be a JSON object with an "
                                 f"object 'preprocess', got {cfg!r}")
            if self.mode == "nvp" and not (isinstance(cfg.get("layer"), str) and cfg["layer"]):
                raise ValueError(f"model parameter 'tasks': {name} needs its 'layer' (the tail's injection layer) "
                                 "in nvp mode")

    def layer(self, task: str) -> str:
        return str(self.tasks[task]["layer"])

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, instance_kind: str = "CPU",
                        device_id: str | int = 0) -> InputSettings:
        try:
            tasks = json.loads(params.get("tasks", "") or "{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"model parameter 'tasks' is not JSON: {e}") from None
        return cls(store_root(params), params.get("mode", ""), tasks,
                   InputOptions.from_parameters(params, instance_kind, device_id))


def input_handler(params: Mapping[str, str], *, instance_kind: str = "CPU", device_id: str | int = 0,
                  log: Callable[[str], None] | None = None) -> InputHandler:
    """The handler of an input model (``nvp_input``, ``fulldecode_input``, ``codec_input``) from its config
    parameters."""
    return InputHandler(InputSettings.from_parameters(params, instance_kind=instance_kind, device_id=device_id),
                        log=log)


class StoredAdapters:
    """Every stored adapter of one task, per video: ``get(video_id) -> (pairing, {exit block: (AdapterSet,
    meta)})``, cached by the pairing, the task's adapter files and the INR (a new INR never meets adapters cached
    for the old); :meth:`bound` hands one out only with the INR it was trained on."""

    def __init__(self, store_root: Path, task: Any, cache_size: int, device: str) -> None:
        self.task, self.device = task, device
        self.cache = StoreCache(store_root, cache_size, load=self._load, version=self._version)

    def _version(self, store: Any, video_id: str, name: str) -> str:
        from ..entry import ADAPTER, parse_file
        from ..nvp.storage import adapter_holder

        holder = adapter_holder(store, video_id, self.task.name)  # a member may be answered by its collection's
        files = store.entry(holder)["files"]
        own = sorted(n for n in files if (f := parse_file(n)) is not None and f.role == ADAPTER
                     and f.keys["task"] == self.task.name)
        return "/".join([store.inr_digest(video_id), holder, StoreCache.file_version(store, holder, name),
                         *(f"{n}:{files[n].get('sha256')}" for n in own)])

    def _load(self, store: Any, video_id: str, name: str) -> tuple[dict[str, Any], dict[int, tuple[Any, dict]]]:
        from ..entry import StaleAdapter
        from ..nvp.storage import adapter_holder, load_adapter, load_pairing, stored_exits

        holder = adapter_holder(store, video_id, self.task.name)
        pairing = load_pairing(store, video_id, self.task.name)
        # every stored adapter of the task is small: load each once, choose per request
        stored = {}
        for k in stored_exits(store.video(holder), self.task.name):
            if holder == video_id:  # bound to this video's INR: checked per request (bound)
                adapters, meta = load_adapter(store, video_id, self.task.name, k)
            else:  # the collection's: bound to the shared decoder, checked here (a new one changes the version)
                try:
                    adapters, meta = load_adapter(store, video_id, self.task.name, k,
                                                  inr_sha256=store.inr_digest(video_id))
                except StaleAdapter as e:
                    raise VideoUnavailableError(f"video '{video_id}' cannot be served: {e}") from None
                meta = {**meta, "collection": holder}
            stored[k] = (adapters.to(self.device), meta)
        return pairing, stored

    def get(self, video_id: str) -> tuple[dict[str, Any], dict[int, tuple[Any, dict]]]:
        from ..nvp.storage import pairing_file

        name = self.task.name
        return self.cache.get(video_id, pairing_file(name),
                              missing=f"video '{video_id}' has no {name} adapters; run 'python -m builder adapt "
                                      f"{video_id} --task {name}'")

    def bound(self, stored: Mapping[int, tuple[Any, dict]], exit_block: int, inr_version: str,
              video_id: str) -> Any:
        """The adapter of ``exit_block``, refused unless it was trained on the INR of ``inr_version`` (a
        collection's adapter: on the shared decoder, checked when it was loaded)."""
        from ..entry import INR_BINDING, StaleAdapter, check_binding

        adapters, meta = stored[exit_block]
        if meta.get("collection"):
            return adapters
        try:
            check_binding(meta.get(INR_BINDING), inr_version, video_id, self.task.name)
        except StaleAdapter as e:
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: {e}") from None
        return adapters


def served_frames(inrs: StoreCache, video_id: str, selection: str, task: Any, max_frames: int
                  ) -> tuple[str, Any, np.ndarray, tuple[int, int]]:
    """``(INR version, INR, frame indices, (height, width))`` of one request: the video's decoder from the cache
    and the selection resolved against its frames with ``task``'s protocol."""
    version, decoded = inrs.versioned(video_id)
    model = decoded.model
    idx = select_frames(selection, int(model.config.frames), task, video_id, max_frames=max_frames)
    return version, model, idx, (model.config.out_height, model.config.out_width)


def answer_arrays(named: Mapping[str, Any], video_id: str, what: str) -> dict[str, np.ndarray]:
    """Tensors an input step hands on, as contiguous numpy (floats as float32); non-finite values refused."""
    result = {}
    for name, value in named.items():
        if value.is_floating_point():  # DETR's cut also carries a boolean padding mask: kept as it is
            value = value.float()
        arr = value.cpu().numpy()
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: its {what} produced non-finite "
                                        "values")
        result[name] = np.ascontiguousarray(arr)
    return result


class InputHandler:
    """``handle({"video_id", "frame_selection"}, requested) -> {"<task>.features"... | "<task>.pixels"...,
    "<task>.frame_indices"[, "<task>.frame_size"]}`` for the tasks whose outputs ``requested`` names (all when
    None). One model per path serves every task, so one INR cache (and one H.264 cache) per server process,
    whatever the number of tasks. Tasks asked together that read the same frames (a ``--multi`` group) share the
    work: one INR prefix to their shared exit (nvp, :func:`builder.triton.multi.shared_exit`), one decode (the
    baselines)."""

    def __init__(self, settings: InputSettings, log: Callable[[str], None] | None = None) -> None:
        from ..backbones import get_backbone
        from ..tasks import get_task

        self.settings = settings
        self.log = log or (lambda msg: None)
        self.tasks = {t: get_task(t) for t in settings.tasks}
        self.backbones = {}  # the baselines' preprocessing: sizes and statistics only, no weights loaded
        if settings.mode != "nvp":
            for name, task in self.tasks.items():
                self.backbones[name] = get_backbone(task.backbone)
                self.backbones[name].apply_preprocess_settings(settings.tasks[name].get("preprocess", {}))
        o = settings.options
        self.inrs = StoreCache(settings.store_root, o.cache_size, device=o.device)
        self.adapters = ({t: StoredAdapters(settings.store_root, task, o.cache_size, o.device)
                          for t, task in self.tasks.items()} if settings.mode == "nvp" else {})
        self.codec = StoreCache(settings.store_root, o.cache_size, load=self._codec_source)
        # codec: verified H.264 copies, one file per checksum: PyAV decodes bytes that were checked, never the store's
        self._h264_dir = tempfile.TemporaryDirectory(prefix="nvp-h264-") if settings.mode == "codec" else None
        # import the decoder/adapter stack at model load, not on the first request
        from ..nvp import path, storage  # noqa: F401

    def describe(self) -> str:
        return f"{self.settings.mode} input for {', '.join(self.tasks)}"

    def asked(self, requested: Iterable[str] | None) -> list[str]:
        """The tasks whose outputs ``requested`` names (``<task>.<tensor>``; none named: every task)."""
        heads = {n.partition(".")[0] for n in requested or ()}
        tasks = [t for t in self.tasks if t in heads]
        if heads and not tasks:
            raise RequestError(f"none of the requested outputs belongs to a task this model serves "
                               f"({', '.join(self.tasks)})")
        return tasks or list(self.tasks)

    # --- loaders (run under the caches' error mapping) ---

    def _codec_source(self, store: Any, video_id: str, name: str) -> tuple[Path, dict[str, Any]]:
        import hashlib

        data = store.get(video_id, name)  # checked against entry.json's SHA-256 (CorruptEntry if it differs)
        folder = Path(self._h264_dir.name) / video_id
        folder.mkdir(exist_ok=True)
        path = folder / f"{hashlib.sha256(data).hexdigest()}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        for old in folder.glob("*.mp4"):  # older versions of this video (one being decoded stays open: Linux)
            if old != path:
                old.unlink(missing_ok=True)
        return path, store.meta(video_id)

    # --- requests ---

    def handle(self, inputs: Mapping[str, Any], requested: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        import torch

        video_id = parse_video_id(inputs.get(VIDEO_ID))
        selection = parse_selection(inputs.get(FRAME_SELECTION))
        tasks = self.asked(requested)
        by_frames: dict[tuple[bool, int], list[str]] = {}  # tasks that read the same frames share the work
        for t in tasks:
            by_frames.setdefault((self.tasks[t].video, self.tasks[t].clip), []).append(t)
        t0 = time.perf_counter()
        result: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for same in by_frames.values():
                result.update(self._answer(video_id, selection, same))
        self.log(f"{self.settings.mode} input: {len(result[task_output(tasks[0], FRAME_INDICES)])} frame(s) of "
                 f"'{video_id}' for {', '.join(tasks)} in {1000 * (time.perf_counter() - t0):.1f} ms")
        wanted = set(requested or ())
        return {k: v for k, v in result.items() if k in wanted} if wanted else result

    def _answer(self, video_id: str, selection: str, tasks: list[str]) -> dict[str, np.ndarray]:
        """The outputs of ``tasks``, which read the same frames: decoded (or the prefix computed) once."""
        import torch

        from ..api import H264_FILE
        from ..nvp.path import inr_features

        s, o = self.settings, self.settings.options
        protocol = self.tasks[tasks[0]]
        if s.mode == "codec":
            path, meta = self.codec.get(video_id, H264_FILE,
                                        missing=f"video '{video_id}' has no H.264 copy (encoded by an older "
                                                "version); re-encode it to serve the codec baseline")
            idx = select_frames(selection, int(meta["frames"]), protocol, video_id, max_frames=o.max_frames)
            frames = self._decode_h264(path, meta, idx, video_id)
            named = {t: self._preprocess(t, frames) for t in tasks}
            size = (meta["height"], meta["width"])
        else:
            inr_version, model, idx, size = served_frames(self.inrs, video_id, selection, protocol, o.max_frames)
            if s.mode == "nvp":
                from .multi import shared_exit

                stored = {t: self.adapters[t].get(video_id) for t in tasks}
                k = shared_exit(video_id, {t: s.layer(t) for t in tasks},
                                {t: p for t, (p, _) in stored.items()},
                                {t: {e: meta for e, (_, meta) in st.items()} for t, (_, st) in stored.items()})
                prefix = inr_features(model, idx.tolist(), k, protocol.video)  # once, for every task
                named = {t: self.adapters[t].bound(st, k, inr_version, video_id)(prefix)
                         for t, (_, st) in stored.items()}
            else:
                device = next(model.parameters()).device
                frames = torch.cat([model(torch.from_numpy(idx[i:i + o.batch_size]).to(device))
                                    for i in range(0, len(idx), o.batch_size)]).clamp(0, 1)
                named = {t: self._preprocess(t, frames) for t in tasks}
        result = {}
        for t, outs in named.items():
            result.update(answer_arrays({task_output(t, n): v for n, v in zip(input_names(s.mode, len(outs)), outs)},
                                        video_id, f"{s.mode} path"))
            result[task_output(t, FRAME_INDICES)] = idx
            if self.tasks[t].kind.frame_size:
                result[task_output(t, FRAME_SIZE)] = np.asarray(size, dtype=np.int64)
        return result

    def _preprocess(self, task: str, frames: Any) -> tuple[Any, ...]:
        x = self.backbones[task].preprocess(frames.float().cpu())
        return tuple(x) if isinstance(x, (list, tuple)) else (x,)

    @staticmethod
    def _decode_h264(path: Path, meta: Mapping[str, Any], idx: np.ndarray, video_id: str) -> Any:
        from ..api import h264_frames
        from ..video import VideoDecodeError

        try:
            return h264_frames(path, meta, idx.tolist())
        except VideoDecodeError as e:
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: its H.264 copy does not decode "
                                        f"({_one_line(str(e)).replace(str(path), '<store>')})") from None

    def close(self) -> None:
        for cache in (self.inrs, self.codec, *(a.cache for a in self.adapters.values())):
            cache.clear()
        if self._h264_dir is not None:
            self._h264_dir.cleanup()


def post_handler(params: Mapping[str, str], model_dir: str | Path, *, instance_kind: str = "CPU",
                 device_id: str | int = 0) -> Any:
    """The post step of a ``<task>_post`` model from its config parameters (``task``, and what its kind's
    ``post_parameters`` wrote): the kind's handler (``builder.tasks``)."""
    from ..tasks import get_task

    task = get_task(params.get("task", ""))
    return task.kind.post_handler(task, params, model_dir, instance_kind=instance_kind, device_id=device_id)
