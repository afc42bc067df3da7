"""An ensemble's steps run in one process, from a generated repository: the served path without the server.

::

    chain = StepChain.from_repository("model_repository", "effnet_lite0")
    answer = chain.handle({"video_id": np.array([b"clip"], dtype=object),
                           "frame_selection": np.array([b"auto"], dtype=object)})

Each step is built from its own ``config.pbtxt`` exactly as its Triton stub builds it (the same handler, the same
:class:`~builder.triton.serving.RequestLimits`), and tensors pass between steps by the ensemble's own
``input_map``/``output_map``. Two uses: the in-process reference the served throughput is measured against
(``benchmarks/bench_served.py``), and a *fused* served model that runs a whole ensemble in one Python-backend stub
(``python_models/fused``), which spends no inter-process hop between the steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .repository import PYTHON_MODELS

__all__ = ["StepChain", "step_handler"]


def _config_dict(model_dir: Path) -> dict[str, Any]:
    """A model's config as the JSON Triton hands a Python model's ``initialize``."""
    from google.protobuf import json_format

    from .pbtxt import read_config

    return json_format.MessageToDict(read_config(model_dir), preserving_proto_field_name=True)


def _python_kind(model_dir: Path) -> str | None:
    """Which of our Python models a step is (its ``model.py`` is copied verbatim), or None."""
    source = model_dir / "1" / "model.py"
    if not source.is_file():
        return None
    text = source.read_bytes()
    for kind in PYTHON_MODELS.iterdir():
        if (kind / "model.py").is_file() and (kind / "model.py").read_bytes() == text:
            return kind.name
    return None


@dataclass(frozen=True)
class _Step:
    name: str
    handle: Callable[[Mapping[str, Any]], dict[str, np.ndarray]]
    inputs: tuple[str, ...]
    limits: Any  # RequestLimits
    input_map: Mapping[str, str]  # step input -> ensemble tensor
    output_map: Mapping[str, str]  # step output -> ensemble tensor
    close: Callable[[], None]


def step_handler(model_dir: Path, *, instance_kind: str = "CPU", device_id: str | int = 0
                 ) -> tuple[Callable[[Mapping[str, Any]], dict[str, np.ndarray]], tuple[str, ...], Any,
                            Callable[[], None]]:
    """``(handle, input names, limits, close)`` of one generated step model, built as its stub builds it."""
    from .serving import OnnxRunner, RequestLimits, model_parameters
    from .task_serving import input_handler, post_handler

    config = _config_dict(model_dir)
    limits = RequestLimits.from_model_config(config)
    version = model_dir / "1"
    kind = _python_kind(model_dir)
    if kind == "onnx_runtime" or (kind is None and (version / "model.onnx").is_file()):
        runner = OnnxRunner.from_model_config(config, version, instance_kind=instance_kind, device_id=device_id)
        return runner.handle, tuple(runner.inputs), limits, lambda: None
    params = model_parameters(config)
    if kind == "task_input":
        handler = input_handler(params, instance_kind=instance_kind, device_id=device_id)
        return handler.handle, tuple(t["name"] for t in config.get("input", [])), limits, handler.close
    if kind == "decode":
        from .decode import DecodeHandler, DecodeSettings

        decoder = DecodeHandler(DecodeSettings.from_parameters(params, instance_kind=instance_kind,
                                                               device_id=device_id))
        return decoder.handle, tuple(t["name"] for t in config.get("input", [])), limits, decoder.close
    if kind in ("collection_lookup", "collection_gather"):
        from .collection_prefix import GatherHandler, LookupHandler

        step = LookupHandler(params) if kind == "collection_lookup" else GatherHandler.from_parameters(params)
        return step.handle, step.inputs, limits, lambda: None
    if kind == "task_post":
        post = post_handler(params, version, instance_kind=instance_kind, device_id=device_id)
        return post.handle, tuple(post.inputs), limits, lambda: None
    raise ValueError(f"step model '{model_dir.name}' ({kind or 'not one of ours'}) cannot run in a chain")


class StepChain:
    """An ensemble's steps, in order, each built from its model directory; :meth:`handle` runs a request through
    them as the ensemble scheduler would, checking each step's limits as its stub does."""

    def __init__(self, name: str, steps: list[_Step], inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        self.name, self.steps, self.inputs, self.outputs = name, steps, inputs, outputs

    @classmethod
    def from_repository(cls, repo: str | Path, ensemble: str, *, instance_kind: str = "CPU",
                        device_id: str | int = 0) -> StepChain:
        """The steps of ``ensemble`` in repository ``repo``: an ensemble, or a model fused from one."""
        repo = Path(repo)
        if (repo / ensemble / "1" / "steps" / ensemble).is_dir():  # a fused model: its ensemble is written inside
            repo = repo / ensemble / "1" / "steps"
        config = _config_dict(repo / ensemble)
        if config.get("platform") != "ensemble":
            raise ValueError(f"model '{ensemble}' in {repo} is not an ensemble")
        steps = []
        for s in config["ensemble_scheduling"]["step"]:
            handle, inputs, limits, close = step_handler(repo / s["model_name"], instance_kind=instance_kind,
                                                         device_id=device_id)
            steps.append(_Step(s["model_name"], handle, inputs, limits, dict(s.get("input_map", {})),
                               dict(s.get("output_map", {})), close))
        return cls(ensemble, steps, tuple(t["name"] for t in config.get("input", [])),
                   tuple(t["name"] for t in config.get("output", [])))

    def handle(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        tensors: dict[str, Any] = dict(inputs)
        for step in self.steps:
            given = {k: tensors.get(v) for k, v in step.input_map.items()}
            given = {k: given.get(k) for k in step.inputs}
            step.limits.check_inputs(given)
            out = step.handle(given)
            step.limits.check_outputs(out)
            tensors.update({step.output_map[k]: v for k, v in out.items() if k in step.output_map})
        return {k: np.asarray(tensors[k]) for k in self.outputs}

    def close(self) -> None:
        for step in self.steps:
            step.close()
