"""Request handling of the per-task models (pure numpy/torch, no Triton import; unit-tested without a server).

Every task ensemble starts with an *input* model keyed by video ID and ends with a *post* model::

    <task>               = <task>_nvp_input        (INR prefix to the video's exit block + its adapter)
                           -> <task>_tail          (ONNX: backbone after the injection layer)
                           -> <task>_post          (labels and scores; boxes; captions)
    <task>_fulldecode    = <task>_fulldecode_input (full INR decode + preprocessing) -> <task>_backbone -> <task>_post
    <task>_codec         = <task>_codec_input      (PyAV decode of the stored H.264 copy + preprocessing)
                           -> <task>_backbone -> <task>_post

Request tensors::

    video_id         TYPE_STRING [1]   a store ID
    frame_selection  TYPE_STRING [1]   "auto" (the task's protocol: 8 uniformly spaced frames, or 32 consecutive
                                       from a seeded start), "uniform[:N]", "consecutive[:N][@START]", or explicit
                                       indices "0-7,12"

One input model serves every video: INRs and adapters are loaded by ID from the store with a bounded cache, so a
video encoded (or adapted) after the server started is served without a restart.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..postprocess import cxcywh_to_xyxy, detr_detections, softmax
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
from .wire import FRAME_INDICES, FRAME_SELECTION, PATHS, VIDEO_ID

__all__ = [
    "CaptionPostHandler",
    "DetectionPostHandler",
    "FRAME_SIZE",
    "LOGITS",
    "MODEL_OUTPUTS",
    "POST_OUTPUTS",
    "PostHandler",
    "SELECTED",
    "TaskInputHandler",
    "TaskInputSettings",
    "TAIL_LOGITS",
    "choose_adapter",
    "input_names",
    "parse_selection",
    "post_handler",
    "select_frames",
    "tail_name",
]

LOGITS = "logits"
BOXES = "pred_boxes"
EMBEDDINGS = "embeddings"
SELECTED = "selected_frames"  # the input step's frame indices as the post step reads them (and hands them on)
FRAME_SIZE = "frame_size"  # detection: the video's (height, width), to give boxes in its pixels
# what a task kind's backbone (and tail) outputs: one ONNX output each
MODEL_OUTPUTS = {"classification": (LOGITS,), "action": (LOGITS,), "detection": (LOGITS, BOXES),
                 "captioning": (EMBEDDINGS,)}
# what each kind's post step answers. The model outputs are passed through (parity checks, custom post-processing):
# a tensor that is both an ensemble output and another step's input is not forwarded when a client leaves it out of
# the requested outputs, so the post step re-emits them (and the frame indices) rather than the ensemble tapping them
POST_OUTPUTS = {
    # the video's top-k labels/scores (mean logits over its frames) and each frame's top-1
    "classification": ("labels", "scores", "frame_labels", "frame_scores", FRAME_INDICES, LOGITS),
    "action": ("labels", "scores", "frame_labels", "frame_scores", FRAME_INDICES, LOGITS),
    # every box above the threshold: xyxy in the video's pixels, label, score, and the frame it is in
    "detection": ("boxes", "labels", "scores", "box_frames", FRAME_INDICES, LOGITS, BOXES),
    # one caption per frame, and the video's (the most frequent one)
    "captioning": ("caption", "captions", FRAME_INDICES, EMBEDDINGS),
}
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
    action = task.kind == "action"
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


@dataclass(frozen=True)
class TaskInputSettings:
    """What an input model reads from its config parameters."""

    store_root: Path
    task: str
    mode: str
    layer: str = ""  # nvp: the injection layer of the repository's tail
    preprocess: Mapping[str, Any] = field(default_factory=dict)  # Backbone.preprocess_settings() as exported
    cache_size: int = DEFAULT_CACHE_SIZE
    max_frames: int = DEFAULT_MAX_FRAMES
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    num_threads: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], *, instance_kind: str = "CPU",
                        device_id: str | int = 0) -> TaskInputSettings:
        from ..tasks import get_task

        root = params.get("store_root", "").strip()
        if not root:
            raise ValueError("model parameter 'store_root' (the video store directory) is required")
        mode = params.get("mode", "")
        if mode not in PATHS:
            raise ValueError(f"model parameter 'mode' must be one of {PATHS}, got {mode!r}")
        task = get_task(params.get("task", "")).name
        layer = params.get("layer", "")
        if mode == "nvp" and not layer:
            raise ValueError("model parameter 'layer' (the tail's injection layer) is required in nvp mode")
        preprocess = json.loads(params.get("preprocess", "{}") or "{}")
        if not isinstance(preprocess, dict):
            raise ValueError(f"model parameter 'preprocess' must be a JSON object, got {preprocess!r}")
        return cls(store_root=Path(root).expanduser(), task=task, mode=mode, layer=layer, preprocess=preprocess,
                   cache_size=_int_param(params, "cache_size", DEFAULT_CACHE_SIZE, 1),
                   max_frames=_int_param(params, "max_frames", DEFAULT_MAX_FRAMES, 1),
                   batch_size=_int_param(params, "batch_size", DEFAULT_BATCH_SIZE, 1),
                   device=model_device(params, instance_kind, device_id),
                   num_threads=_int_param(params, "num_threads", 0, 0))


class TaskInputHandler:
    """``handle({"video_id", "frame_selection"}) -> {features... | pixels..., "frame_indices"}`` for one task and
    one mode (nvp, fulldecode, codec)."""

    def __init__(self, settings: TaskInputSettings, log: Callable[[str], None] | None = None) -> None:
        from ..backbones import get_backbone
        from ..tasks import get_task

        self.settings = settings
        self.log = log or (lambda msg: None)
        self.task = get_task(settings.task)
        # preprocessing only needs the backbone's sizes and statistics: no weights are loaded here
        self.backbone = get_backbone(self.task.name)
        self.backbone.apply_preprocess_settings(settings.preprocess)
        self.inrs = StoreCache(settings.store_root, settings.cache_size, device=settings.device)
        self.adapters = StoreCache(settings.store_root, settings.cache_size, load=self._load_adapters)
        self.codec = StoreCache(settings.store_root, settings.cache_size, load=self._codec_source)
        from .. import nvp  # noqa: F401 - import the decoder/adapter stack at model load, not on the first request

    # --- loaders (run under the caches' error mapping) ---

    def _load_adapters(self, store: Any, video_id: str, name: str) -> tuple[int, Any]:
        from ..nvp import adapter_file, load_adapter

        pairing = json.loads(store.get(video_id, name))
        files = store.entry(video_id)["files"]
        # every stored adapter of the task is small: load each once, keep the one for the served layer
        stored = {k: load_adapter(store, video_id, self.task.name, k)
                  for k in range(1, 64) if adapter_file(self.task.name, k) in files}
        k = choose_adapter(pairing, {k: meta for k, (_, meta) in stored.items()}, self.settings.layer, video_id,
                           self.task.name)
        return k, stored[k][0].to(self.settings.device)

    @staticmethod
    def _codec_source(store: Any, video_id: str, name: str) -> tuple[Path, dict[str, Any]]:
        return store.path(video_id, name), store.meta(video_id)

    # --- requests ---

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        from ..api import H264_FILE
        from ..nvp import inr_features, pairing_file

        s = self.settings
        video_id = parse_video_id(inputs.get(VIDEO_ID))
        selection = parse_selection(inputs.get(FRAME_SELECTION))
        t0 = time.perf_counter()
        video = self.task.kind == "action"
        with torch.inference_mode():
            if s.mode == "codec":
                path, meta = self.codec.get(video_id, H264_FILE,
                                            missing=f"video '{video_id}' has no H.264 copy (encoded by an older "
                                                    "version); re-encode it to serve the codec baseline")
                idx = select_frames(selection, int(meta["frames"]), self.task, video_id, max_frames=s.max_frames)
                frames = self._decode_h264(path, meta, idx, video_id)
                outs = self._preprocess(frames)
                size = (meta["height"], meta["width"])
            else:
                model = self.inrs.get(video_id).model
                size = (model.config.out_height, model.config.out_width)
                idx = select_frames(selection, int(model.config.frames), self.task, video_id,
                                    max_frames=s.max_frames)
                if s.mode == "nvp":
                    k, adapters = self.adapters.get(
                        video_id, pairing_file(self.task.name),
                        missing=f"video '{video_id}' has no {self.task.name} adapters; run 'python -m builder "
                                f"adapt {video_id} --task {self.task.name}'")
                    outs = adapters(inr_features(model, idx.tolist(), k, video))
                else:
                    device = next(model.parameters()).device
                    frames = torch.cat([model(torch.from_numpy(idx[i:i + s.batch_size]).to(device))
                                        for i in range(0, len(idx), s.batch_size)])
                    outs = self._preprocess(frames.clamp(0, 1))
        result = {}
        for name, value in zip(input_names(s.mode, len(outs)), outs):
            if value.is_floating_point():  # DETR's cut also carries a boolean padding mask: kept as it is
                value = value.float()
            arr = value.cpu().numpy()
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise VideoUnavailableError(f"video '{video_id}' cannot be served: its {s.mode} path produced "
                                            "non-finite values")
            result[name] = np.ascontiguousarray(arr)
        result[FRAME_INDICES] = idx
        if self.task.kind == "detection":
            result[FRAME_SIZE] = np.asarray(size, dtype=np.int64)
        self.log(f"{self.task.name} {s.mode}: {len(idx)} frame(s) of '{video_id}' in "
                 f"{1000 * (time.perf_counter() - t0):.1f} ms")
        return result

    def _preprocess(self, frames: Any) -> tuple[Any, ...]:
        x = self.backbone.preprocess(frames.float().cpu())
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
        for cache in (self.inrs, self.adapters, self.codec):
            cache.clear()


def _array(inputs: Mapping[str, Any], name: str, ndim: int, dtype: Any) -> np.ndarray:
    value = inputs.get(name)
    if value is None:
        raise RequestError(f"missing input '{name}'")
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim != ndim or arr.shape[0] < 1:
        raise RequestError(f"'{name}' must have {ndim} dimension(s) and at least one row, got shape {list(arr.shape)}")
    return arr


def _frames(inputs: Mapping[str, Any], rows: int | None = None) -> np.ndarray:
    """The selected frame indices; ``rows``: how many answers the model gave (one per frame), when it must match."""
    idx = _array(inputs, SELECTED, 1, np.int64)
    if rows is not None and len(idx) != rows:
        raise RequestError(f"'{SELECTED}' has {len(idx)} frame(s) but the model answered for {rows}")
    return idx


def _labels(names: Sequence[str]) -> np.ndarray:
    if not names:
        raise ValueError("labels must not be empty")
    return np.array([str(n).encode() for n in names], dtype=object)


class PostHandler:
    """Classification and action: ``handle({"tail_logits", "selected_frames"}) -> labels/scores`` (and the logits):
    the video's top-k from the mean logits over its frames (the protocol's video-level answer) and each frame's
    (action: each clip's) top-1. ``labels`` come with the model (a ``labels.json`` written by the builder), so this step needs numpy
    only."""

    inputs = (TAIL_LOGITS, SELECTED)

    def __init__(self, labels: Sequence[str], top_k: int = 5) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.labels = _labels(labels)
        self.top_k = top_k

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        logits = _array(inputs, TAIL_LOGITS, 2, np.float32)
        if logits.shape[1] != len(self.labels):
            raise RequestError(f"'{TAIL_LOGITS}' must be (frames, {len(self.labels)}), got shape "
                               f"{list(logits.shape)}")
        video = softmax(logits.mean(0))
        top = np.argsort(-video, kind="stable")[: self.top_k]
        frames = softmax(logits)
        best = frames.argmax(1)
        return {"labels": self.labels[top], "scores": video[top],
                "frame_labels": self.labels[best], "frame_scores": frames[np.arange(len(best)), best],
                FRAME_INDICES: _frames(inputs), LOGITS: logits}  # action tasks: one row per clip


class DetectionPostHandler:
    """Detection (DETR): ``handle({"tail_logits", "tail_pred_boxes", "selected_frames", "frame_size"})`` -> every
    box scoring above ``threshold`` as ``boxes`` (x0, y0, x1, y1 in the video's pixels), ``labels``, ``scores`` and
    ``box_frames`` (the video frame it is in), ordered by frame then score; plus DETR's raw outputs. numpy only."""

    inputs = (TAIL_LOGITS, tail_name(BOXES), SELECTED, FRAME_SIZE)

    def __init__(self, labels: Sequence[str], threshold: float = 0.5) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.labels = _labels(labels)
        self.threshold = threshold

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        logits = _array(inputs, TAIL_LOGITS, 3, np.float32)
        boxes = _array(inputs, tail_name(BOXES), 3, np.float32)
        if logits.shape[2] != len(self.labels) + 1 or boxes.shape != (*logits.shape[:2], 4):
            raise RequestError(f"DETR outputs must be logits (frames, queries, {len(self.labels) + 1}) and boxes "
                               f"(frames, queries, 4), got {list(logits.shape)} and {list(boxes.shape)}")
        idx = _frames(inputs, len(logits))
        size = _array(inputs, FRAME_SIZE, 1, np.int64)
        if size.shape != (2,) or (size < 1).any():
            raise RequestError(f"'{FRAME_SIZE}' must be (height, width), got {size.tolist()}")
        image, label, score, box = detr_detections(logits, boxes, self.threshold)
        order = np.lexsort((-score, image))  # by frame, best first
        return {"boxes": cxcywh_to_xyxy(box[order], *size.tolist()).reshape(-1, 4),
                "labels": self.labels[label[order]], "scores": score[order], "box_frames": idx[image[order]],
                FRAME_INDICES: idx, LOGITS: logits, BOXES: boxes}


class CaptionPostHandler:
    """Captioning (BLIP): ``handle({"tail_embeddings", "selected_frames"}) -> captions`` (one per frame) and the
    video's ``caption`` (the most frequent one; the earliest frame's on ties). ``caption(embeds)`` is the captioning
    model's text decoder; this step runs it, so it needs torch (and the model's weights)."""

    inputs = (tail_name(EMBEDDINGS), SELECTED)

    def __init__(self, caption: Callable[[Any], list[str]], device: str = "cpu") -> None:
        self.caption, self.device = caption, device

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        import torch

        embeds = _array(inputs, tail_name(EMBEDDINGS), 3, np.float32)
        idx = _frames(inputs, len(embeds))
        if not np.isfinite(embeds).all():
            raise RequestError(f"'{tail_name(EMBEDDINGS)}' holds non-finite values")
        with torch.inference_mode():
            texts = self.caption(torch.from_numpy(embeds).to(self.device))
        counts = {t: texts.count(t) for t in texts}
        video = max(texts, key=lambda t: (counts[t], -texts.index(t)))
        return {"caption": np.array([video.encode()], dtype=object),
                "captions": np.array([t.encode() for t in texts], dtype=object),
                FRAME_INDICES: idx, EMBEDDINGS: embeds}


def post_handler(params: Mapping[str, str], model_dir: str | Path, *, instance_kind: str = "CPU",
                 device_id: str | int = 0) -> PostHandler | DetectionPostHandler | CaptionPostHandler:
    """The post step of a ``<task>_post`` model from its config parameters (``task``; ``labels_file`` next to the
    model for labelled outputs; ``top_k``, ``threshold``; captioning: ``weights`` and ``backbone_config``)."""
    from ..tasks import get_task

    task = get_task(params.get("task", ""))
    if task.kind == "captioning":
        from ..backbones import get_backbone
        from ..nvp import load_task_model

        weights = params.get("weights", "default") or "default"
        random_init = weights == "random"
        device = model_device(params, instance_kind, device_id)
        model = load_task_model(get_backbone(task.name), task, None if random_init else weights, random_init,
                                json.loads(params.get("backbone_config", "{}") or "{}")).drop_vision().to(device)
        # random weights come without a tokenizer: their captions are token ids (plumbing and tests only)
        return CaptionPostHandler(lambda e: model.captions(e, ids_without_tokenizer=random_init), device)
    with open(Path(model_dir) / params.get("labels_file", "labels.json"), encoding="utf-8") as f:
        labels = json.load(f)
    if task.kind == "detection":
        return DetectionPostHandler(labels, float(params.get("threshold", "0.5")))
    return PostHandler(labels, _int_param(params, "top_k", 5, 1))
