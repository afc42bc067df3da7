"""Request handling shared by the served Python-backend models, as pure numpy code (no Triton import).

Each ``python_models/<model>/model.py`` is a thin Triton shell: ``initialize`` builds its step from the model's
config (:func:`builder.triton.steps.served_step`: :func:`model_parameters`, :func:`model_device`,
:func:`set_instance_threads`), ``execute`` is :func:`respond`, which turns request tensors into numpy arrays, calls the handler and turns a :class:`RequestError`
(or any other exception) into that request's error response. Everything that can go wrong with a request is decided
in the handlers, so unit tests cover it without a server. Here: the errors, request parsing (video IDs, frame
indices), the store cache every handler loads through, and :class:`OnnxRunner` (ONNX models run with onnxruntime
inside the Python backend, ``python_models/onnx_runtime/model.py``). The handlers: :mod:`builder.triton.decode`,
:mod:`builder.triton.task_serving`.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..tensor_spec import dtype_info
from .wire import FRAME_INDICES, VIDEO_ID

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_MAX_FRAMES",
    "StoreCache",
    "OnnxRunner",
    "RequestError",
    "RequestLimits",
    "ServingLimits",
    "VideoNotFoundError",
    "VideoUnavailableError",
    "check_frame_range",
    "error_info",
    "model_device",
    "model_parameters",
    "parse_frame_indices",
    "parse_video_id",
    "respond",
    "set_instance_threads",
    "short_text",
]

DEFAULT_CACHE_SIZE = 32
DEFAULT_MAX_FRAMES = 256
DEFAULT_BATCH_SIZE = 8


class RequestError(Exception):
    """A request the model refuses; ``code`` is the ``pb_utils.TritonError`` code name sent with the message."""

    code = "INVALID_ARG"


class VideoNotFoundError(RequestError):
    code = "NOT_FOUND"


class VideoUnavailableError(RequestError):
    """The ID exists but its stored entry cannot be decoded (damaged file, unreadable bitstream)."""

    code = "INTERNAL"


MAX_MESSAGE_CHARS = 400  # an error message is read by a person: what went wrong and what to do, not an echo
SHORT_CHARS = 64  # client-given text (an ID, a selection) quoted in a message


def error_info(exc: BaseException, model: str = "decode") -> tuple[str, str]:
    """``(TritonError code name, one-line message)`` for any exception raised while handling a request."""
    if isinstance(exc, RequestError):
        return exc.code, _one_line(str(exc))
    return "INTERNAL", _one_line(f"internal error in model '{model}': {type(exc).__name__}: {exc}")


def _one_line(text: str) -> str:
    return short_text(" ".join(text.split()), MAX_MESSAGE_CHARS)


def short_text(text: str, limit: int = SHORT_CHARS) -> str:
    """``text`` cut to its first ``limit`` characters, marked with "…" when cut (client input quoted in errors)."""
    return text if len(text) <= limit else text[:limit] + "…"


# --- configuration --------------------------------------------------------------------------------------------


def model_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a Triton model config (the JSON the backend passes to ``initialize``) as a plain dict."""
    out = {}
    for key, value in (model_config.get("parameters") or {}).items():
        out[key] = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
    return out


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def model_device(params: Mapping[str, str], instance_kind: str = "CPU", device_id: str | int = 0, *,
                 cuda_available: Callable[[], bool] = _torch_cuda) -> str:
    """The device of a model instance: the ``device`` parameter (``auto`` by default: ``cuda:<device_id>`` for a GPU
    instance when ``cuda_available()``, else ``cpu``). Torch models ask torch; onnxruntime asks its providers."""
    device = params.get("device", "auto").strip() or "auto"
    if device == "auto":
        device = "cpu"
        if str(instance_kind).upper().endswith("GPU") and cuda_available():
            device = f"cuda:{int(device_id)}"
    elif device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"model parameter 'device' must be auto, cpu or cuda[:N], got {device!r}")
    return device


def set_instance_threads(num_threads: int) -> None:
    """Set torch's intra-op thread count for this model instance (0: keep torch's default).

    Call it once, from the model's ``initialize``: Triton runs every Python-backend model instance in its own stub
    process, so this process-wide setting is the instance's own there. Handlers never call it, because in one
    process (tests, benchmarks, several handlers side by side) each one would overwrite the others' setting.
    """
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


