"""RepositoryBuilder: register models, check the ensemble wiring, write a Triton model repository.

::

    repo = RepositoryBuilder("model_repository")
    repo.add_python("decode", PYTHON_MODELS / "decode" / "model.py", inputs, outputs,
                    parameters={"store_root": "/data/store"})
    repo.add_onnx("resnet50_layer3_tail", "tail.onnx", inputs, outputs, max_batch_size=8, dynamic_batching=True)
    repo.add_ensemble("cls_ensemble", [EnsembleStep("decode", {...}, {...}), ...], inputs, outputs)
    problems = repo.validate()          # [] when every name, dtype and dims line up
    repo.build(clean=True)              # <root>/<model>/config.pbtxt and <root>/<model>/1/...

Each model directory is staged aside and renamed into place, so a failed build never leaves half a model behind.
Generic: what this project serves is built on it by :mod:`builder.triton.decode` (the ``decode`` model) and
:func:`builder.triton.pipelines.build_repository` (the per-task ensembles).
"""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Literal, Mapping, Sequence

from ..tensor_spec import TensorSpec
from .pbtxt import to_pbtxt
from .specs import (
    DynamicBatching,
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    OnnxModelSpec,
    PythonModelSpec,
    QueuePolicy,
    TensorRTOptions,
    dims_compatible,
)

__all__ = [
    "ONNX_PYTHON_RUNNER",
    "PYTHON_MODELS",
    "TARGETS",
    "RepositoryBuilder",
    "RepositoryError",
]

PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
ONNX_PYTHON_RUNNER = PYTHON_MODELS / "onnx_runtime" / "model.py"
FUSED_MODEL = PYTHON_MODELS / "fused" / "model.py"
TARGETS = ("local", "ngc")  # local: the nvidia-pytriton server, CPU instances; ngc: the NGC image, GPU instances


class RepositoryError(ValueError):
    """The registered models do not form a valid repository (the message lists every problem)."""


AnySpec = ModelSpec | EnsembleSpec


