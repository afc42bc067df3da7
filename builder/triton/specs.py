"""Typed descriptions of Triton models: tensors, Python-backend models, ONNX models and ensembles.

These are plain frozen dataclasses validated in ``__post_init__`` (PyTriton's ``Tensor``, Model Navigator's model
configs); :mod:`builder.triton.pbtxt` turns them into ``ModelConfig`` protobufs and
:class:`builder.triton.repository.RepositoryBuilder` writes them to disk.

Tensors are :class:`builder.tensor_spec.TensorSpec` (dtypes in any spelling; ``config.pbtxt`` gets the ``TYPE_*``
name). Their shape follows Triton's ``dims``: without batching (``max_batch_size == 0``) the full shape; with batching
without the leading batch dimension. ``-1`` is a variable-size dimension.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..tensor_spec import TensorSpec

__all__ = [
    "INSTANCE_KINDS",
    "DynamicBatching",
    "EnsembleSpec",
    "EnsembleStep",
    "ModelSpec",
    "OnnxModelSpec",
    "PythonModelSpec",
    "QueuePolicy",
    "TensorRTOptions",
    "dims_compatible",
]

INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
_MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PARAM_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


def _plain(spec: Any) -> dict[str, Any]:
    """A spec as JSON-ready builtins (paths as strings), tagged with its class name."""
    return {"type": type(spec).__name__, **json.loads(json.dumps(asdict(spec), default=str))}


def dims_compatible(a: Sequence[int], b: Sequence[int]) -> bool:
    """Same rank and every dimension equal or variable (``-1``) on either side."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def _check_model_name(name: str) -> None:
    if not isinstance(name, str) or not _MODEL_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid model name {name!r}: use 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher: requests of a model with ``max_batch_size > 0`` are merged while they wait."""

    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred_batch_sizes", tuple(int(b) for b in self.preferred_batch_sizes))
        if any(b < 1 for b in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes must be >= 1, got {list(self.preferred_batch_sizes)}")
        if self.max_queue_delay_microseconds < 0:
            raise ValueError("max_queue_delay_microseconds must be >= 0")


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ``default_queue_policy``: at most ``max_queue_size`` requests wait for the model (more are rejected
    at once), and one waiting longer than ``timeout_microseconds`` is rejected (``timeout_action: REJECT``). Written
    under ``dynamic_batching``, which Triton also accepts on a model without batching (``max_batch_size: 0``)."""

    max_queue_size: int
    timeout_microseconds: int

    def __post_init__(self) -> None:
        if self.max_queue_size < 1 or self.timeout_microseconds < 1:
            raise ValueError("a queue policy needs max_queue_size >= 1 and timeout_microseconds >= 1 (0 would mean "
                             "no bound)")


@dataclass(frozen=True)
class TensorRTOptions:
    """ONNX Runtime's TensorRT execution provider (GPU only): ``optimization { execution_accelerators {...} }``."""

    precision_mode: str = "FP16"
    max_workspace_size_bytes: int = 1 << 30
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision_mode not in ("FP32", "FP16", "INT8"):
            raise ValueError(f"TensorRT precision_mode must be FP32, FP16 or INT8, got {self.precision_mode!r}")
        if self.max_workspace_size_bytes < 1:
            raise ValueError("max_workspace_size_bytes must be >= 1")
        object.__setattr__(self, "extra", {str(k): str(v) for k, v in dict(self.extra).items()})

    def parameters(self) -> dict[str, str]:
        return {"precision_mode": self.precision_mode,
                "max_workspace_size_bytes": str(self.max_workspace_size_bytes), **self.extra}


def _tensors(specs: Sequence[TensorSpec], what: str, model: str) -> tuple[TensorSpec, ...]:
    out = tuple(specs)
    if not out:
        raise ValueError(f"model {model!r}: at least one {what} is required")
    for t in out:
        if not isinstance(t, TensorSpec):
            raise TypeError(f"model {model!r}: {what}s must be TensorSpec, got {type(t).__name__}")
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"model {model!r}: duplicate {what} name(s) {dup}")
    return out