def _int_param(params: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = params.get(key, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"model parameter '{key}' must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"model parameter '{key}' must be >= {minimum}, got {value}")
    return value


# --- what one request may cost ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingLimits:
    """What one request may cost a served model, set at build time (``build-repo`` flags, :class:`RepoConfig`).

    Rows (frames, clips) are bounded by the repository's ``max_frames``: Triton's ``max_batch_size`` on the batching
    ONNX models, :class:`RequestLimits` on the Python-backend ones. The rest applies to every model a client can
    reach, step models included: sizes in the Python handlers (:class:`RequestLimits`, checked before any input is
    parsed), the queue in each model's ``config.pbtxt`` (``dynamic_batching.default_queue_policy``: a full queue
    or a request waiting longer than the timeout is rejected at once, never queued without bound).
    """

    max_side: int = 2048  # any variable dimension after the first (a frame's height or width, a feature map's)
    max_string_bytes: int = 1024  # one BYTES element (a video ID, a frame selection)
    # every input / output of one request together (decode's own max_response_mb too); a legitimate request can be
    # large: 64 DETR frames at its 1333x750 input are 770 MB of pixels between the input step and the backbone
    max_request_mb: int = 1024
    max_response_mb: int = 1024
    max_queue_size: int = 32  # requests waiting for one model (all its instances); more are rejected at once
    queue_timeout_ms: int = 30_000  # a request waiting longer than this for a model instance is rejected

    def __post_init__(self) -> None:
        small = [k for k, v in asdict(self).items() if not isinstance(v, int) or v < 1]
        if small:
            raise ValueError(f"serving limits must be integers >= 1: {', '.join(small)}")

    def parameters(self, max_rows: int) -> dict[str, str]:
        """The config parameters :class:`RequestLimits` reads back inside the served model."""
        return {"max_rows": str(max_rows), "max_side": str(self.max_side),
                "max_string_bytes": str(self.max_string_bytes), "max_request_mb": str(self.max_request_mb),
                "max_response_mb": str(self.max_response_mb)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestLimits:
    """The size checks of one served Python-backend model, from its config (``max_*`` parameters, input dims).

    :func:`respond` calls :meth:`check_inputs` before the handler sees a request and :meth:`check_outputs` before
    an answer leaves. Only dimensions the config leaves variable (``-1``) are checked: Triton itself enforces fixed
    ones and ``max_batch_size``.
    """

    dims: Mapping[str, tuple[int, ...]]  # input name -> config dims (without the batch dim of a batching model)
    batching: bool = False
    max_rows: int = DEFAULT_MAX_FRAMES
    max_side: int = ServingLimits.max_side
    max_string_bytes: int = ServingLimits.max_string_bytes
    max_request_bytes: int = ServingLimits.max_request_mb * 2**20
    max_response_bytes: int = ServingLimits.max_response_mb * 2**20

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> RequestLimits:
        """From the model config JSON Triton hands ``initialize`` (defaults where a parameter is absent)."""
        params = model_parameters(config)
        default = ServingLimits()
        return cls(
            dims={t["name"]: tuple(int(d) for d in t.get("dims", [])) for t in config.get("input", [])},
            batching=int(config.get("max_batch_size", 0) or 0) > 0,
            max_rows=_int_param(params, "max_rows", DEFAULT_MAX_FRAMES, 1),
            max_side=_int_param(params, "max_side", default.max_side, 1),
            max_string_bytes=_int_param(params, "max_string_bytes", default.max_string_bytes, 1),
            max_request_bytes=_int_param(params, "max_request_mb", default.max_request_mb, 1) * 2**20,
            max_response_bytes=_int_param(params, "max_response_mb", default.max_response_mb, 1) * 2**20,
        )

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Refuse a request whose inputs exceed the limits (:class:`RequestError`), reading shapes and byte counts
        only: nothing is copied, decoded or expanded first."""
        given = {name: arr for name, arr in inputs.items() if arr is not None}
        for name, arr in given.items():  # shapes first: no element is looked at in a tensor of too many rows
            shape = arr.shape[1:] if self.batching else arr.shape
            for axis, (n, d) in enumerate(zip(shape, self.dims.get(name, ()))):
                if d != -1:
                    continue
                if axis == 0 and not self.batching:
                    if n > self.max_rows:
                        raise RequestError(f"input '{name}' has {n:,} rows (frames or clips); this server takes at "
                                           f"most {self.max_rows} per request: split the request")
                elif n > self.max_side:
                    raise RequestError(f"input '{name}' has size {n:,} along axis {axis}; this server takes at "
                                       f"most {self.max_side}")
        total = 0
        for name, arr in given.items():
            if arr.dtype != object:
                total += arr.nbytes
                continue
            sizes = [len(x) for x in arr.reshape(-1) if isinstance(x, (bytes, str))]  # BYTES, before any decoding
            if max(sizes, default=0) > self.max_string_bytes:
                raise RequestError(f"input '{name}' holds an element of {max(sizes):,} bytes; this server takes "
                                   f"at most {self.max_string_bytes:,}")
            total += sum(sizes)
        if total > self.max_request_bytes:
            raise RequestError(f"the request's inputs hold {total / 2**20:.1f} MB; this server takes at most "
                               f"{self.max_request_bytes // 2**20} MB per request")

    def check_outputs(self, outputs: Mapping[str, Any]) -> None:
        total = sum(np.asarray(v).nbytes for v in outputs.values())
        if total > self.max_response_bytes:
            raise RequestError(f"the answer would hold {total / 2**20:.1f} MB; this server sends at most "
                               f"{self.max_response_bytes // 2**20} MB per request: ask for fewer frames")


# --- request parsing ------------------------------------------------------------------------------------------


_MAX_ID_BYTES = 4 * SHORT_CHARS  # an ID is at most 64 characters: 256 UTF-8 bytes is more than any can be


def parse_video_id(value: Any) -> str:
    """The store ID carried by a ``video_id`` tensor (one BYTES element), validated as a store key."""
    from ..store import InvalidVideoId, validate_video_id

    if value is None:
        raise RequestError(f"missing input '{VIDEO_ID}'")
    arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if arr.size != 1:
        raise RequestError(f"'{VIDEO_ID}' must hold exactly one ID, got {arr.size} elements (shape {list(arr.shape)})")
    item = arr.reshape(-1)[0]
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        raw = bytes(item[:_MAX_ID_BYTES + 1])  # never decode (nor echo) more than an ID can be
        if len(raw) > _MAX_ID_BYTES:
            raise RequestError(f"invalid video ID '{short_text(raw.decode('utf-8', 'replace'))}': too long (IDs are "
                               "1-64 letters, digits, '_' and '-')")
        try:
            item = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"'{VIDEO_ID}' is not valid UTF-8: {raw[:32]!r}{'...' if len(raw) > 32 else ''}") from None
    elif isinstance(item, np.str_):
        item = str(item)
    if not isinstance(item, str):
        raise RequestError(f"'{VIDEO_ID}' must be a string (BYTES tensor), got {type(item).__name__}")
    try:
        return validate_video_id(item)
    except InvalidVideoId as e:
        raise RequestError(str(e).replace(repr(item), repr(short_text(item)))) from None


def parse_frame_indices(value: Any, *, max_frames: int = DEFAULT_MAX_FRAMES) -> np.ndarray:
    """A ``frame_indices`` tensor as a 1-D int64 array (range is checked per video by :func:`check_frame_range`)."""
    if value is None:
        raise RequestError(f"missing input '{FRAME_INDICES}'")
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iu":
        raise RequestError(f"'{FRAME_INDICES}' must be integers (INT64), got {arr.dtype}")
    if arr.ndim != 1:
        raise RequestError(f"'{FRAME_INDICES}' must be a 1-D list of frame numbers, got shape {list(arr.shape)}")
    if arr.size == 0:
        raise RequestError(f"'{FRAME_INDICES}' is empty: ask for at least one frame")
    if arr.size > max_frames:
        raise RequestError(f"too many frames in one request: {arr.size} > {max_frames} (the model's max_frames); "
                           "split the request")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise RequestError(f"frame {int(arr.max())} out of range")
    return arr.astype(np.int64, copy=False)


def check_frame_range(indices: np.ndarray, num_frames: int, video_id: str) -> None:
    bad = indices[(indices < 0) | (indices >= num_frames)]
    if bad.size:
        raise RequestError(f"frame {int(bad[0])} out of range for video '{video_id}': it has {num_frames} frames "
                           f"(0..{num_frames - 1})")


# --- the store cache ------------------------------------------------------------------------------------------


class StoreCache:
    """Objects loaded from store files, by ``(video ID, file name)``; least recently used evicted beyond ``size``.

    Each object is cached with the version of the entry it was loaded from: by default the file's SHA-256, and
    for the INR the decoder's checksum (:meth:`~builder.store.VideoStore.inr_digest`: chunks and a member's
    collection included); ``version(store, video_id, name)`` may name more (task serving keys adapters by the INR
    they are bound to as well). Every lookup re-reads that version from ``entry.json`` (small), so a video encoded
    after the server started is found, and one re-encoded (``--force``), re-adapted or deleted is never served
    stale; a load is kept only if the version is the same after it as before (else loaded again), so an object never
    mixes two versions of an entry. ``load(store, video_id, name)`` builds the object; every store error becomes a
    :class:`RequestError` with a message fit for an anonymous client.
    """

    LOAD_TRIES = 3  # loads raced by writers before the request is refused ("try again")

    def __init__(self, store_root: str | Path, size: int = DEFAULT_CACHE_SIZE,
                 load: Callable[[Any, str, str], Any] | None = None, device: str = "cpu",
                 version: Callable[[Any, str, str], str] | None = None) -> None:
        from ..store import VideoStore

        if size < 1:
            raise ValueError("cache size must be >= 1")
        self.store = VideoStore(store_root)
        self.size = size
        self.device = device
        self.load = load or self._load_inr
        self.version = version or self.file_version
        self._items: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _load_inr(self, store: Any, video_id: str, name: str) -> Any:
        from ..api import load_inr

        return load_inr(store, video_id, device=self.device)

    @staticmethod
    def file_version(store: Any, video_id: str, name: str) -> str:
        """The default version: the decoder's checksum for the INR, else the file's SHA-256 (``MissingFile``
        when the entry has no such file)."""
        from ..api import INR_FILE
        from ..store import MissingFile

        if name == INR_FILE:
            return store.inr_digest(video_id)
        info = store.entry(video_id)["files"].get(name)
        if not isinstance(info, dict) or not info.get("sha256"):
            raise MissingFile(f"video '{video_id}' has no file '{name}'")
        return str(info["sha256"])

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str | tuple[str, str]) -> bool:
        return any(k == key or k[0] == key for k in self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _hide_root(self, text: str) -> str:
        # Error messages go to anonymous clients: keep the server's filesystem layout out of them.
        return text.replace(str(self.store.root), "<store>")

    def get(self, video_id: str, name: str | None = None, missing: str | None = None) -> Any:
        """The object loaded from file ``name`` (default: the INR) of ``video_id``; ``missing`` is the message
        when the video exists but has no such file (raises :class:`RequestError` subclasses)."""
        return self.versioned(video_id, name, missing)[1]

    def versioned(self, video_id: str, name: str | None = None, missing: str | None = None) -> tuple[str, Any]:
        """``(version, object)``: :meth:`get` and the version of the entry the object was loaded from."""
        from ..api import INR_FILE
        from ..codec import CorruptBitstream
        from ..entry import StaleAdapter
        from ..store import CorruptEntry, EntryChanged, InvalidVideoId, MissingFile, VideoNotFound

        name = name or INR_FILE
        key = (video_id, name)
        try:
            for _ in range(self.LOAD_TRIES):
                try:
                    version = self.version(self.store, video_id, name)
                except MissingFile:
                    if missing is None:
                        raise
                    raise RequestError(missing) from None
                with self._lock:
                    hit = self._items.get(key)
                    if hit is not None and hit[0] == version:
                        self._items.move_to_end(key)
                        self.hits += 1
                        return hit
                self.misses += 1
                value = self.load(self.store, video_id, name)
                if self.version(self.store, video_id, name) == version:
                    break
            else:
                raise VideoUnavailableError(f"video '{video_id}' is being rewritten (encode, adapt or delete); "
                                            "try again")
        except RequestError:
            raise
        except InvalidVideoId as e:
            raise RequestError(str(e)) from None
        except VideoNotFound:
            with self._lock:
                for k in [k for k in self._items if k[0] == video_id]:
                    self._items.pop(k)
            raise VideoNotFoundError(f"unknown video ID '{video_id}': no such video in the store "
                                     "(see 'python -m builder list')") from None
        except (CorruptEntry, MissingFile, StaleAdapter, EntryChanged) as e:
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: {self._hide_root(str(e))}") from None
        except CorruptBitstream as e:
            what = "INR" if name == INR_FILE else name
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: its stored {what} is damaged ({e}); "
                                        "re-encode it or delete it") from None
        except Exception as e:  # noqa: BLE001 - a bad entry must never take the model down
            raise VideoUnavailableError(f"video '{video_id}' cannot be served: loading its {name} failed "
                                        f"({type(e).__name__}: {self._hide_root(str(e))})") from None
        with self._lock:
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return version, value


# --- ONNX models run with onnxruntime inside the Python backend -----------------------------------------------


def _numpy_dtype(name: str, dtype: str) -> np.dtype:
    numpy = dtype_info(dtype).numpy
    if numpy is None:
        raise ValueError(f"input {name!r}: {dtype} has no numpy equivalent")
    return np.dtype(numpy)


class OnnxRunner:
    """One ONNX file run by onnxruntime, fed and read by the tensor names of its Triton config.

    Used by ``python_models/onnx_runtime/model.py`` where the server has no onnxruntime backend (the tritonserver
    of the nvidia-pytriton wheel); on the NGC image the same file is served by the ``onnxruntime_onnx`` platform.
    """

    def __init__(self, path: str | Path, inputs: Mapping[str, str], outputs: list[str], *, model: str = "onnx",
                 device: str = "cpu", num_threads: int = 0, spinning: bool = False) -> None:
        import onnxruntime as ort

        self.model = model
        self.inputs = {name: _numpy_dtype(name, dtype) for name, dtype in inputs.items()}
        self.outputs = list(outputs)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        # onnxruntime's workers busy-wait after each run by default; that steals the cores from the torch steps
        # beside them (the same process when fused, the next request's stub when split). Measured in
        # docs/BENCHMARKS.md ("Served against in-process"); the model parameter ort_spinning=1 turns it back on
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        have_in = {i.name for i in self.session.get_inputs()}
        have_out = {o.name for o in self.session.get_outputs()}
        missing = sorted(set(self.inputs) - have_in) + sorted(set(self.outputs) - have_out)
        if missing:
            raise ValueError(f"model '{model}': {path} has no tensor(s) {missing} named in config.pbtxt "
                             f"(ONNX inputs: {sorted(have_in)}, outputs: {sorted(have_out)})")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], model_dir: str | Path, *, instance_kind: str = "CPU",
                          device_id: str | int = 0) -> OnnxRunner:
        import onnxruntime as ort

        params = model_parameters(config)
        device = model_device(params, instance_kind, device_id,
                              cuda_available=lambda: "CUDAExecutionProvider" in ort.get_available_providers())
        return cls(Path(model_dir) / params.get("onnx_file", "model.onnx"),
                   {t["name"]: t["data_type"] for t in config.get("input", [])},
                   [t["name"] for t in config.get("output", [])],
                   model=str(config.get("name", "onnx")), device=device,
                   num_threads=_int_param(params, "num_threads", 0, 0),
                   spinning=bool(_int_param(params, "ort_spinning", 0, 0)))

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        feed = {}
        for name, dtype in self.inputs.items():
            value = inputs.get(name)
            if value is None:
                raise RequestError(f"missing input '{name}'")
            feed[name] = np.ascontiguousarray(value, dtype=dtype)
        try:
            results = self.session.run(self.outputs, feed)
        except Exception as e:  # noqa: BLE001 - onnxruntime reports bad shapes/values as generic errors
            raise RequestError(f"model '{self.model}' rejected the input: {_one_line(str(e))}") from None
        return {name: np.asarray(r) for name, r in zip(self.outputs, results)}


def respond(pb_utils: Any, requests: list, input_names: Sequence[str], handle: Callable[..., dict],
            model_name: str, warn: Callable[[str], None], *, limits: RequestLimits, requested: bool = False) -> list:
    """The ``execute`` loop of every Python-backend model here: ``handle`` each request's named inputs (numpy) and
    wrap its outputs; a failing request becomes its own error response, so one bad request never takes the model
    down. ``limits`` are checked before ``handle`` sees the inputs and before the outputs leave. With
    ``requested``, ``handle`` also gets the names of the outputs the request asks for (an ensemble step asks for
    those its ``output_map`` reads). ``pb_utils`` is Triton's ``triton_python_backend_utils`` module (importable
    only inside the server)."""
    responses = []
    for request in requests:
        try:
            inputs = {}
            for name in input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                inputs[name] = None if tensor is None else tensor.as_numpy()
            limits.check_inputs(inputs)
            outputs = handle(inputs, request.requested_output_names()) if requested else handle(inputs)
            limits.check_outputs(outputs)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
        except Exception as exc:  # noqa: BLE001 - see docstring
            code, message = error_info(exc, model_name)
            if code == "INTERNAL":
                warn(f"{model_name}: {message}")
            code_value = getattr(pb_utils.TritonError, code, None)
            error = (pb_utils.TritonError(message) if code_value is None  # older backends: message only
                     else pb_utils.TritonError(message, code_value))
            responses.append(pb_utils.InferenceResponse(error=error))
    return responses