def _full_dims(dims: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    """Dims including the batch dimension, so batching and non-batching models compare alike."""
    return (-1, *dims) if max_batch_size > 0 else tuple(dims)


def _batching(value: bool | DynamicBatching | None) -> DynamicBatching | None:
    if value is True:
        return DynamicBatching()
    if value is False or value is None:
        return None
    if isinstance(value, DynamicBatching):
        return value
    raise TypeError(f"dynamic_batching must be a bool or DynamicBatching, got {type(value).__name__}")


class RepositoryBuilder:
    """Collects model specs and writes them as a Triton model repository under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._models: dict[str, AnySpec] = {}

    def __repr__(self) -> str:
        return f"RepositoryBuilder({str(self.root)!r}, models={list(self._models)})"

    @property
    def models(self) -> dict[str, AnySpec]:
        return dict(self._models)

    def add(self, spec: AnySpec) -> AnySpec:
        """Register a ready-made spec; names are unique."""
        if not isinstance(spec, (ModelSpec, EnsembleSpec)):
            raise TypeError(f"expected a model spec, got {type(spec).__name__}")
        if spec.name in self._models:
            raise ValueError(f"a model named {spec.name!r} is already registered")
        self._models[spec.name] = spec
        return spec

    def add_python(
        self,
        name: str,
        source: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        parameters: Mapping[str, str] | None = None,
        max_batch_size: int = 0,
        instances: int = 1,
        kind: str = "KIND_CPU",
        gpus: Sequence[int] = (),
        dynamic_batching: bool | DynamicBatching | None = None,
        queue: QueuePolicy | None = None,
    ) -> PythonModelSpec:
        """A Python-backend model; ``source`` is a ``model.py`` or a directory holding one (copied verbatim)."""
        spec = PythonModelSpec(name=name, inputs=tuple(inputs), outputs=tuple(outputs), source=Path(source),
                               parameters=dict(parameters or {}), max_batch_size=max_batch_size,
                               instances=instances, kind=kind, gpus=tuple(gpus),
                               dynamic_batching=_batching(dynamic_batching), queue=queue)
        return self.add(spec)  # type: ignore[return-value]

    def add_onnx(
        self,
        name: str,
        onnx_path: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        max_batch_size: int = 0,
        instances: int = 1,
        kind: str = "KIND_CPU",
        gpus: Sequence[int] = (),
        dynamic_batching: bool | DynamicBatching | None = None,
        tensorrt: bool | TensorRTOptions = False,
        parameters: Mapping[str, str] | None = None,
        runtime: Literal["onnxruntime", "python"] = "onnxruntime",
        queue: QueuePolicy | None = None,
    ) -> AnySpec:
        """An ONNX model written as ``<name>/1/model.onnx``.

        ``runtime="onnxruntime"`` uses Triton's ``onnxruntime_onnx`` platform (NGC image; ``tensorrt`` adds the
        TensorRT execution accelerator). ``runtime="python"`` runs the same file with onnxruntime inside a
        Python-backend model instead, for servers built without the onnxruntime backend (the tritonserver in the
        nvidia-pytriton wheel used locally).
        """
        trt = TensorRTOptions() if tensorrt is True else (tensorrt or None)
        if runtime == "python":
            if trt is not None:
                raise ValueError(f"model {name!r}: the TensorRT accelerator needs runtime='onnxruntime'")
            spec: AnySpec = PythonModelSpec(
                name=name, inputs=tuple(inputs), outputs=tuple(outputs), source=ONNX_PYTHON_RUNNER,
                parameters={**dict(parameters or {}), "onnx_file": "model.onnx"}, files={"model.onnx": Path(onnx_path)},
                max_batch_size=max_batch_size, instances=instances, kind=kind, gpus=tuple(gpus),
                dynamic_batching=_batching(dynamic_batching), queue=queue)
        elif runtime == "onnxruntime":
            spec = OnnxModelSpec(name=name, inputs=tuple(inputs), outputs=tuple(outputs), onnx_path=Path(onnx_path),
                                 tensorrt=trt, parameters=dict(parameters or {}), max_batch_size=max_batch_size,
                                 instances=instances, kind=kind, gpus=tuple(gpus),
                                 dynamic_batching=_batching(dynamic_batching), queue=queue)
        else:
            raise ValueError(f"runtime must be 'onnxruntime' or 'python', got {runtime!r}")
        return self.add(spec)

    def add_ensemble(
        self,
        name: str,
        steps: Sequence[EnsembleStep],
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        max_batch_size: int = 0,
    ) -> EnsembleSpec:
        spec = EnsembleSpec(name=name, steps=tuple(steps), inputs=tuple(inputs), outputs=tuple(outputs),
                            max_batch_size=max_batch_size)
        return self.add(spec)  # type: ignore[return-value]

    def fuse(self, name: str, *, instances: int | None = None) -> PythonModelSpec:
        """Replace ensemble ``name`` by one Python-backend model that runs its steps in its own process
        (``python_models/fused``, :class:`builder.triton.chain.StepChain`): the same handlers and limits, without
        an inter-process hop between steps. The ensemble and its step models are written under
        ``<name>/1/steps/``; a step model no remaining ensemble uses leaves the repository. The fused model takes
        the first step's queue and ``max_*`` limits (its inputs are the ensemble's), and its instance count unless
        ``instances`` is given."""
        ens = self._models.get(name)
        if not isinstance(ens, EnsembleSpec):
            raise ValueError(f"no ensemble named {name!r} to fuse")
        errors = self._validate_ensemble(ens)
        if errors:
            raise RepositoryError(f"cannot fuse '{name}':\n  " + "\n  ".join(errors))
        steps = [self._models[s.model] for s in ens.steps]
        if any(isinstance(m, EnsembleSpec) or (isinstance(m, PythonModelSpec) and m.steps) for m in steps):
            raise ValueError(f"cannot fuse '{name}': a step is itself an ensemble or a fused model")
        first = steps[0]
        fused = PythonModelSpec(name=name, inputs=ens.inputs, outputs=ens.outputs, source=FUSED_MODEL,
                                parameters={k: v for k, v in first.parameters.items() if k.startswith("max_")},
                                instances=instances or first.instances, kind=first.kind, gpus=first.gpus,
                                queue=first.queue,
                                steps=(ens, *{m.name: m for m in steps}.values()))
        self._models[name] = fused
        used = {s.model for e in self._models.values() if isinstance(e, EnsembleSpec) for s in e.steps}
        for m in steps:
            if m.name not in used:
                self._models.pop(m.name, None)
        return fused

    # --- checking -----------------------------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every problem found, one readable line each; ``[]`` means :meth:`build` will write the repository."""
        errors: list[str] = []
        for spec in self._models.values():
            if isinstance(spec, PythonModelSpec):
                src = spec.source
                if src.is_dir():
                    if not (src / "model.py").is_file():
                        errors.append(f"model '{spec.name}': source directory {src} has no model.py")
                elif not src.is_file():
                    errors.append(f"model '{spec.name}': source {src} does not exist")
                elif src.suffix != ".py":
                    errors.append(f"model '{spec.name}': source {src} is not a .py file")
                for name, path in spec.files.items():
                    if not path.is_file():
                        errors.append(f"model '{spec.name}': file {path} (for 1/{name}) does not exist")
            elif isinstance(spec, OnnxModelSpec):
                if not spec.onnx_path.is_file():
                    errors.append(f"model '{spec.name}': ONNX file {spec.onnx_path} does not exist")
            elif isinstance(spec, EnsembleSpec):
                errors.extend(self._validate_ensemble(spec))
        return errors

    def _validate_ensemble(self, ens: EnsembleSpec) -> list[str]:
        errors: list[str] = []
        where = f"ensemble '{ens.name}'"
        # Tensor name -> (dtype, full dims, description of its producer)
        available: dict[str, tuple[str, tuple[int, ...], str]] = {
            t.name: (t.triton_dtype, _full_dims(t.shape, ens.max_batch_size), "an ensemble input") for t in ens.inputs}
        produced: dict[str, tuple[str, tuple[int, ...], str]] = {}
        models: list[tuple[int, EnsembleStep, AnySpec]] = []
        for i, step in enumerate(ens.steps):
            model = self._models.get(step.model)
            if model is None:
                errors.append(f"{where} step {i}: no model named '{step.model}' in this repository "
                              f"(registered: {', '.join(sorted(self._models)) or 'none'})")
                continue
            if model.name == ens.name:
                errors.append(f"{where} step {i}: an ensemble cannot contain itself")
                continue
            if ens.max_batch_size > model.max_batch_size:
                errors.append(f"{where} step {i}: max_batch_size {ens.max_batch_size} exceeds that of "
                              f"'{model.name}' ({model.max_batch_size})")
            models.append((i, step, model))
            for out_name, tensor in step.output_map.items():
                spec = next((t for t in model.outputs if t.name == out_name), None)
                if spec is None:
                    errors.append(f"{where} step {i} ('{model.name}'): output_map names '{out_name}', which is not "
                                  f"an output of '{model.name}' (outputs: {', '.join(t.name for t in model.outputs)})")
                    continue
                if tensor in available or tensor in produced:
                    prev = (available.get(tensor) or produced[tensor])[2]
                    errors.append(f"{where} step {i} ('{model.name}'): ensemble tensor '{tensor}' is already "
                                  f"{prev}; each tensor has exactly one producer")
                    continue
                produced[tensor] = (spec.triton_dtype, _full_dims(spec.shape, model.max_batch_size),
                                    f"output '{out_name}' of '{model.name}'")
        sources = {**available, **produced}
        for i, step, model in models:
            for in_name, tensor in step.input_map.items():
                spec = next((t for t in model.inputs if t.name == in_name), None)
                if spec is None:
                    errors.append(f"{where} step {i} ('{model.name}'): input_map names '{in_name}', which is not an "
                                  f"input of '{model.name}' (inputs: {', '.join(t.name for t in model.inputs)})")
                    continue
                src = sources.get(tensor)
                if src is None:
                    errors.append(f"{where} step {i} ('{model.name}'): input '{in_name}' reads ensemble tensor "
                                  f"'{tensor}', which is neither an ensemble input nor an output of any step")
                    continue
                dims = _full_dims(spec.shape, model.max_batch_size)
                if src[0] != spec.triton_dtype:
                    errors.append(f"{where} step {i} ('{model.name}'): input '{in_name}' is {spec.triton_dtype} but "
                                  f"tensor '{tensor}' ({src[2]}) is {src[0]}")
                elif not dims_compatible(src[1], dims):
                    errors.append(f"{where} step {i} ('{model.name}'): input '{in_name}' has dims {list(dims)} but "
                                  f"tensor '{tensor}' ({src[2]}) has dims {list(src[1])}")
            unmapped = [t.name for t in model.inputs if t.name not in step.input_map]
            if unmapped:
                errors.append(f"{where} step {i} ('{model.name}'): input(s) {', '.join(unmapped)} of "
                              f"'{model.name}' are not mapped")
        for out in ens.outputs:
            src = produced.get(out.name)
            if src is None:
                errors.append(f"{where}: output '{out.name}' is not produced by any step's output_map")
                continue
            dims = _full_dims(out.shape, ens.max_batch_size)
            if src[0] != out.triton_dtype:
                errors.append(f"{where}: output '{out.name}' is declared {out.triton_dtype} but {src[2]} is {src[0]}")
            elif not dims_compatible(src[1], dims):
                errors.append(f"{where}: output '{out.name}' is declared with dims {list(dims)} but {src[2]} has "
                              f"dims {list(src[1])}")
        return errors

    # --- writing ------------------------------------------------------------------------------------------------

    def build(self, *, clean: bool = False) -> Path:
        """Write every registered model; ``clean`` first removes other model directories under ``root`` (any
        directory holding a ``config.pbtxt``; other files, such as a README, are kept). Returns ``root``."""
        errors = self.validate()
        if errors:
            raise RepositoryError("invalid model repository:\n  " + "\n  ".join(errors))
        if not self._models:
            raise RepositoryError("no models registered")
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        if clean:
            for d in root.iterdir():
                if d.is_dir() and not d.is_symlink() and ((d / "config.pbtxt").is_file() or d.name.startswith(".tmp-")):
                    shutil.rmtree(d)
        for spec in self._models.values():
            stage = root / f".tmp-{spec.name}-{secrets.token_hex(4)}"
            try:
                self._write_model(spec, stage)
                target = root / spec.name
                if target.exists():
                    trash = root / f".tmp-{spec.name}-old-{secrets.token_hex(4)}"
                    target.rename(trash)
                    stage.rename(target)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    stage.rename(target)
            finally:
                if stage.exists():
                    shutil.rmtree(stage, ignore_errors=True)
        return root

    def _write_model(self, spec: AnySpec, d: Path) -> None:
        version = d / "1"
        version.mkdir(parents=True)
        if isinstance(spec, PythonModelSpec):
            if spec.source.is_dir():
                shutil.copytree(spec.source, version, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(spec.source, version / "model.py")
            for name, path in spec.files.items():
                shutil.copyfile(path, version / name)
            for step in spec.steps:
                self._write_model(step, version / "steps" / step.name)
        elif isinstance(spec, OnnxModelSpec):
            shutil.copyfile(spec.onnx_path, version / "model.onnx")
        (d / "config.pbtxt").write_text(to_pbtxt(spec), encoding="utf-8")