@dataclass(frozen=True)
class ModelSpec:
    """What every served model has: a name, its tensors, batching, instances and string parameters."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    queue: QueuePolicy | None = None  # None: Triton's default, an unbounded queue without timeout

    def __post_init__(self) -> None:
        _check_model_name(self.name)
        object.__setattr__(self, "inputs", _tensors(self.inputs, "input", self.name))
        object.__setattr__(self, "outputs", _tensors(self.outputs, "output", self.name))
        clash = {t.name for t in self.inputs} & {t.name for t in self.outputs}
        if clash:
            raise ValueError(f"model {self.name!r}: tensor name(s) {sorted(clash)} used as input and output")
        if self.max_batch_size < 0:
            raise ValueError(f"model {self.name!r}: max_batch_size must be >= 0")
        if self.instances < 1:
            raise ValueError(f"model {self.name!r}: instances must be >= 1")
        if self.kind not in INSTANCE_KINDS:
            raise ValueError(f"model {self.name!r}: kind must be one of {INSTANCE_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "gpus", tuple(int(g) for g in self.gpus))
        if self.gpus and self.kind != "KIND_GPU":
            raise ValueError(f"model {self.name!r}: gpus only apply to KIND_GPU instances")
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0:
                raise ValueError(f"model {self.name!r}: dynamic batching needs max_batch_size > 0")
            too_big = [b for b in self.dynamic_batching.preferred_batch_sizes if b > self.max_batch_size]
            if too_big:
                raise ValueError(f"model {self.name!r}: preferred batch sizes {too_big} exceed "
                                 f"max_batch_size {self.max_batch_size}")
        params = {}
        for k, v in dict(self.parameters).items():
            if not isinstance(k, str) or not _PARAM_KEY_RE.fullmatch(k):
                raise ValueError(f"model {self.name!r}: invalid parameter key {k!r}")
            if not isinstance(v, str):
                raise TypeError(f"model {self.name!r}: parameter {k!r} must be a string, got {type(v).__name__}")
            params[k] = v
        object.__setattr__(self, "parameters", params)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class PythonModelSpec(ModelSpec):
    """A Python-backend model. ``source`` is a ``model.py`` file, or a directory holding ``model.py`` (and helpers),
    copied verbatim into ``<name>/1/``."""

    source: Path = Path()
    files: Mapping[str, Path] = field(default_factory=dict)  # extra files for 1/: name there -> file here
    # a fused model's ensemble and step models, written as a repository under 1/steps/ (RepositoryBuilder.fuse)
    steps: tuple[ModelSpec | EnsembleSpec, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "source", Path(self.source))
        if self.source == Path():
            raise ValueError(f"model {self.name!r}: source (model.py or a directory holding it) is required")
        files = {}
        for name, path in dict(self.files).items():
            if not isinstance(name, str) or "/" in name or name in ("", ".", "..", "model.py"):
                raise ValueError(f"model {self.name!r}: invalid extra file name {name!r}")
            files[name] = Path(path)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "steps", tuple(self.steps))


@dataclass(frozen=True)
class OnnxModelSpec(ModelSpec):
    """An ONNX model served by the ``onnxruntime_onnx`` platform; ``tensorrt`` adds the TensorRT execution
    accelerator (GPU instances only)."""

    onnx_path: Path = Path()
    tensorrt: TensorRTOptions | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "onnx_path", Path(self.onnx_path))
        if self.onnx_path == Path():
            raise ValueError(f"model {self.name!r}: onnx_path is required")
        if self.tensorrt is not None and self.kind != "KIND_GPU":
            raise ValueError(f"model {self.name!r}: the TensorRT accelerator needs KIND_GPU instances")


@dataclass(frozen=True)
class EnsembleStep:
    """One model of an ensemble. ``input_map``: the model's input name -> ensemble tensor name;
    ``output_map``: the model's output name -> ensemble tensor name (Triton's own orientation)."""

    model: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    model_version: int = -1

    def __post_init__(self) -> None:
        _check_model_name(self.model)
        object.__setattr__(self, "input_map", dict(self.input_map))
        object.__setattr__(self, "output_map", dict(self.output_map))
        if not self.output_map:
            raise ValueError(f"ensemble step {self.model!r}: output_map is empty")


@dataclass(frozen=True)
class EnsembleSpec:
    """An ensemble: ``steps`` wired by tensor names; ``inputs``/``outputs`` are the ensemble's own tensors."""

    name: str
    steps: tuple[EnsembleStep, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0

    def __post_init__(self) -> None:
        _check_model_name(self.name)
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"ensemble {self.name!r}: at least one step is required")
        object.__setattr__(self, "inputs", _tensors(self.inputs, "input", self.name))
        object.__setattr__(self, "outputs", _tensors(self.outputs, "output", self.name))
        if self.max_batch_size < 0:
            raise ValueError(f"ensemble {self.name!r}: max_batch_size must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)
