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

from .steps import Step

__all__ = ["StepChain", "step_handler"]


def _config_dict(model_dir: Path) -> dict[str, Any]:
    """A model's config as the JSON Triton hands a Python model's ``initialize``."""
    from google.protobuf import json_format

    from .pbtxt import read_config

    return json_format.MessageToDict(read_config(model_dir), preserving_proto_field_name=True)


@dataclass(frozen=True)
class _Step:
    name: str
    handle: Callable[[Mapping[str, Any]], dict[str, np.ndarray]]
    inputs: tuple[str, ...]
    limits: Any  # RequestLimits
    input_map: Mapping[str, str]  # step input -> ensemble tensor
    output_map: Mapping[str, str]  # step output -> ensemble tensor
    close: Callable[[], None]


def step_handler(model_dir: Path, *, instance_kind: str = "CPU", device_id: str | int = 0,
                 requested: frozenset[str] | None = None) -> Step:
    """One generated step model built as its stub builds it (:func:`builder.triton.steps.open_step`);
    ``requested``: the outputs the ensemble reads from it (an input model computes only those tasks')."""
    from .steps import open_step, step_kind

    kind = step_kind(model_dir)
    version = model_dir / "1"
    if kind is None and (version / "model.onnx").is_file():  # ngc: served by Triton's onnxruntime backend
        kind = "onnx_runtime"
    if kind is None or kind == "fused":
        raise ValueError(f"step model '{model_dir.name}' ({kind or 'not one of ours'}) cannot run in a chain")
    return open_step(kind, _config_dict(model_dir), version, name=model_dir.name, instance_kind=instance_kind,
                     device_id=device_id, requested=requested)


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
            step = step_handler(repo / s["model_name"], instance_kind=instance_kind, device_id=device_id,
                                requested=frozenset(s.get("output_map", {})))
            steps.append(_Step(s["model_name"], step.handle, step.inputs, step.limits, dict(s.get("input_map", {})),
                               dict(s.get("output_map", {})), step.close))
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
